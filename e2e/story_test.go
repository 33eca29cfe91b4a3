package e2e

import (
	"context"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/gatehouse/gatehouse/authsvc/pgtest"
)

// TestReadmeStory walks the README on a fresh database: an operator creates a user
// over gRPC, the user signs in with the page's form, opens the socket with the cookie
// and is answered "You said: hello"; the operator revokes the user's sessions, the
// event stream reports it and the socket closes with 4401.
func TestReadmeStory(t *testing.T) {
	db := pgtest.New(t)
	auth := start(t, "authsvc", append(authEnv("127.0.0.1:0"), "DATABASE_URL="+db)...)
	edge := startEdge(t, auth.addr)
	waitReady(t, edge.addr)
	cc := dial(t, auth.addr)
	admin, authC := authv1.NewAdminServiceClient(cc), authv1.NewAuthServiceClient(cc)

	h, err := healthpb.NewHealthClient(cc).Check(t.Context(), &healthpb.HealthCheckRequest{})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v, %v", h, err)
	}

	created, err := admin.CreateUser(adminCtx(t.Context()), &authv1.CreateUserRequest{Username: "alice", Password: "correct horse battery"})
	if err != nil {
		t.Fatal(err)
	}
	if created.GetUser().GetId() != 1 {
		t.Fatalf("first user has id %d, want 1 so /ws/myapp/1/ works as in the tutorial", created.GetUser().GetId())
	}

	base := "http://" + edge.addr
	c := browser(t)
	resp := postForm(t, c, base+"/login", url.Values{"username": {"alice"}, "password": {"correct horse battery"}}, base)
	if resp.StatusCode != 303 {
		t.Fatalf("sign in: %d %s", resp.StatusCode, readBody(resp))
	}
	var token string
	for _, ck := range c.Jar.Cookies(mustURL(base)) {
		if ck.Name == "sessionid" {
			token = ck.Value
		}
	}
	page := readBody(mustGet(t, c, base+"/"))
	if !strings.Contains(page, "alice") || !strings.Contains(page, `data-user-id="1"`) {
		t.Fatalf("signed-in page:\n%s", page)
	}

	ws, code := dialWS(t, "ws://"+edge.addr+"/ws/myapp/1/", cookieHeader(edge.addr, token))
	if ws == nil {
		t.Fatalf("handshake: %d", code)
	}
	echo(t, ws, "hello")

	stream, err := authC.WatchSessionEvents(frontCtx(t.Context()), &authv1.WatchSessionEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if md, _ := stream.Header(); md == nil {
		t.Fatal("event stream did not go live")
	}
	n, err := admin.RevokeUserSessions(adminCtx(t.Context()), &authv1.RevokeUserSessionsRequest{UserId: 1})
	if err != nil || n.GetRevokedCount() != 1 {
		t.Fatalf("RevokeUserSessions = %v, %v", n, err)
	}
	ev, err := stream.Recv()
	if err != nil || ev.GetUserId() != 1 || ev.GetReason() != authv1.SessionEndReason_SESSION_END_REASON_REVOKED {
		t.Fatalf("event = %v, %v", ev, err)
	}
	expectClose(t, ws, 4401, "revoked", closeWithin)
	if resp := mustGet(t, c, base+"/api/session"); resp.StatusCode != 401 {
		t.Fatalf("after revoke /api/session = %d", resp.StatusCode)
	}
}

// TestAuthsvcCommands: `authsvc migrate` and `authsvc demo-user` as `make run` uses them.
func TestAuthsvcCommands(t *testing.T) {
	db := pgtest.New(t)
	run := func(stdin string, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), filepath.Join(binDir, "authsvc"), args...)
		cmd.Env = append(authEnv("127.0.0.1:0"), "DATABASE_URL="+db)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("authsvc %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	run("", "migrate")
	run("", "migrate") // again: nothing to do
	if got := run("s3cret-password\n", "demo-user", "demo"); got != "created" {
		t.Fatalf("first demo-user = %q", got)
	}
	if got := run("other\n", "demo-user", "demo"); got != "exists" {
		t.Fatalf("second demo-user = %q", got)
	}
	auth := start(t, "authsvc", append(authEnv("127.0.0.1:0"), "DATABASE_URL="+db)...)
	c := authv1.NewAuthServiceClient(dial(t, auth.addr))
	l, err := c.Login(t.Context(), &authv1.LoginRequest{Username: "demo", Password: "s3cret-password"})
	if err != nil || l.GetUser().GetId() != 1 {
		t.Fatalf("demo login = %v, %v", l, err)
	}

	// Secrets from the environment never appear in usage output (-h succeeds).
	cmd := exec.CommandContext(t.Context(), filepath.Join(binDir, "authsvc"), "-h")
	cmd.Env = []string{"AUTHSVC_ADMIN_TOKEN=top-secret-admin-token-0123456789abcdef", "DATABASE_URL=postgres://u:db-password@host/db"}
	out, err := cmd.CombinedOutput()
	if err != nil || strings.Contains(string(out), "top-secret") || strings.Contains(string(out), "db-password") {
		t.Fatalf("authsvc -h: %v, printed:\n%s", err, out)
	}

	cmd = exec.CommandContext(t.Context(), filepath.Join(binDir, "authsvc"))
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "DATABASE_URL") {
		t.Fatalf("authsvc without DATABASE_URL: %v %s; want a failure naming DATABASE_URL", err, out)
	}
	cmd = exec.CommandContext(t.Context(), filepath.Join(binDir, "edgesvc"))
	cmd.Env = []string{"EDGESVC_READ_LIMIT=lots"}
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "EDGESVC_READ_LIMIT") {
		t.Fatalf("edgesvc with a bad setting: %v %s; want a failure naming it", err, out)
	}
}

