package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	edgev1 "github.com/gatehouse/gatehouse/gen/gatehouse/edge/v1"
)

// The browser tests drive Debian's Chromium (headless) with chromedp, against the
// built binaries and a real PostgreSQL. chromedp keeps them in the Go harness that
// already starts the services, restarts the edge and revokes through gRPC; a second
// runner (Node + Playwright) would have to duplicate all of that.

const chromium = "/usr/bin/chromium"

// artifacts is where screenshots go (git-ignored).
var artifacts = filepath.Join("artifacts", "screenshots")

// tab is one browser tab with the console errors it has seen.
type tab struct {
	ctx    context.Context
	mu     sync.Mutex
	errors []string
}

// newBrowser starts a headless Chromium with a fresh profile and returns its first
// tab; more tabs of the same browser (sharing cookies) come from newTab.
func newBrowser(t *testing.T, extra ...chromedp.ExecAllocatorOption) *tab {
	t.Helper()
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("%s is missing: install Debian's chromium (apt-get install chromium; .ci/run does)", chromium)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1000, 800),
	}
	opts = append(opts, extra...)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	bctx, cancelB := chromedp.NewContext(actx)
	t.Cleanup(cancelB)
	return watchTab(t, bctx)
}

// newTab opens another tab in the same browser as b.
func (b *tab) newTab(t *testing.T) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx)
	t.Cleanup(cancel)
	return watchTab(t, ctx)
}

func watchTab(t *testing.T, ctx context.Context) *tab {
	t.Helper()
	tb := &tab{ctx: ctx}
	// Start the target, then collect console errors and uncaught exceptions (a CSP
	// violation is reported as a console error).
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	if err := chromedp.Listen(ctx, func(ev any) {
		var msg string
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			msg = "exception: " + ev.ExceptionDetails.Text
			if ev.ExceptionDetails.Exception != nil {
				msg += " " + ev.ExceptionDetails.Exception.Description
			}
		case *log.EventEntryAdded:
			if ev.Entry.Level == log.EntryLevelError {
				msg = "console: " + ev.Entry.Text + " " + ev.Entry.URL
			}
		}
		if msg != "" {
			tb.mu.Lock()
			tb.errors = append(tb.errors, msg)
			tb.mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		if _, err := chromedp.Call(ctx, log.Enable, cdp.Empty{}); err != nil {
			return err
		}
		_, err := chromedp.Call(ctx, runtime.Enable, cdp.Empty{})
		return err
	})); err != nil {
		t.Fatal(err)
	}
	return tb
}

// consoleErrors returns the console errors seen, leaving out expected ones that
// match allow.
func (b *tab) consoleErrors(allow ...string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
next:
	for _, e := range b.errors {
		for _, a := range allow {
			if strings.Contains(e, a) {
				continue next
			}
		}
		out = append(out, e)
	}
	return out
}

func (b *tab) do(t *testing.T, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("browser: %v\nconsole: %v", err, b.consoleErrors())
	}
}

func (b *tab) text(t *testing.T, sel string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("read %s: %v", sel, err)
	}
	return s
}

