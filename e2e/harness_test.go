// Package e2e tests gatehouse from outside: the built authsvc and edgesvc binaries, a
// fresh PostgreSQL database, real gRPC clients and real WebSocket clients.
package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/gatehouse/gatehouse/authsvc/pgtest"
)

const (
	apiToken     = "e2e-edge-api-token-0123456789abcdefgh" // tokens: at least 32 bytes, as the services require
	adminToken   = "e2e-admin-token-0123456789abcdefghij"
	frontToken   = "e2e-front-end-token-0123456789abcdef"           // authsvc's AUTHSVC_FRONTEND_TOKEN, the edges' EDGESVC_AUTH_TOKEN
	layerKey     = "e2e-layer-key-0123456789abcdef0123456789abcdef" // the edges' EDGESVC_LAYER_KEY, with NATS
	testPassword = "correct horse battery"
)

var (
	binDir string // holds authsvc and edgesvc
	dbURL  string // the package's database
)

func TestMain(m *testing.M) {
	binDir = os.Getenv("GATEHOUSE_BIN")
	if binDir == "" {
		dir, err := os.MkdirTemp("", "gatehouse-e2e-bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer os.RemoveAll(dir)
		for _, name := range []string{"authsvc", "edgesvc"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), "./"+name)
			cmd.Dir = ".."
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			if err := cmd.Run(); err != nil {
				fmt.Fprintln(os.Stderr, "build", name, err)
				os.Exit(1)
			}
		}
		binDir = dir
	}
	pgtest.Main(m, &dbURL, checkLogsForSecrets)
}

// allProcs is every service process the tests started, for the secrets check.
var allProcs struct {
	sync.Mutex
	list []*proc
}

// secretRE matches a session token (43 URL-safe base64 characters standing alone).
var secretRE = regexp.MustCompile(`(^|[^A-Za-z0-9_-])[A-Za-z0-9_-]{43}($|[^A-Za-z0-9_-])`)

// checkLogsForSecrets fails the run if any service log line holds a session token,
// the admin token or a password the tests used.
func checkLogsForSecrets() error {
	allProcs.Lock()
	defer allProcs.Unlock()
	for _, p := range allProcs.list {
		for _, line := range strings.Split(p.logs(), "\n") {
			if secretRE.MatchString(line) || strings.Contains(line, adminToken) || strings.Contains(line, apiToken) || strings.Contains(line, frontToken) ||
				strings.Contains(line, testPassword) || strings.Contains(line, "a new password") {
				return fmt.Errorf("a secret reached the %s log: %s", p.name, line)
			}
		}
	}
	return nil
}

// proc is a running service binary whose log is kept for failure reports.
type proc struct {
	name string
	cmd  *exec.Cmd
	addr string
	mu   sync.Mutex
	log  strings.Builder
	done chan struct{}
	err  error
}

var listenRE = regexp.MustCompile(`listening.* addr=(\S+)`)

// metricsRE finds an edge's metrics address in its "edgesvc listening" line.
var metricsRE = regexp.MustCompile(`edgesvc listening.* addr=(\S+) .*metrics=(\S+)`)

// metricsAt maps the address of each edge the tests started (or found) to its
// metrics address (EDGESVC_METRICS_LISTEN): the public port serves no metrics.
var metricsAt sync.Map

// metricsAddr returns where the edge at addr serves its metrics: its metrics
// listener, or addr itself for a process that is not an edge (authsvc's).
func metricsAddr(addr string) string {
	if m, ok := metricsAt.Load(addr); ok {
		return m.(string)
	}
	return addr
}

// start runs bin (a name in binDir, or an absolute path) with env, waits for its
// "listening" log line and returns it. The process is stopped (SIGTERM) at the end of
// the test, and its log printed if the test failed.
func start(t testing.TB, bin string, env ...string) *proc {
	t.Helper()
	p := &proc{name: filepath.Base(bin), done: make(chan struct{})}
	allProcs.Lock()
	allProcs.list = append(allProcs.list, p)
	allProcs.Unlock()
	if !filepath.IsAbs(bin) {
		bin = filepath.Join(binDir, bin)
	}
	p.cmd = exec.Command(bin)
	p.cmd.Env = append(os.Environ(), env...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout = io.Discard
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log.WriteString(line + "\n")
			p.mu.Unlock()
			if m := metricsRE.FindStringSubmatch(line); m != nil && m[2] != "off" {
				metricsAt.Store(m[1], m[2])
			}
			if m := listenRE.FindStringSubmatch(line); m != nil {
				select {
				case addrc <- m[1]:
				default:
				}
			}
		}
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.stop(t)
		if strings.Contains(p.logs(), "DATA RACE") {
			t.Errorf("%s reported a data race", p.name)
		}
		if t.Failed() {
			t.Logf("--- %s log ---\n%s", p.name, p.logs())
		}
	})
	select {
	case p.addr = <-addrc:
	case <-p.done:
		t.Fatalf("%s exited before listening: %v\n%s", bin, p.err, p.logs())
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not start listening\n%s", bin, p.logs())
	}
	return p
}

