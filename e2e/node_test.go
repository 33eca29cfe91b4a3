package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
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
