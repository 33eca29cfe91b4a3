package e2e

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gorilla/websocket"
)

// TestNodeClient runs examples/node (grpc-js loading the .proto files) against the
// real authsvc, plaintext with the front-end token, with mTLS and a certificate named
// as a front end, and with no front-end credential, and checks what it prints,
// including a session event caused while it watches (or the stream's refusal).
func TestNodeClient(t *testing.T) {
	node, dir := nodeExample(t)
	plain := func(t *testing.T) *system {
		auth := startAuth(t)
		cc := dial(t, auth.addr)
		return &system{auth: auth, authC: authv1.NewAuthServiceClient(cc), admin: authv1.NewAdminServiceClient(cc)}
	}
	t.Run("plaintext", func(t *testing.T) {
		s := plain(t)
		runNode(t, node, dir, s.auth.addr, s, true, []string{"GATEHOUSE_FRONTEND_TOKEN=" + frontToken})
	})
	t.Run("no front-end token", func(t *testing.T) {
		s := plain(t)
		runNode(t, node, dir, s.auth.addr, s, false, nil)
	})
	t.Run("mtls", func(t *testing.T) {
		f := tlsFiles(t, t.TempDir())
		auth := startAuth(t, "AUTHSVC_TLS_CERT="+f["server.pem"], "AUTHSVC_TLS_KEY="+f["server-key.pem"], "AUTHSVC_TLS_CLIENT_CA="+f["ca.pem"],
			"AUTHSVC_FRONTEND_CLIENT_NAMES="+edgeCertName)
		cc := mtlsConn(t, auth.addr, f)
		s := &system{authC: authv1.NewAuthServiceClient(cc), admin: authv1.NewAdminServiceClient(cc)}
		runNode(t, node, dir, auth.addr, s, true, []string{"GATEHOUSE_CA=" + f["ca.pem"], "GATEHOUSE_CERT=" + f["client.pem"], "GATEHOUSE_KEY=" + f["client-key.pem"]})
	})
}

// nodeExample returns the node binary and examples/node, ready to run.
func nodeExample(t *testing.T) (node, dir string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not installed: the polyglot example needs Node.js 20")
	}
	dir, _ = filepath.Abs(filepath.Join("..", "examples", "node"))
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "@grpc", "grpc-js")); err != nil {
		t.Fatal("examples/node has no node_modules: run `npm ci` there (make test does)")
	}
	return node, dir
}

// runNode runs client.js for a new user and checks each line it prints; front says
// whether it may follow the session event feed.
func runNode(t *testing.T, node, dir, addr string, s *system, front bool, extra []string) {
	t.Helper()
	u, pw := s.newUser(t)
	cmd := exec.Command(node, "client.js")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), append([]string{
		"GATEHOUSE_AUTH_ADDR=" + addr, "GATEHOUSE_USERNAME=" + u.GetUsername(),
		"GATEHOUSE_PASSWORD=" + pw, "GATEHOUSE_ADMIN_TOKEN=" + adminToken,
	}, extra...)...)
	stdout, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func(want *regexp.Regexp) []string {
		t.Helper()
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("node exited early; stderr:\n%s", stderr.String())
			}
			m := want.FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("node printed %q, want %s; stderr:\n%s", line, want, stderr.String())
			}
			return m
		case <-time.After(20 * time.Second):
			t.Fatalf("node printed nothing for 20s, want %s; stderr:\n%s", want, stderr.String())
		}
		return nil
	}
	id := itoa(u.GetId())
	next(regexp.MustCompile(`^health: SERVING$`))
	m := next(regexp.MustCompile(`^login: user ` + id + ` \(` + regexp.QuoteMeta(u.GetUsername()) + `\), session ([0-9a-f]{32})$`))
	session := m[1]
	next(regexp.MustCompile(`^validate: user ` + id + `, session ` + session + `, expires \d{4}-\d\d-\d\dT`))
	next(regexp.MustCompile(`^sessions: 1 live for user ` + id + `$`))
	next(regexp.MustCompile(`^unknown user: UNAUTHENTICATED INVALID_CREDENTIALS \(auth\.gatehouse\.dev\)$`))
	if !front {
		next(regexp.MustCompile(`^session events: UNAUTHENTICATED FRONTEND_TOKEN_REQUIRED \(set GATEHOUSE_FRONTEND_TOKEN\)$`))
		for range lines {
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("node exit: %v; stderr:\n%s", err, stderr.String())
		}
		return
	}
	next(regexp.MustCompile(`^watching session events$`))

	if _, err := s.admin.RevokeSession(adminCtx(t.Context()), &authv1.RevokeSessionRequest{SessionId: session}); err != nil {
		t.Fatal(err)
	}
	next(regexp.MustCompile(`^event: session ` + session + ` of user ` + id + ` ended: SESSION_END_REASON_REVOKED$`))

	_ = cmd.Process.Signal(syscall.SIGTERM)
	next(regexp.MustCompile(`^stopped$`))
	for range lines {
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("node exit: %v; stderr:\n%s", err, stderr.String())
	}
}