func (p *proc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// stop sends SIGTERM and waits for the process to exit.
func (p *proc) stop(t testing.TB) error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("%s did not stop within 20s of SIGTERM", p.name)
		return errors.New("killed")
	}
}

// kill stops p with SIGKILL, as a crash would, and waits for it to exit.
func (p *proc) kill() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := p.cmd.Process.Kill(); err != nil {
		return err
	}
	<-p.done
	return nil
}

// system is one authsvc and one edgesvc on the package database.
type system struct {
	auth   *proc
	edge   *proc
	authCC *grpc.ClientConn
	authC  authv1.AuthServiceClient
	admin  authv1.AdminServiceClient
	db     *pgxpool.Pool
}

// authEnv is the environment every test authsvc gets: cheap password hashing (the
// format is the same) and failure limits high enough for the tests' own logins.
func authEnv(listen string, extra ...string) []string {
	return append([]string{
		"DATABASE_URL=" + dbURL,
		"AUTHSVC_LISTEN=" + listen,
		"AUTHSVC_ADMIN_TOKEN=" + adminToken,
		"AUTHSVC_FRONTEND_TOKEN=" + frontToken,
		"AUTHSVC_ARGON2_MEMORY_KIB=1024",
		"AUTHSVC_ARGON2_TIME=1",
		"AUTHSVC_LOGIN_MAX_FAILURES_PER_ADDRESS=100000",
		"AUTHSVC_LOGIN_MAX_CONCURRENT_PER_ADDRESS=0", // the tests sign in from one address, at times many at once
	}, extra...)
}

func edgeEnv(authAddr string, extra ...string) []string {
	return append([]string{
		"EDGESVC_LISTEN=127.0.0.1:0",
		"EDGESVC_API_LISTEN=127.0.0.1:0",
		"EDGESVC_METRICS_LISTEN=127.0.0.1:0",
		"EDGESVC_API_TOKEN=" + apiToken,
		"EDGESVC_AUTH_ADDR=" + authAddr,
		"EDGESVC_AUTH_TOKEN=" + frontToken,
	}, extra...)
}

var apiRE = regexp.MustCompile(`listening.* api=(\S+)`)

// apiAddr is the address of the edge API of an edge started by startEdge.
func (p *proc) apiAddr(t testing.TB) string {
	t.Helper()
	m := apiRE.FindStringSubmatch(p.logs())
	if m == nil {
		t.Fatalf("%s logged no api= address:\n%s", p.name, p.logs())
	}
	return m[1]
}

// unpaced are the settings of edges a test drives as fast as it can (load, or a
// client filling its buffers on purpose): the message rates are off; the bounds of
// bytes stay at their defaults.
var unpaced = []string{"EDGESVC_MAX_MESSAGES_PER_SECOND=0", "EDGESVC_MAX_MESSAGES_PER_SECOND_PER_USER=0"}

func startAuth(t testing.TB, extra ...string) *proc {
	return start(t, "authsvc", authEnv("127.0.0.1:0", extra...)...)
}

func startEdge(t testing.TB, authAddr string, extra ...string) *proc {
	return start(t, "edgesvc", edgeEnv(authAddr, extra...)...)
}

