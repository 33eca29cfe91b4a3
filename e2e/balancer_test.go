package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	edgev1 "github.com/gatehouse/gatehouse/gen/gatehouse/edge/v1"
)

// startBalancer runs HAProxy, configured by scripts/haproxy.cfg.sh as make cluster
// runs it, in front of edges, until the test ends; it returns its address once it
// has seen every edge healthy.
func startBalancer(t *testing.T, edges ...string) string {
	t.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Fatal("no haproxy: install Debian's haproxy (apt-get install haproxy; .ci/run does)")
	}
	addr := freeAddr(t)
	out, err := exec.Command("../scripts/haproxy.cfg.sh", append([]string{addr}, edges...)...).Output()
	if err != nil {
		t.Fatalf("haproxy.cfg.sh: %v", err)
	}
	cfg := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(cfg, out, 0o644); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	cmd := exec.Command(bin, "-db", "-f", cfg)
	lw := &lockedWriter{new(sync.Mutex), &log}
	cmd.Stdout, cmd.Stderr = lw, lw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			lw.mu.Lock()
			t.Logf("--- haproxy log ---\n%s", log.String())
			lw.mu.Unlock()
		}
	})
	seen := map[string]bool{}
	for deadline := time.Now().Add(15 * time.Second); len(seen) < len(edges); {
		if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
			resp.Body.Close()
			if e := resp.Header.Get("Gatehouse-Edge"); e != "" && resp.StatusCode == http.StatusOK {
				seen[e] = true
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("HAProxy reached edges %v, want %d", seen, len(edges))
		}
		time.Sleep(50 * time.Millisecond)
	}
	return addr
}

// TestBrowserThroughBalancer: two browsers through HAProxy, their chat sockets on
// different edges, are in one room: each sees the other arrive and speak, and an
// operator's kick through the other edge's API reaches its page.
func TestBrowserThroughBalancer(t *testing.T) {
	c := newCluster(t, "EDGESVC_TRUSTED_PROXIES=127.0.0.1")
	a, b := c.sys[0], c.sys[1]
	base := "http://" + startBalancer(t, a.edge.addr, b.edge.addr)
	// The edges' metrics are for Prometheus, scraping each edge's metrics port, not for
	// the world: the public port has none, in any spelling (no balancer rule needed).
	for _, p := range []string{"/metrics", "/%6Detrics", "//metrics"} {
		if resp, err := http.Get(base + p); err != nil || resp.StatusCode != http.StatusNotFound {
			t.Fatalf("GET %s through the balancer: %v %v, want 404", p, resp, err)
		} else {
			resp.Body.Close()
		}
	}
	api := edgeAPI(t, a)
	ctx := apiCtx(t.Context())
	alice, apw := a.newUser(t)
	bob, bpw := a.newUser(t)
	room := fmt.Sprint("lb-", time.Now().UnixNano())

	// edgeOf says which edge holds user's chat socket.
	edgeOf := func(user int64) string {
		t.Helper()
		list, err := api.ListConnections(ctx, &edgev1.ListConnectionsRequest{Target: userTarget(user)})
		if err != nil {
			t.Fatal(err)
		}
		for _, conn := range list.GetConnections() {
			if conn.GetPath() == "/ws/chat/"+room+"/" {
				return conn.GetEdge()
			}
		}
		return ""
	}
	open := func(tb *tab, who string) {
		t.Helper()
		tb.do(t, chromedp.Navigate(base+"/chat/"+room+"/"))
		tb.waitFor(t, who+"'s chat socket", `document.querySelector('#conn-state').dataset.state === 'open'`, 10*time.Second)
	}

	ta := newBrowser(t)
	ta.signIn(t, base, alice.GetUsername(), apw)
	open(ta, "alice")
	ta.members(t, alice.GetUsername())
	tb := newBrowser(t)
	tb.signIn(t, base, bob.GetUsername(), bpw)
	open(tb, "bob")
	// The balancer sends each request to the next edge, and a page load makes an even
	// number of them: until bob's socket is on the other edge, another client's request
	// goes first and bob reloads.
	for try := 0; edgeOf(bob.GetId()) == edgeOf(alice.GetId()); try++ {
		if try == 4 {
			t.Fatalf("bob's socket is on %s with alice's after 4 loads: the balancer does not balance", edgeOf(bob.GetId()))
		}
		if resp, err := http.Get(base + "/healthz"); err == nil {
			resp.Body.Close()
		}
		open(tb, "bob")
	}
	t.Logf("alice's socket is on %s, bob's on %s", edgeOf(alice.GetId()), edgeOf(bob.GetId()))
	tb.members(t, alice.GetUsername(), bob.GetUsername())
	ta.members(t, alice.GetUsername(), bob.GetUsername())

	tb.say(t, "hello across edges", ta, tb)
	ta.say(t, "hello back", ta, tb)
	ta.screenshot(t, "chat-two-edges")

	// The edge API of the edge that does not hold bob's socket kicks him.
	other := edgeAPI(t, a)
	if edgeOf(bob.GetId()) == "edge-a" {
		other = edgeAPI(t, b)
	}
	if _, err := other.Disconnect(ctx, &edgev1.DisconnectRequest{Target: userTarget(bob.GetId()), Code: 4003, Reason: "kicked by an operator"}); err != nil {
		t.Fatal(err)
	}
	tb.waitFor(t, "bob's page to show the kick", `document.querySelector('#conn-detail').textContent.includes('4003') && document.querySelector('#conn-state').dataset.state === 'closed'`, 10*time.Second)
	ta.members(t, alice.GetUsername())
	for _, x := range []*tab{ta, tb} {
		if errs := x.consoleErrors(); len(errs) > 0 {
			t.Fatalf("console errors: %v", errs)
		}
	}
}