// waitFor polls a JavaScript predicate until it is true or d passes. It keeps polling
// across navigations (the page returns to the sign-in form by itself).
func (b *tab) waitFor(t *testing.T, what, js string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ctx, cancel := context.WithTimeout(b.ctx, time.Until(deadline)+time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => { try { return !!(`+js+`); } catch (e) { return false; } })()`))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			state, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
			t.Fatalf("waiting for %s: %v\npage text:\n%s\nconsole: %v", what, err, state, b.consoleErrors())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (b *tab) screenshot(t *testing.T, name string) {
	t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100)) // quality 100 means PNG
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(artifacts, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// signIn fills the form and presses Enter, then waits for the socket to open.
func (b *tab) signIn(t *testing.T, base, user, pw string) {
	t.Helper()
	b.do(t,
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS("#username")),
		chromedp.SendKeys(chromedp.CSS("#username"), user),
		chromedp.SendKeys(chromedp.CSS("#password"), pw+"\r"),
		chromedp.WaitVisible(chromedp.CSS("#app")),
	)
	b.waitFor(t, "the socket to open", `document.querySelector('#conn-state').dataset.state === 'open'`, 10*time.Second)
}

// send types text into the message box, presses Enter and waits for the echo.
func (b *tab) send(t *testing.T, text string) {
	t.Helper()
	b.do(t, chromedp.SendKeys(chromedp.CSS("#message"), text+"\r"))
	b.waitFor(t, "the echo of "+text, fmt.Sprintf(
		`[...document.querySelectorAll('#log li.in .text')].some(e => e.textContent === %q)`, "You said: "+text), 10*time.Second)
}

// handshakes reads the edge's total of handshakes answered with 101.
func handshakes(t *testing.T, edgeAddr string) int {
	t.Helper()
	resp, err := http.Get("http://" + metricsAddr(edgeAddr) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(resp)
	m := regexp.MustCompile(`gatehouse_edge_handshakes_total\{outcome="ok"\} (\d+)`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no ok handshake count in /metrics")
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func TestBrowser(t *testing.T) {
	s := newSystem(t, nil, nil)
	base := "http://" + s.edge.addr

	t.Run("sign in, send with Enter, see the echo", func(t *testing.T) {
		// A readable name: this view is the README's screenshot.
		created, err := s.admin.CreateUser(adminCtx(t.Context()), &authv1.CreateUserRequest{Username: "ada", Password: testPassword})
		if err != nil {
			t.Fatal(err)
		}
		u, pw := created.GetUser(), testPassword
		b := newBrowser(t)
		b.do(t, chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("#username")))
		b.screenshot(t, "signed-out")
		b.signIn(t, base, u.GetUsername(), pw)
		if who := b.text(t, ".who"); !strings.Contains(who, u.GetUsername()) {
			t.Fatalf("signed-in view says %q", who)
		}
		for _, m := range []string{"hello", "grüße aus Köln", "<b>not bold</b>"} {
			b.send(t, m)
		}
		b.screenshot(t, "signed-in")
		if errs := b.consoleErrors(); len(errs) > 0 {
			t.Fatalf("console errors (a CSP violation shows here): %v", errs)
		}
	})

	t.Run("wrong password shows an error and opens no socket", func(t *testing.T) {
		u, _ := s.newUser(t)
		b := newBrowser(t)
		b.do(t,
			chromedp.Navigate(base+"/"),
			chromedp.SendKeys(chromedp.CSS("#username"), u.GetUsername()),
			chromedp.SendKeys(chromedp.CSS("#password"), "wrong password\r"),
			chromedp.WaitVisible(chromedp.CSS("#login-error")),
		)
		if msg := b.text(t, "#login-error"); !strings.Contains(msg, "Invalid username or password") {
			t.Fatalf("error shown: %q", msg)
		}
		b.waitFor(t, "no app view", `document.querySelector('#app') === null`, time.Second)
		// The username stays, the cursor waits in the password field, and the page is
		// the sign-in page itself (redirect-after-post), so a reload posts nothing.
		b.waitFor(t, "the username kept and the password focused", fmt.Sprintf(
			`document.querySelector('#username').value === %q && document.activeElement && document.activeElement.id === 'password' && location.pathname === '/'`, u.GetUsername()), 5*time.Second)
		b.screenshot(t, "wrong-password")
		b.do(t, chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("#username")))
		b.waitFor(t, "a reload to show the plain form", `document.querySelector('#login-error') === null`, 5*time.Second)
	})

	t.Run("logout in one tab signs the other out, with no reconnects", func(t *testing.T) {
		u, pw := s.newUser(t)
		a := newBrowser(t)
		a.signIn(t, base, u.GetUsername(), pw)
		other := a.newTab(t)
		other.do(t, chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("#app")))
		other.waitFor(t, "the second tab's socket", `document.querySelector('#conn-state').dataset.state === 'open'`, 10*time.Second)

		a.do(t, chromedp.Click(chromedp.CSS("#logout button")), chromedp.WaitVisible(chromedp.CSS("#username")))
		if msg := a.text(t, "#notice"); msg != "You have signed out." {
			t.Fatalf("after signing out the page says %q", msg)
		}
		other.waitFor(t, "the other tab to show the session end",
			`[...document.querySelectorAll('#log li.sys')].some(e => e.textContent.includes('you signed out in another tab'))`, 5*time.Second)
		other.waitFor(t, "the other tab to return to the sign-in form",
			`document.querySelector('#username') !== null && document.querySelector('#signed-out-reason').textContent.includes('signed out in another tab')`, 10*time.Second)
		before := handshakes(t, s.edge.addr)
		time.Sleep(3 * time.Second) // several backoff periods
		if after := handshakes(t, s.edge.addr); after != before {
			t.Fatalf("%d handshakes after the session ended: the page reconnects", after-before)
		}
		if errs := other.consoleErrors(); len(errs) > 0 {
			t.Fatalf("console errors: %v", errs)
		}
	})

	t.Run("on a 360 px screen the state badge stays one line", func(t *testing.T) {
		u, pw := s.newUser(t)
		b := newBrowser(t)
		b.do(t, chromedp.EmulateViewport(360, 740))
		b.signIn(t, base, u.GetUsername(), pw)
		api := edgeAPI(t, s)
		if _, err := api.Disconnect(apiCtx(t.Context()), &edgev1.DisconnectRequest{Target: userTarget(u.GetId()), Code: 4003,
			Reason: "kicked by an operator for a reason long enough to wrap"}); err != nil {
			t.Fatal(err)
		}
		b.waitFor(t, "the closed state", `document.querySelector('#conn-state').dataset.state === 'closed' && document.querySelector('#conn-detail').textContent.includes('4003')`, 10*time.Second)
		hl, err := chromedp.Run(b.ctx, chromedp.Evaluate[[]float64](`(() => { const e = document.querySelector('#conn-state');
			return [e.getBoundingClientRect().height, parseFloat(getComputedStyle(e).lineHeight)]; })()`))
		if err != nil {
			t.Fatal(err)
		}
		if h, line := hl[0], hl[1]; h > 2*line {
			t.Fatalf("the badge is %.0f px tall (a line is %.0f px): it wraps", h, line)
		}
		b.screenshot(t, "narrow-closed")
	})

	t.Run("an admin revoke closes the tab's socket and signs it out", func(t *testing.T) {
		u, pw := s.newUser(t)
		b := newBrowser(t)
		b.signIn(t, base, u.GetUsername(), pw)
		b.send(t, "before the revoke")
		if _, err := s.admin.RevokeUserSessions(adminCtx(t.Context()), &authv1.RevokeUserSessionsRequest{UserId: u.GetId()}); err != nil {
			t.Fatal(err)
		}
		b.waitFor(t, "the closed state", `document.querySelector('#conn-detail').textContent.includes('4401')`, 5*time.Second)
		if state := b.text(t, "#conn-detail"); !strings.Contains(state, "revoked") {
			t.Fatalf("state after revoke: %q", state)
		}
		b.screenshot(t, "revoked-closed")
		b.waitFor(t, "the sign-in form with the reason",
			`document.querySelector('#signed-out-reason') && document.querySelector('#signed-out-reason').textContent.includes('administrator revoked')`, 10*time.Second)
		b.screenshot(t, "signed-out-by-revocation")
	})

	t.Run("a cross-origin page cannot open a socket with the user's cookie", func(t *testing.T) {
		u, pw := s.newUser(t)
		b := newBrowser(t)
		b.signIn(t, base, u.GetUsername(), pw)
		// Same host, another port: another origin, but the cookie (which ignores
		// ports) would be sent; only the edge's Origin check stops it.
		evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, `<!doctype html><title>evil</title><script>
window.result = 'pending';
const ws = new WebSocket('ws://%s/ws/myapp/%d/');
ws.onopen = () => { window.result = 'opened'; };
ws.onmessage = (e) => { window.result = 'message ' + e.data; };
ws.onclose = (e) => { if (window.result === 'pending') window.result = 'closed ' + e.code; };
</script>`, s.edge.addr, u.GetId())
		}))
		defer evil.Close()
		b.do(t, chromedp.Navigate(evil.URL))
		b.waitFor(t, "the evil socket to settle", `window.result !== 'pending'`, 5*time.Second)
		got, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`window.result`))
		if err != nil || got != "closed 1006" {
			t.Fatalf("cross-origin socket: %q %v, want a refused connect (closed 1006)", got, err)
		}
	})

	t.Run("phone width and keyboard only", func(t *testing.T) {
		u, pw := s.newUser(t)
		b := newBrowser(t)
		b.do(t,
			chromedp.EmulateViewport(360, 740),
			chromedp.Navigate(base+"/"),
			chromedp.WaitVisible(chromedp.CSS("#username")),
		)
		// The username field has focus on load; Tab moves to the password; Enter signs in.
		b.do(t,
			chromedp.KeyEvent(u.GetUsername()), chromedp.KeyEvent("\t"),
			chromedp.KeyEvent(pw), chromedp.KeyEvent("\r"),
			chromedp.WaitVisible(chromedp.CSS("#app")),
		)
		b.waitFor(t, "the socket to open", `document.querySelector('#conn-state').dataset.state === 'open'`, 10*time.Second)
		// Tab through the page until the message box has focus.
		for i := 0; i < 10; i++ {
			if ok, _ := chromedp.Run(b.ctx, chromedp.Evaluate[bool](`document.activeElement && document.activeElement.id === 'message'`)); ok {
				break
			}
			b.do(t, chromedp.KeyEvent("\t"))
		}
		b.do(t, chromedp.KeyEvent("typed by keyboard"), chromedp.KeyEvent("\r"))
		b.waitFor(t, "the keyboard echo",
			`[...document.querySelectorAll('#log li.in .text')].some(e => e.textContent === 'You said: typed by keyboard')`, 5*time.Second)
		wide, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth`))
		if err != nil || wide {
			t.Fatalf("the page scrolls sideways at 360px (%v)", err)
		}
		b.screenshot(t, "phone")
	})
}