// newSystem starts authsvc and edgesvc and waits until the edge is ready (its event
// feed is live).
func newSystem(t testing.TB, authExtra, edgeExtra []string) *system {
	t.Helper()
	s := &system{}
	s.auth = startAuth(t, authExtra...)
	s.edge = startEdge(t, s.auth.addr, edgeExtra...)
	s.authCC = dial(t, s.auth.addr)
	s.authC = authv1.NewAuthServiceClient(s.authCC)
	s.admin = authv1.NewAdminServiceClient(s.authCC)
	pool, err := pgxpool.New(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s.db = pool
	waitReady(t, s.edge.addr)
	return s
}

func dial(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func waitReady(t testing.TB, edgeAddr string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + edgeAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("edge %s not ready: %v %v", edgeAddr, err, resp)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func adminCtx(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+adminToken)
}

// frontCtx presents the front-end token, as an edge does.
func frontCtx(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+frontToken)
}

var userSeq struct {
	sync.Mutex
	n int
}

// newUser creates a user with a unique name and returns it with its password.
func (s *system) newUser(t testing.TB) (*authv1.User, string) {
	t.Helper()
	userSeq.Lock()
	userSeq.n++
	name := fmt.Sprintf("user%d_%d", userSeq.n, time.Now().UnixNano()%100000)
	userSeq.Unlock()
	const pw = testPassword
	resp, err := s.admin.CreateUser(adminCtx(t.Context()), &authv1.CreateUserRequest{Username: name, Password: pw})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetUser(), pw
}

// login signs in over gRPC and returns the token.
func (s *system) login(t testing.TB, u *authv1.User, pw string) *authv1.LoginResponse {
	t.Helper()
	resp, err := s.authC.Login(t.Context(), &authv1.LoginRequest{Username: u.GetUsername(), Password: pw})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// wsURL is the socket URL of user id on the edge.
func wsURL(edgeAddr string, id int64) string {
	return fmt.Sprintf("ws://%s/ws/myapp/%d/", edgeAddr, id)
}

// dialWS opens a socket with the token as the sessionid cookie (and Origin set as a
// same-origin browser would). It returns the connection, or nil and the HTTP status.
func dialWS(t testing.TB, u string, hdr http.Header) (*websocket.Conn, int) {
	t.Helper()
	ws, code, _ := dialWSReason(t, u, hdr)
	return ws, code
}

// dialWSReason is dialWS that also returns the edge's Gatehouse-Reason header.
func dialWSReason(t testing.TB, u string, hdr http.Header) (*websocket.Conn, int, string) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	ws, resp, err := d.DialContext(t.Context(), u, hdr)
	if err != nil {
		if resp == nil {
			t.Fatalf("dial %s: %v", u, err)
		}
		return nil, resp.StatusCode, resp.Header.Get("Gatehouse-Reason")
	}
	t.Cleanup(func() { ws.Close() })
	return ws, resp.StatusCode, ""
}

func cookieHeader(edgeAddr, token string) http.Header {
	return http.Header{
		"Cookie": {"sessionid=" + token},
		"Origin": {"http://" + edgeAddr},
	}
}

// mustOpen opens a socket for the login's user with its cookie.
func mustOpen(t testing.TB, edgeAddr string, l *authv1.LoginResponse) *websocket.Conn {
	t.Helper()
	ws, code := dialWS(t, wsURL(edgeAddr, l.GetUser().GetId()), cookieHeader(edgeAddr, l.GetToken()))
	if ws == nil {
		t.Fatalf("handshake answered %d, want 101", code)
	}
	return ws
}

func echo(t testing.TB, ws *websocket.Conn, text string) {
	t.Helper()
	if err := ws.WriteMessage(websocket.TextMessage, []byte(text)); err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, got, err := ws.ReadMessage()
	if err != nil {
		t.Fatalf("read echo of %q: %v", text, err)
	}
	if want := "You said: " + text; string(got) != want {
		t.Fatalf("echo = %q, want %q", got, want)
	}
}

// expectClose reads until the socket closes and checks the close code and reason
// (reason "" matches any).
func expectClose(t testing.TB, ws *websocket.Conn, code int, reason string, within time.Duration) {
	t.Helper()
	err := readToEnd(ws, within)
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("socket ended with %v, want close %d %q", err, code, reason)
	}
	if ce.Code != code || (reason != "" && ce.Text != reason) {
		t.Fatalf("close = %d %q, want %d %q", ce.Code, ce.Text, code, reason)
	}
}

// readToEnd reads and drops messages until ws fails (a close frame is a
// *websocket.CloseError) or within passes, and returns the error.
func readToEnd(ws *websocket.Conn, within time.Duration) error {
	_ = ws.SetReadDeadline(time.Now().Add(within))
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			return err
		}
	}
}

// browser is an HTTP client with a cookie jar that does not follow redirects.
func browser(t testing.TB) *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, Timeout: 15 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func postForm(t testing.TB, c *http.Client, u string, form url.Values, origin string) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(strings.NewReader(string(body)))
	return resp
}

func readBody(resp *http.Response) string {
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func openPool(t testing.TB) *pgxpool.Pool {
	pool, err := pgxpool.New(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

func mustGet(t testing.TB, c *http.Client, u string) *http.Response {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// errorInfo returns the google.rpc.ErrorInfo detail of a gRPC error, or nil.
func errorInfo(err error) *errdetails.ErrorInfo {
	for _, d := range status.Convert(err).Details() {
		if i, ok := d.(*errdetails.ErrorInfo); ok {
			return i
		}
	}
	return nil
}