// TestAdminTokenFile: the admin token can come from a file; setting both a file and
// the variable, an empty file, a token shorter than 32 bytes (guessable), or the token
// as a flag (visible in /proc/*/cmdline) is refused at start.
func TestAdminTokenFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "admin-token")
	const fileToken = "token-from-file-0123456789abcdefghij"
	if err := os.WriteFile(file, []byte(fileToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(dir, "short")
	_ = os.WriteFile(short, []byte("token-from-file\n"), 0o600)
	env := func(extra ...string) []string {
		return append([]string{"DATABASE_URL=" + dbURL, "AUTHSVC_LISTEN=127.0.0.1:0"}, extra...)
	}
	auth := start(t, "authsvc", env("AUTHSVC_ADMIN_TOKEN_FILE="+file)...)
	admin := authv1.NewAdminServiceClient(dial(t, auth.addr))
	ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+fileToken)
	if _, err := admin.ListUsers(ctx, &authv1.ListUsersRequest{}); err != nil {
		t.Fatalf("admin call with the file's token: %v", err)
	}

	empty := filepath.Join(dir, "empty")
	_ = os.WriteFile(empty, []byte("\n"), 0o600)
	for name, c := range map[string]struct {
		env  []string
		args []string
		want string
	}{
		"both":            {env("AUTHSVC_ADMIN_TOKEN_FILE="+file, "AUTHSVC_ADMIN_TOKEN="+fileToken), nil, "admin token"},
		"empty file":      {env("AUTHSVC_ADMIN_TOKEN_FILE=" + empty), nil, "admin token"},
		"no file":         {env("AUTHSVC_ADMIN_TOKEN_FILE=" + filepath.Join(dir, "missing")), nil, "admin token"},
		"short in a file": {env("AUTHSVC_ADMIN_TOKEN_FILE=" + short), nil, "at least 32 bytes"},
		"short variable":  {env("AUTHSVC_ADMIN_TOKEN=short-admin-token"), nil, "at least 32 bytes"},
		"as a flag":       {env(), []string{"-admin-token", fileToken}, "admin-token"},
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second) // one that starts serving is killed
		cmd := exec.CommandContext(ctx, filepath.Join(binDir, "authsvc"), c.args...)
		cmd.Env = c.env
		out, err := cmd.CombinedOutput()
		cancel()
		if err == nil || !strings.Contains(string(out), c.want) || strings.Contains(string(out), fileToken) {
			t.Errorf("%s: %v %s; want a refusal naming %q, without the token", name, err, out, c.want)
		}
	}
}

// TestSecretCheckCatchesTokens shows that the log check run after the tests
// (checkLogsForSecrets) would catch a leaked token or password.
func TestSecretCheckCatchesTokens(t *testing.T) {
	for _, line := range []string{
		`msg=login token=wISXoPAn1KUkyp2RJQtJ4CxJXrAUx59HGX5mTCTuHjk`,
		`msg="bad request" body="password=correct horse battery"`,
		`authorization: Bearer e2e-admin-token-0123456789abcdefghij`,
	} {
		p := &proc{name: "fake"}
		p.log.WriteString("ok line\n" + line + "\n")
		allProcs.Lock()
		saved := allProcs.list
		allProcs.list = []*proc{p}
		allProcs.Unlock()
		err := checkLogsForSecrets()
		allProcs.Lock()
		allProcs.list = saved
		allProcs.Unlock()
		if err == nil {
			t.Errorf("the check missed %q", line)
		}
	}
}