// TestNodePush runs examples/node/push.js against the built edge's API: the
// notification and the room message reach the user's open socket, and what it prints
// (presence, the listing, two refusals' reasons) matches.
func TestNodePush(t *testing.T) {
	node, dir := nodeExample(t)
	s := newSystem(t, nil, nil)
	u, pw := s.newUser(t)
	ws := mustOpen(t, s.edge.addr, s.login(t, u, pw))

	cmd := exec.CommandContext(t.Context(), node, "push.js")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GATEHOUSE_EDGE_API_ADDR="+s.edge.apiAddr(t), "GATEHOUSE_API_TOKEN="+apiToken,
		"GATEHOUSE_USER_ID="+itoa(u.GetId()), "GATEHOUSE_ROOM=lobby")
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("push.js: %v\n%s%s", err, out, stderr)
	}
	want := []*regexp.Regexp{
		regexp.MustCompile(`^sent: a notification to user ` + itoa(u.GetId()) + `$`),
		regexp.MustCompile(`^presence of lobby: 1 connections; users: ` + regexp.QuoteMeta(u.GetUsername()) + ` \(1\)$`),
		regexp.MustCompile(`^sent: a message to lobby$`),
		regexp.MustCompile(`^connection \S+\.\d+: /ws/myapp/` + itoa(u.GetId()) + `/ in \[lobby\] on \S+$`),
		regexp.MustCompile(`^bad group: INVALID_ARGUMENT INVALID_GROUP \(edge\.gatehouse\.dev\)$`),
		regexp.MustCompile(`^no token: UNAUTHENTICATED API_TOKEN_REQUIRED \(edge\.gatehouse\.dev\)$`),
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(want) {
		t.Fatalf("push.js printed %d lines, want %d:\n%s", len(lines), len(want), out)
	}
	for i, re := range want {
		if !re.MatchString(lines[i]) {
			t.Errorf("line %d: %q, want %s", i+1, lines[i], re)
		}
	}
	readText(t, ws, `{"type":"notification","text":"Your report is ready"}`)
	readText(t, ws, "hello, lobby")
}

// TestNodeConsumer: a Node.js service (examples/node/consumer.js, grpc-js from the
// .proto files) decides what sockets of a route do, against the built edge.
func TestNodeConsumer(t *testing.T) {
	s, cmd := nodeConsumer(t)
	commandsScenario(t, s, cmd)
}

// TestBrowserNodeConsumer: a browser on the edge's page for a remote route
// (/app/commands/lobby/ for /ws/commands/lobby/), whose socket the Node service
// serves: what the person types reaches the service, and what it answers shows.
func TestBrowserNodeConsumer(t *testing.T) {
	s, cmd := nodeConsumer(t)
	startService(t, cmd)
	for deadline := time.Now().Add(10 * time.Second); metric(t, s.edge.addr, `gatehouse_edge_consumer_up{route="/ws/commands/{room}/"}`) != 1; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the edge did not reach the service")
		}
	}
	base := "http://" + s.edge.addr
	alice, apw := s.newUser(t)
	b := newBrowser(t)
	b.signIn(t, base, alice.GetUsername(), apw)
	b.do(t, chromedp.Navigate(base+"/app/commands/lobby/"))
	b.waitFor(t, "the socket to open", `document.querySelector('#conn-state').dataset.state === 'open'`, 10*time.Second)
	if got := b.text(t, "#socket-path"); got != "/ws/commands/lobby/" {
		t.Fatalf("the page shows socket %q", got)
	}
	shows := func(what, text string) {
		t.Helper()
		b.waitFor(t, what, fmt.Sprintf(`[...document.querySelectorAll('#log li.in .text')].some(e => e.textContent === %q)`, text), 10*time.Second)
	}
	shows("the service's welcome", "welcome "+alice.GetUsername()+" to lobby: try /who, /join ROOM, or say something")
	b.do(t, chromedp.SendKeys(chromedp.CSS("#message"), "/who\r"))
	shows("the service's answer to /who", "in lobby: "+alice.GetUsername())
	b.do(t, chromedp.SendKeys(chromedp.CSS("#message"), "<b>hi</b>\r"))
	shows("the room's message", alice.GetUsername()+": <b>hi</b>")
	b.screenshot(t, "node-consumer")
	if errs := b.consoleErrors(); len(errs) > 0 {
		t.Fatalf("console errors: %v", errs)
	}
}

// nodeConsumer starts a system whose /ws/commands/{room}/ route goes to
// examples/node/consumer.js, and returns the not yet started command for it.
func nodeConsumer(t *testing.T) (*system, *exec.Cmd) {
	t.Helper()
	node, dir := nodeExample(t)
	// The edge picks its own API port (a port chosen here could be taken meanwhile).
	consumerAddr := freeAddr(t)
	s := newSystem(t, nil, []string{"EDGESVC_ROUTES_FILE=" + routesFor(t, consumerAddr, "")})
	apiAddr := s.edge.apiAddr(t)
	cmd := exec.Command(node, "consumer.js")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GATEHOUSE_CONSUMER_LISTEN="+consumerAddr, "GATEHOUSE_CONSUMER_TOKEN="+consumerToken,
		"GATEHOUSE_EDGE_API_ADDR="+apiAddr, "GATEHOUSE_API_TOKEN="+apiToken)
	return s, cmd
}