// TestBrowserReconnectsAfterEdgeRestart: the page shows the drop (1001) and opens a
// new socket by itself once the edge is back.
func TestBrowserReconnectsAfterEdgeRestart(t *testing.T) {
	auth := startAuth(t)
	listen := freeAddr(t)
	edge := startEdge(t, auth.addr, "EDGESVC_LISTEN="+listen)
	waitReady(t, edge.addr)
	cc := dial(t, auth.addr)
	s := &system{authC: authv1.NewAuthServiceClient(cc), admin: authv1.NewAdminServiceClient(cc)}
	u, pw := s.newUser(t)
	base := "http://" + listen
	b := newBrowser(t)
	b.signIn(t, base, u.GetUsername(), pw)
	b.send(t, "before the restart")

	if err := edge.stop(t); err != nil {
		t.Fatalf("edge stop: %v", err)
	}
	b.waitFor(t, "the drop to show", `[...document.querySelectorAll('#log li.sys')].some(e => e.textContent.includes('1001'))`, 5*time.Second)
	b.waitFor(t, "a reconnecting state", `['reconnecting', 'connecting', 'closed'].includes(document.querySelector('#conn-state').dataset.state)`, 5*time.Second)

	edge2 := startEdge(t, auth.addr, "EDGESVC_LISTEN="+listen)
	waitReady(t, edge2.addr)
	b.waitFor(t, "the page to reconnect", `document.querySelector('#conn-state').dataset.state === 'open'`, 20*time.Second)
	b.send(t, "after the restart")
	if errs := b.consoleErrors("ERR_CONNECTION_REFUSED", "WebSocket connection to"); len(errs) > 0 {
		t.Fatalf("console errors: %v", errs)
	}
}

