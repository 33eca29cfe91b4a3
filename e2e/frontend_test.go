package e2e

import (
	"context"
	"debug/buildinfo"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	"google.golang.org/grpc/status"
)

// waitLog waits until p has logged a line containing want.
func waitLog(t testing.TB, p *proc, want string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(p.logs(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("%s never logged %q:\n%s", p.name, want, p.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestEdgeFrontEndCredential: an edge presents EDGESVC_AUTH_TOKEN. One with a wrong
// token gets no session event feed and no answers, so it is not ready and refuses
// handshakes with 503 (fail closed), never 401 (which would tell a signed-in user
// their session is gone); one with no token where authsvc wants one gets no feed,
// so it is not ready either. Each logs what to fix.
func TestEdgeFrontEndCredential(t *testing.T) {
	s := newSystem(t, nil, nil)
	u, pw := s.newUser(t)
	l := s.login(t, u, pw)
	for name, env := range map[string][]string{
		"wrong token": {"EDGESVC_AUTH_TOKEN=" + strings.Repeat("x", 40)},
		"no token":    {"EDGESVC_AUTH_TOKEN="},
	} {
		t.Run(name, func(t *testing.T) {
			edge := startEdge(t, s.auth.addr, env...)
			waitLog(t, edge, "authsvc refuses this edge the session event feed: EDGESVC_AUTH_TOKEN")
			resp, err := http.Get("http://" + edge.addr + "/readyz")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("/readyz = %d, want 503", resp.StatusCode)
			}
			if name == "wrong token" {
				_, code, reason := dialWSReason(t, wsURL(edge.addr, u.GetId()), cookieHeader(edge.addr, l.GetToken()))
				if code != http.StatusServiceUnavailable {
					t.Fatalf("handshake with a valid session = %d %s, want 503", code, reason)
				}
			}
		})
	}
	echo(t, mustOpen(t, s.edge.addr, l), "the edge with the right token")
}

// TestFrontEndClientNames: under mTLS, a client certificate whose DNS name is in
// AUTHSVC_FRONTEND_CLIENT_NAMES makes an edge a front end with no token; another
// certificate of the same CA makes a service that may sign users in but not name
// their address nor follow the feed.
func TestFrontEndClientNames(t *testing.T) {
	f := tlsFiles(t, t.TempDir())
	auth := startAuth(t, "AUTHSVC_FRONTEND_TOKEN=", "AUTHSVC_FRONTEND_CLIENT_NAMES=other.example, "+edgeCertName,
		"AUTHSVC_TLS_CERT="+f["server.pem"], "AUTHSVC_TLS_KEY="+f["server-key.pem"], "AUTHSVC_TLS_CLIENT_CA="+f["ca.pem"])
	edge := startEdge(t, auth.addr, "EDGESVC_AUTH_TOKEN=",
		"EDGESVC_AUTH_CA="+f["ca.pem"], "EDGESVC_AUTH_CERT="+f["client.pem"], "EDGESVC_AUTH_KEY="+f["client-key.pem"],
		"EDGESVC_TRUSTED_PROXIES=127.0.0.1")
	waitReady(t, edge.addr)

	svc := mtlsConnAs(t, auth.addr, f, "service")
	s := &system{authC: authv1.NewAuthServiceClient(svc), admin: authv1.NewAdminServiceClient(svc)}
	u, pw := s.newUser(t)
	l, err := s.authC.Login(t.Context(), &authv1.LoginRequest{Username: u.GetUsername(), Password: pw, ClientAddress: "203.0.113.50"})
	if err != nil {
		t.Fatal(err)
	}
	if got := l.GetSession().GetClientAddress(); got != "127.0.0.1" {
		t.Fatalf("a service without a front-end name recorded client address %q, want its own 127.0.0.1", got)
	}
	_, err = s.authC.SyncSessionEvents(t.Context(), &authv1.SyncSessionEventsRequest{Marker: "m"})
	if errorInfo(err).GetReason() != "FRONTEND_TOKEN_REQUIRED" || !strings.Contains(status.Convert(err).Message(), "AUTHSVC_FRONTEND_CLIENT_NAMES") {
		t.Fatalf("SyncSessionEvents from a service = %v, want FRONTEND_TOKEN_REQUIRED naming AUTHSVC_FRONTEND_CLIENT_NAMES", err)
	}

	// The edge, a front end by its certificate, names the browser's address.
	c := browser(t)
	base := "http://" + edge.addr
	req, _ := http.NewRequest(http.MethodPost, base+"/login", strings.NewReader(url.Values{"username": {u.GetUsername()}, "password": {pw}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", base)
	req.Header.Set("X-Forwarded-For", "198.51.100.77")
	resp, err := c.Do(req)
	if err != nil || resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign in through the edge: %v %v", resp, err)
	}
	resp.Body.Close()
	list, err := s.admin.ListSessions(adminCtx(t.Context()), &authv1.ListSessionsRequest{UserId: u.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for _, sess := range list.GetSessions() {
		addrs = append(addrs, sess.GetClientAddress())
	}
	sort.Strings(addrs)
	if strings.Join(addrs, " ") != "127.0.0.1 198.51.100.77" {
		t.Fatalf("sessions recorded addresses %v, want the service's own and the browser's", addrs)
	}
}

// TestFrontEndSettingsRefused: settings that cannot work are refused at start.
func TestFrontEndSettingsRefused(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	_ = os.WriteFile(empty, []byte("\n"), 0o600)
	for name, c := range map[string]struct {
		env  []string
		want string
	}{
		"short token":        {[]string{"AUTHSVC_FRONTEND_TOKEN=short"}, "at least 32 bytes"},
		"same as admin":      {[]string{"AUTHSVC_FRONTEND_TOKEN=" + adminToken}, "must differ from the admin token"},
		"empty file":         {[]string{"AUTHSVC_FRONTEND_TOKEN=", "AUTHSVC_FRONTEND_TOKEN_FILE=" + empty}, "is empty"},
		"file and variable":  {[]string{"AUTHSVC_FRONTEND_TOKEN_FILE=" + empty}, "not both"},
		"names without mTLS": {[]string{"AUTHSVC_FRONTEND_CLIENT_NAMES=edge.internal"}, "needs mTLS"},
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second) // one that starts serving is killed
		cmd := exec.CommandContext(ctx, filepath.Join(binDir, "authsvc"))
		cmd.Env = append(os.Environ(), authEnv("127.0.0.1:0", c.env...)...)
		out, err := cmd.CombinedOutput()
		cancel()
		if err == nil || !strings.Contains(string(out), c.want) || strings.Contains(string(out), frontToken) {
			t.Errorf("%s: %v %s; want a refusal saying %q, without the token", name, err, out, c.want)
		}
	}
}

// TestLoginFloodLeavesRoomForOthers: a flood of logins for new usernames from one
// address, with authsvc's real password hashing, does not make a login from another
// address wait behind it: past AUTHSVC_LOGIN_MAX_CONCURRENT_PER_ADDRESS the flood's
// logins are answered at once with LOGINS_IN_PROGRESS, and the other login succeeds.
func TestLoginFloodLeavesRoomForOthers(t *testing.T) {
	s := newSystem(t, []string{"AUTHSVC_ARGON2_MEMORY_KIB=19456", "AUTHSVC_ARGON2_TIME=2", "AUTHSVC_LOGIN_MAX_CONCURRENT_PER_ADDRESS=", "AUTHSVC_LOGIN_MAX_CONCURRENT="}, nil)
	u, pw := s.newUser(t)
	legit := func() (time.Duration, error) {
		start := time.Now()
		_, err := s.authC.Login(frontCtx(t.Context()), &authv1.LoginRequest{Username: u.GetUsername(), Password: pw, ClientAddress: "198.51.100.20"})
		return time.Since(start), err
	}
	quiet, err := legit()
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var busy, denied, other atomic.Int64
	for w := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				_, err := s.authC.Login(ctx, &authv1.LoginRequest{Username: fmt.Sprintf("flood-%d-%d", w, i), Password: "guess"})
				switch reason := errorInfo(err).GetReason(); {
				case reason == "LOGINS_IN_PROGRESS":
					busy.Add(1)
				case reason == "INVALID_CREDENTIALS":
					denied.Add(1)
				case ctx.Err() == nil:
					other.Add(1)
					t.Errorf("flood login: %v", err)
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond) // the flood is under way
	var loaded []time.Duration
	for range 5 {
		d, err := legit()
		if err != nil {
			t.Fatalf("a login from another address during the flood: %v", err)
		}
		loaded = append(loaded, d)
	}
	cancel()
	wg.Wait()
	if busy.Load() == 0 || denied.Load() == 0 {
		t.Fatalf("flood: %d answered LOGINS_IN_PROGRESS, %d checked; want both", busy.Load(), denied.Load())
	}
	sort.Slice(loaded, func(i, j int) bool { return loaded[i] < loaded[j] })
	t.Logf("flood of 40 callers: %d logins checked, %d answered LOGINS_IN_PROGRESS; another address's login: %s quiet, median %s during the flood (%.1fx)",
		denied.Load(), busy.Load(), quiet.Round(time.Millisecond), loaded[2].Round(time.Millisecond), float64(loaded[2])/float64(quiet))
}

// TestEventStreamsHoldNoBuffers: a WatchSessionEvents stream holds no event queue of
// its own once it has sent what was waiting. 300 streams that had each passed 2,000
// markers on once grew authsvc by about 120 MiB, which it kept (a preallocated
// 4,096-slot queue per stream whose slots, once written, stayed resident).
func TestEventStreamsHoldNoBuffers(t *testing.T) {
	if raceBuilt(t, "authsvc") {
		t.Skip("authsvc is built with -race, whose shadow memory makes its resident size no measure of what the streams keep")
	}
	auth := startAuth(t, "AUTHSVC_MAX_EVENT_STREAMS=0", "AUTHSVC_MAX_EVENT_STREAMS_PER_CALLER=0")
	c := authv1.NewAuthServiceClient(dial(t, auth.addr))
	rss := func() int64 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", auth.cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				return kb << 10
			}
		}
		t.Fatal("no VmRSS")
		return 0
	}
	ctx, cancel := context.WithCancel(frontCtx(t.Context()))
	defer cancel()
	// The first stream, once the feed is live, is the one this test reads.
	var first authv1.AuthService_WatchSessionEventsClient
	for deadline := time.Now().Add(10 * time.Second); first == nil; {
		st, err := c.WatchSessionEvents(ctx, &authv1.WatchSessionEventsRequest{IncludeMarkers: true})
		if err != nil {
			t.Fatal(err)
		}
		if md, _ := st.Header(); md != nil {
			first = st
		} else if time.Now().After(deadline) {
			t.Fatal("the event feed never went live")
		}
		time.Sleep(20 * time.Millisecond)
	}
	before := rss()
	for range 300 {
		st, err := c.WatchSessionEvents(ctx, &authv1.WatchSessionEventsRequest{IncludeMarkers: true})
		if err != nil {
			t.Fatal(err)
		}
		if md, err := st.Header(); md == nil || err != nil {
			t.Fatalf("stream not live: %v", err)
		}
	}
	const markers = 2000
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < markers; i += 8 {
				if _, err := c.SyncSessionEvents(frontCtx(t.Context()), &authv1.SyncSessionEventsRequest{Marker: fmt.Sprint("m", i)}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for seen := 0; seen < markers; seen++ { // every marker has passed through authsvc
		if _, err := first.Recv(); err != nil {
			t.Fatalf("after %d markers: %v", seen, err)
		}
	}
	grown := rss() - before
	t.Logf("301 event streams after %d markers each: authsvc grew by %.1f MiB", markers, float64(grown)/(1<<20))
	if grown > 20<<20 {
		t.Fatalf("the streams grew authsvc by %d MiB; want a small part of the 120 MiB their queues once kept", grown>>20)
	}
}

// raceBuilt reports whether the service binary under test was built with -race.
func raceBuilt(t *testing.T, name string) bool {
	info, err := buildinfo.ReadFile(filepath.Join(binDir, name))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range info.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}