// TestGoConsumer: examples/go-commands, the same service in Go, against the built edge.
func TestGoConsumer(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "go-commands")
	build := exec.Command("go", "build", "-o", bin, "./examples/go-commands")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build examples/go-commands: %v\n%s", err, out)
	}
	dir := t.TempDir()
	apiTok, tok := filepath.Join(dir, "api-token"), filepath.Join(dir, "token")
	for path, v := range map[string]string{apiTok: apiToken, tok: consumerToken} {
		if err := os.WriteFile(path, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The edge picks its own API port (a port chosen here could be taken meanwhile).
	consumerAddr := freeAddr(t)
	s := newSystem(t, nil, []string{"EDGESVC_ROUTES_FILE=" + routesFor(t, consumerAddr, "")})
	apiAddr := s.edge.apiAddr(t)
	cmd := exec.Command(bin, "-listen", consumerAddr, "-api", apiAddr, "-api-token-file", apiTok, "-token-file", tok)
	commandsScenario(t, s, cmd)
}

// commandsScenario starts cmd, a commands service (examples/node/consumer.js or
// examples/go-commands) serving s's /ws/commands/{room}/ route, and drives it with
// real WebSocket clients.
func commandsScenario(t *testing.T, s *system, cmd *exec.Cmd) {
	t.Helper()
	printed := startService(t, cmd)
	alice, apw := s.newUser(t)
	bob, bpw := s.newUser(t)
	la := s.login(t, alice, apw)
	// The edge started first: its calls fail (503) until it has reached the service.
	var wa *websocket.Conn
	for deadline := time.Now().Add(10 * time.Second); wa == nil; time.Sleep(100 * time.Millisecond) {
		ws, code, reason := dialWSReason(t, commandsURL(s.edge.addr, "lobby"), cookieHeader(s.edge.addr, la.GetToken()))
		switch {
		case code == http.StatusSwitchingProtocols:
			wa = ws
		case code != http.StatusServiceUnavailable || reason != "CONSUMER_UNAVAILABLE" || time.Now().After(deadline):
			t.Fatalf("handshake: %d %s", code, reason)
		}
	}
	readText(t, wa, "welcome "+alice.GetUsername()+" to lobby: try /who, /join ROOM, or say something")
	// Sends reach a connection once Connect has accepted it: a newcomer does not
	// hear its own arrival; the others do.
	wb := openCommands(t, s, commandsURL(s.edge.addr, "lobby"), s.login(t, bob, bpw).GetToken())
	readText(t, wb, "welcome "+bob.GetUsername()+" to lobby: try /who, /join ROOM, or say something")
	readText(t, wa, bob.GetUsername()+" joined")

	say := func(ws *websocket.Conn, text string) {
		t.Helper()
		if err := ws.WriteMessage(websocket.TextMessage, []byte(text)); err != nil {
			t.Fatal(err)
		}
	}
	say(wb, "hi all")
	readText(t, wa, bob.GetUsername()+": hi all")
	readText(t, wb, bob.GetUsername()+": hi all")
	say(wa, "/who")
	readText(t, wa, "in lobby: "+alice.GetUsername()+", "+bob.GetUsername())
	say(wb, "/join garden")
	readText(t, wb, "you are in garden")
	readText(t, wb, bob.GetUsername()+" joined")
	say(wa, "/who")
	readText(t, wa, "in lobby: "+alice.GetUsername())
	say(wa, "only lobby")
	readText(t, wa, alice.GetUsername()+": only lobby")
	say(wb, "/who")
	readText(t, wb, "in garden: "+bob.GetUsername()) // nothing from the lobby came first

	// A room name the service refuses: its status, before any upgrade.
	_, code, reason := dialWSReason(t, commandsURL(s.edge.addr, "no%20such"), cookieHeader(s.edge.addr, s.login(t, bob, bpw).GetToken()))
	if code != http.StatusNotFound || reason != "NO_SUCH_ROOM" {
		t.Fatalf("a room the service refuses: %d %s", code, reason)
	}
	_ = wb.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
	for deadline := time.Now().Add(10 * time.Second); !printed("disconnect: "+bob.GetUsername()) && !printed("msg=disconnect user="+bob.GetUsername()); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the service was not told bob left")
		}
	}
}

// startService starts cmd, a consumer service, and waits until it prints that it
// listens; printed tells whether its output holds a string so far. Its output is
// logged if the test fails.
func startService(t *testing.T, cmd *exec.Cmd) (printed func(string) bool) {
	t.Helper()
	var out strings.Builder
	var mu sync.Mutex
	w := &lockedWriter{&mu, &out}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() {
			mu.Lock()
			t.Logf("--- %s ---\n%s", filepath.Base(cmd.Path), out.String())
			mu.Unlock()
		}
	})
	printed = func(want string) bool { mu.Lock(); defer mu.Unlock(); return strings.Contains(out.String(), want) }
	for deadline := time.Now().Add(20 * time.Second); !printed("consumer listening"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the consumer service did not start")
		}
	}
	return printed
}