// TestBrowserOverWSS: the page works over HTTPS and WSS (the test's throwaway CA is
// not in Chromium's store, so certificate errors are ignored for this profile), with
// mTLS between the edge and authsvc.
func TestBrowserOverWSS(t *testing.T) {
	f := tlsFiles(t, t.TempDir())
	auth := startAuth(t, "AUTHSVC_TLS_CERT="+f["server.pem"], "AUTHSVC_TLS_KEY="+f["server-key.pem"], "AUTHSVC_TLS_CLIENT_CA="+f["ca.pem"])
	edge := startEdge(t, auth.addr,
		"EDGESVC_TLS_CERT="+f["server.pem"], "EDGESVC_TLS_KEY="+f["server-key.pem"],
		"EDGESVC_AUTH_CA="+f["ca.pem"], "EDGESVC_AUTH_CERT="+f["client.pem"], "EDGESVC_AUTH_KEY="+f["client-key.pem"])
	cc := mtlsConn(t, auth.addr, f)
	s := &system{authC: authv1.NewAuthServiceClient(cc), admin: authv1.NewAdminServiceClient(cc)}
	u, pw := s.newUser(t)
	b := newBrowser(t, chromedp.Flag("ignore-certificate-errors", true))
	b.signIn(t, "https://"+edge.addr, u.GetUsername(), pw)
	b.send(t, "over wss")
	secure, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](`location.protocol === 'https:'`))
	if err != nil || !secure {
		t.Fatalf("page not served over https (%v)", err)
	}
	if _, err := s.admin.RevokeUserSessions(adminCtx(t.Context()), &authv1.RevokeUserSessionsRequest{UserId: u.GetId()}); err != nil {
		t.Fatal(err)
	}
	b.waitFor(t, "the revocation over wss", `document.querySelector('#conn-detail').textContent.includes('4401')`, 5*time.Second)
	if errs := b.consoleErrors(); len(errs) > 0 {
		t.Fatalf("console errors: %v", errs)
	}
}

// TestBrowserChat: two users in one room in headless Chromium see each other in the
// members list and each other's messages; one leaving shows; a tab an operator kicks
// (EdgeService.Disconnect, 4003) says why and stays closed.
func TestBrowserChat(t *testing.T) {
	s := newSystem(t, nil, nil)
	base := "http://" + s.edge.addr
	api := edgeAPI(t, s)
	alice, apw := s.newUser(t)
	bob, bpw := s.newUser(t)
	room := fmt.Sprint("room-", time.Now().UnixNano())

	a := newBrowser(t)
	a.signIn(t, base, alice.GetUsername(), apw)
	if href := a.attr(t, "#lobby-link", "href"); !strings.HasSuffix(href, "/chat/lobby/") {
		t.Fatalf("the home page links to %q, want the lobby", href)
	}
	a.do(t, chromedp.Navigate(base+"/chat/"+room+"/"))
	a.waitFor(t, "alice's chat socket", `document.querySelector('#conn-state').dataset.state === 'open'`, 10*time.Second)
	a.members(t, alice.GetUsername())

	b := newBrowser(t)
	b.signIn(t, base, bob.GetUsername(), bpw)
	b.do(t, chromedp.Navigate(base+"/chat/"+room+"/"))
	b.waitFor(t, "bob's chat socket", `document.querySelector('#conn-state').dataset.state === 'open'`, 10*time.Second)
	b.members(t, alice.GetUsername(), bob.GetUsername())
	a.members(t, alice.GetUsername(), bob.GetUsername())
	a.waitFor(t, "bob's arrival", fmt.Sprintf(`[...document.querySelectorAll('#log li.sys .text')].some(e => e.textContent === %q)`, bob.GetUsername()+" joined."), 10*time.Second)

	b.say(t, "hello from bob", a, b)
	a.say(t, "<b>hi</b> bob", a, b)
	if n := a.count(t, "#log li b"); n != 0 {
		t.Fatal("a message was rendered as HTML")
	}
	a.screenshot(t, "chat")

	// An operator kicks bob: his page says why and does not reconnect.
	if _, err := api.Disconnect(apiCtx(t.Context()), &edgev1.DisconnectRequest{Target: userTarget(bob.GetId()), Code: 4003, Reason: "kicked by an operator"}); err != nil {
		t.Fatal(err)
	}
	b.waitFor(t, "bob's page to show the kick", `document.querySelector('#conn-detail').textContent.includes('4003') && document.querySelector('#conn-state').dataset.state === 'closed'`, 10*time.Second)
	a.waitFor(t, "bob's departure", fmt.Sprintf(`[...document.querySelectorAll('#log li.sys .text')].some(e => e.textContent === %q)`, bob.GetUsername()+" left."), 10*time.Second)
	a.members(t, alice.GetUsername())
	before := handshakes(t, s.edge.addr)
	time.Sleep(3 * time.Second) // several backoff periods
	if after := handshakes(t, s.edge.addr); after != before {
		t.Fatalf("%d handshakes after the kick: the page reconnects", after-before)
	}
	for _, tb := range []*tab{a, b} {
		if errs := tb.consoleErrors(); len(errs) > 0 {
			t.Fatalf("console errors: %v", errs)
		}
	}
}

// members waits until the chat page's members list is names, in order.
func (b *tab) members(t *testing.T, names ...string) {
	t.Helper()
	js := fmt.Sprintf(`JSON.stringify([...document.querySelectorAll('#members li')].map(e => e.textContent)) === %q`, jsonList(names))
	b.waitFor(t, "members "+strings.Join(names, ", "), js, 10*time.Second)
}

// say types text into the chat page's box and waits until every reader shows it.
func (b *tab) say(t *testing.T, text string, readers ...*tab) {
	t.Helper()
	b.do(t, chromedp.SendKeys(chromedp.CSS("#message"), text+"\r"))
	for _, r := range readers {
		r.waitFor(t, "the message "+text, fmt.Sprintf(`[...document.querySelectorAll('#log li .text')].some(e => e.textContent.endsWith(%q))`, ": "+text), 10*time.Second)
	}
}

func jsonList(names []string) string {
	b, _ := json.Marshal(names)
	return string(b)
}

func (b *tab) attr(t *testing.T, sel, name string) string {
	t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](fmt.Sprintf(`document.querySelector(%q).getAttribute(%q) || ""`, sel, name)))
	if err != nil {
		t.Fatalf("read %s's %s: %v", sel, name, err)
	}
	return v
}

func (b *tab) count(t *testing.T, sel string) int {
	t.Helper()
	n, err := chromedp.Run(b.ctx, chromedp.Evaluate[int](fmt.Sprintf(`document.querySelectorAll(%q).length`, sel)))
	if err != nil {
		t.Fatalf("count %s: %v", sel, err)
	}
	return n
}
