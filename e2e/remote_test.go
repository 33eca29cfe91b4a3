package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/authsvc/pgtest"
	appv1 "github.com/gatehouse/gatehouse/gen/gatehouse/app/v1"
	edgev1 "github.com/gatehouse/gatehouse/gen/gatehouse/edge/v1"
	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Remote consumers: routes whose connections a gRPC service runs
// (gatehouse.app.v1.ConsumerService), here a Go one on loopback against the built edge.

const consumerToken = "e2e-consumer-token-0123456789abcdefgh"

// commands is a small consumer service: a room per path, "/who", broadcast.
type commands struct {
	appv1.UnimplementedConsumerServiceServer
	mu          sync.Mutex
	connects    []*appv1.Connection
	received    map[string][]string // by connection id
	disconnects map[string][]int32  // by connection id
	slow        chan struct{}       // "slow" waits on it
}

func newCommands() *commands {
	return &commands{received: map[string][]string{}, disconnects: map[string][]int32{}, slow: make(chan struct{})}
}

func authorized(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("authorization"); len(v) != 1 || v[0] != "Bearer "+consumerToken {
		return status.Error(codes.Unauthenticated, "no token")
	}
	return nil
}

func text(t string) *appv1.Action {
	return &appv1.Action{Action: &appv1.Action_Reply{Reply: &appv1.Reply{Payload: &appv1.Reply_Text{Text: t}}}}
}

func (s *commands) Connect(ctx context.Context, req *appv1.ConnectRequest) (*appv1.ConnectResponse, error) {
	if err := authorized(ctx); err != nil {
		return nil, err
	}
	c := req.GetConnection()
	s.mu.Lock()
	s.connects = append(s.connects, c)
	s.mu.Unlock()
	room := c.GetPathParams()["room"]
	if c.GetQuery()["refuse"] != "" {
		return &appv1.ConnectResponse{Refusal: &appv1.Refusal{Status: 403, Reason: "ROOM_CLOSED", Message: "room " + room + " is closed"}}, nil
	}
	if c.GetQuery()["kick"] != "" {
		return &appv1.ConnectResponse{Actions: []*appv1.Action{text("not today"), {Action: &appv1.Action_Close{Close: &appv1.Close{Code: 4003, Reason: "not today"}}}}}, nil
	}
	return &appv1.ConnectResponse{Actions: []*appv1.Action{
		{Action: &appv1.Action_Join{Join: &appv1.Join{Group: "room." + room}}},
		text(fmt.Sprintf("welcome %s to %s", c.GetUser().GetUsername(), room)),
	}}, nil
}

func (s *commands) Receive(ctx context.Context, req *appv1.ReceiveRequest) (*appv1.ReceiveResponse, error) {
	if err := authorized(ctx); err != nil {
		return nil, err
	}
	c := req.GetConnection()
	msg := req.GetText()
	s.mu.Lock()
	s.received[c.GetId()] = append(s.received[c.GetId()], msg)
	s.mu.Unlock()
	switch {
	case msg == "boom":
		return nil, status.Error(codes.Internal, "boom")
	case msg == "slow":
		select {
		case <-s.slow:
		case <-ctx.Done():
		}
		return &appv1.ReceiveResponse{}, nil
	case msg == "bad action":
		return &appv1.ReceiveResponse{Actions: []*appv1.Action{{Action: &appv1.Action_Join{Join: &appv1.Join{Group: "no spaces"}}}}}, nil
	case msg == "bye":
		return &appv1.ReceiveResponse{Actions: []*appv1.Action{{Action: &appv1.Action_Close{Close: &appv1.Close{Code: 4001, Reason: "see you"}}}}}, nil
	case msg == "signed out":
		return &appv1.ReceiveResponse{Actions: []*appv1.Action{{Action: &appv1.Action_Close{Close: &appv1.Close{Code: 4401, Reason: "revoked"}}}}}, nil
	case msg == "huge":
		return &appv1.ReceiveResponse{Actions: []*appv1.Action{text(strings.Repeat("h", 1<<20+4<<10+1))}}, nil // the read limit and edge.WrapRoom
	case req.GetBinary() != nil:
		return &appv1.ReceiveResponse{Actions: []*appv1.Action{{Action: &appv1.Action_Reply{Reply: &appv1.Reply{Payload: &appv1.Reply_Binary{Binary: append([]byte("got "), req.GetBinary()...)}}}}}}, nil
	case strings.HasPrefix(msg, "echo "):
		return &appv1.ReceiveResponse{Actions: []*appv1.Action{text(msg)}}, nil
	}
	room := c.GetPathParams()["room"]
	return &appv1.ReceiveResponse{Actions: []*appv1.Action{{Action: &appv1.Action_Send{Send: &appv1.Send{
		Target:  &edgev1.Target{Target: &edgev1.Target_Group{Group: "room." + room}},
		Payload: &appv1.Send_Text{Text: c.GetUser().GetUsername() + ": " + msg},
	}}}}}, nil
}

func (s *commands) Disconnect(ctx context.Context, req *appv1.DisconnectRequest) (*appv1.DisconnectResponse, error) {
	if err := authorized(ctx); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.disconnects[req.GetConnection().GetId()] = append(s.disconnects[req.GetConnection().GetId()], req.GetCode())
	return &appv1.DisconnectResponse{}, nil
}

// serveConsumer serves svc on addr (a free loopback address if empty) until stop.
func serveConsumer(t *testing.T, svc appv1.ConsumerServiceServer, addr string, opts ...grpc.ServerOption) (string, func()) {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(opts...)
	appv1.RegisterConsumerServiceServer(g, svc)
	go func() { _ = g.Serve(lis) }()
	var once sync.Once
	stop := func() { once.Do(g.Stop) }
	t.Cleanup(stop)
	return lis.Addr().String(), stop
}

// routesFor writes a routes file sending /ws/commands/{room}/ to addr.
func routesFor(t *testing.T, addr, extra string) string {
	t.Helper()
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte(consumerToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "routes.json")
	body := fmt.Sprintf(`{"routes": [{"path": "/ws/commands/{room}/", "consumer": %q, "token_file": %q, "timeout": "500ms"%s}]}`, addr, tok, extra)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func commandsURL(edgeAddr, room string) string {
	return fmt.Sprintf("ws://%s/ws/commands/%s/", edgeAddr, room)
}

func openCommands(t *testing.T, s *system, url, token string) *websocket.Conn {
	t.Helper()
	ws, code, reason := dialWSReason(t, url, cookieHeader(s.edge.addr, token))
	if code != http.StatusSwitchingProtocols {
		t.Fatalf("handshake %s: %d %s", url, code, reason)
	}
	return ws
}

// streamingCommands is commands with ConsumerService.Stream: each call on the
// stream answered by the unary method, concurrently, as a service would.
type streamingCommands struct {
	*commands
	streams *atomic.Int32
}

// canceled counts the calls the edge canceled on a stream.
var canceled atomic.Int32

func (s streamingCommands) Stream(ss appv1.ConsumerService_StreamServer) error {
	s.streams.Add(1)
	var mu sync.Mutex
	calls := map[uint64]context.CancelFunc{} // each call's context, ended by a cancel
	for {
		req, err := ss.Recv()
		if err != nil {
			return nil
		}
		if id, ok := req.GetCall().(*appv1.StreamRequest_Cancel); ok {
			mu.Lock()
			if cancel := calls[id.Cancel]; cancel != nil {
				cancel()
				canceled.Add(1)
			}
			mu.Unlock()
			continue
		}
		ctx, cancel := context.WithCancel(ss.Context())
		mu.Lock()
		calls[req.GetId()] = cancel
		mu.Unlock()
		go func() {
			defer cancel()
			resp := &appv1.StreamResponse{Id: req.GetId()}
			var err error
			switch c := req.GetCall().(type) {
			case *appv1.StreamRequest_Connect:
				var r *appv1.ConnectResponse
				r, err = s.Connect(ctx, c.Connect)
				resp.Result = &appv1.StreamResponse_Connect{Connect: r}
			case *appv1.StreamRequest_Receive:
				var r *appv1.ReceiveResponse
				r, err = s.Receive(ctx, c.Receive)
				resp.Result = &appv1.StreamResponse_Receive{Receive: r}
			case *appv1.StreamRequest_Disconnect:
				var r *appv1.DisconnectResponse
				r, err = s.Disconnect(ctx, c.Disconnect)
				resp.Result = &appv1.StreamResponse_Disconnect{Disconnect: r}
			}
			if err != nil {
				st := status.Convert(err)
				resp.Result = &appv1.StreamResponse_Error{Error: &appv1.CallError{Code: int32(st.Code()), Message: st.Message()}}
			}
			mu.Lock()
			defer mu.Unlock()
			delete(calls, req.GetId())
			_ = ss.Send(resp)
		}()
	}
}

// TestRemoteConsumer: a remote service decides what sockets of its route do, with
// unary calls (a service without Stream) and over Stream.
// TestRemoteConsumerHeldToTheRules: a consumer service is held to what a client and
// the edge API are: a reply over the read limit, or a 4401 close (which only the
// session authority sends), closes the socket 1011 instead, and the edge logs it.
func TestRemoteConsumerHeldToTheRules(t *testing.T) {
	svc := newCommands()
	addr, _ := serveConsumer(t, svc, "")
	s := newSystem(t, nil, []string{"EDGESVC_ROUTES_FILE=" + routesFor(t, addr, "")})
	u, pw := s.newUser(t)
	l := s.login(t, u, pw)
	for msg, log := range map[string]string{"huge": "over the edge's read limit", "signed out": "closed a connection with 4401"} {
		ws := openCommands(t, s, commandsURL(s.edge.addr, "lobby"), l.GetToken())
		if err := ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		expectClose(t, ws, websocket.CloseInternalServerErr, "", 10*time.Second)
		for deadline := time.Now().Add(5 * time.Second); !strings.Contains(s.edge.logs(), log); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) { // the log is read as the edge writes it
				t.Fatalf("%q: the edge did not log %q:\n%s", msg, log, s.edge.logs())
			}
		}
	}
}

func TestRemoteConsumer(t *testing.T) {
	t.Run("unary", func(t *testing.T) {
		svc := newCommands()
		addr, _ := serveConsumer(t, svc, "")
		remoteConsumer(t, svc, addr)
	})
	t.Run("stream", func(t *testing.T) {
		svc := newCommands()
		var streams atomic.Int32
		addr, _ := serveConsumer(t, streamingCommands{svc, &streams}, "")
		before := canceled.Load()
		remoteConsumer(t, svc, addr)
		if streams.Load() == 0 {
			t.Fatal("the edge never opened Stream")
		}
		if canceled.Load() == before {
			t.Fatal("the call past its deadline was not canceled on the stream")
		}
	})
}

func remoteConsumer(t *testing.T, svc *commands, addr string) {
	s := newSystem(t, nil, []string{"EDGESVC_ROUTES_FILE=" + routesFor(t, addr, "")})
	alice, apw := s.newUser(t)
	bob, bpw := s.newUser(t)
	la, lb := s.login(t, alice, apw), s.login(t, bob, bpw)

	wa := openCommands(t, s, commandsURL(s.edge.addr, "lobby")+"?lang=fr", la.GetToken())
	readText(t, wa, "welcome "+alice.GetUsername()+" to lobby")
	svc.mu.Lock()
	c := svc.connects[0]
	svc.mu.Unlock()
	if c.GetUser().GetId() != alice.GetId() || c.GetUser().GetUsername() != alice.GetUsername() || c.GetSessionId() != la.GetSession().GetId() ||
		c.GetPath() != "/ws/commands/lobby/" || c.GetRoute() != "/ws/commands/{room}/" || c.GetPathParams()["room"] != "lobby" ||
		c.GetQuery()["lang"] != "fr" || c.GetHeaders()["origin"] == "" || c.GetId() == "" {
		t.Fatalf("the service was told %v", c)
	}
	wb := openCommands(t, s, commandsURL(s.edge.addr, "lobby"), lb.GetToken())
	readText(t, wb, "welcome "+bob.GetUsername()+" to lobby")

	// A message goes to the service, whose Send reaches the room.
	if err := wb.WriteMessage(websocket.TextMessage, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	readText(t, wa, bob.GetUsername()+": hello")
	readText(t, wb, bob.GetUsername()+": hello")

	// One connection's messages reach the service in order, one at a time.
	for i := range 50 {
		if err := wa.WriteMessage(websocket.TextMessage, []byte(fmt.Sprint("echo ", i))); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 50 {
		readText(t, wa, fmt.Sprint("echo ", i))
	}
	// Binary both ways.
	if err := wa.WriteMessage(websocket.BinaryMessage, []byte{1, 2}); err != nil {
		t.Fatal(err)
	}
	_ = wa.SetReadDeadline(time.Now().Add(10 * time.Second))
	if mt, b, err := wa.ReadMessage(); err != nil || mt != websocket.BinaryMessage || string(b) != "got \x01\x02" {
		t.Fatalf("binary reply: %d %q %v", mt, b, err)
	}

	// Refused by the service: its status and reason, before any upgrade.
	_, code, reason := dialWSReason(t, commandsURL(s.edge.addr, "lobby")+"?refuse=1", cookieHeader(s.edge.addr, la.GetToken()))
	if code != http.StatusForbidden || reason != "ROOM_CLOSED" {
		t.Fatalf("refused by the service: %d %s", code, reason)
	}
	// A path that is not UTF-8 cannot be told to the service: refused, and the
	// route (its stream, when it has one) serves on.
	_, code, reason = dialWSReason(t, commandsURL(s.edge.addr, "%FF"), cookieHeader(s.edge.addr, la.GetToken()))
	if code != http.StatusBadRequest || reason != "BAD_PATH" {
		t.Fatalf("a path that is not UTF-8: %d %s", code, reason)
	}
	_ = wa.WriteMessage(websocket.TextMessage, []byte("echo after a bad path"))
	readText(t, wa, "echo after a bad path")
	// Closed in Connect: upgraded, then the code.
	wk := openCommands(t, s, commandsURL(s.edge.addr, "lobby")+"?kick=1", la.GetToken())
	readText(t, wk, "not today")
	expectClose(t, wk, 4003, "not today", 5*time.Second)

	// The service closes a connection; the edge tells it, once, with the code.
	wc := openCommands(t, s, commandsURL(s.edge.addr, "other"), la.GetToken())
	readText(t, wc, "welcome "+alice.GetUsername()+" to other")
	_ = wc.WriteMessage(websocket.TextMessage, []byte("bye"))
	expectClose(t, wc, 4001, "see you", 5*time.Second)

	// A failing Receive closes with 1011; an action that cannot be done too.
	wf := openCommands(t, s, commandsURL(s.edge.addr, "other"), la.GetToken())
	readText(t, wf, "welcome "+alice.GetUsername()+" to other")
	_ = wf.WriteMessage(websocket.TextMessage, []byte("boom"))
	expectClose(t, wf, 1011, "internal error", 5*time.Second)
	wg := openCommands(t, s, commandsURL(s.edge.addr, "other"), la.GetToken())
	readText(t, wg, "welcome "+alice.GetUsername()+" to other")
	_ = wg.WriteMessage(websocket.TextMessage, []byte("bad action"))
	expectClose(t, wg, 1011, "internal error", 5*time.Second)

	// A Receive past its deadline closes with 1013, and delays no other connection.
	ws := openCommands(t, s, commandsURL(s.edge.addr, "other"), la.GetToken())
	readText(t, ws, "welcome "+alice.GetUsername()+" to other")
	_ = ws.WriteMessage(websocket.TextMessage, []byte("slow"))
	_ = wa.WriteMessage(websocket.TextMessage, []byte("echo meanwhile"))
	readText(t, wa, "echo meanwhile")
	expectClose(t, ws, 1013, "the application is not answering", 5*time.Second)

	// Disconnect: each closed connection is reported once, with its code.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		svc.mu.Lock()
		n := len(svc.disconnects)
		var bad []string
		for id, codes := range svc.disconnects {
			if len(codes) != 1 {
				bad = append(bad, fmt.Sprint(id, codes))
			}
		}
		svc.mu.Unlock()
		if len(bad) > 0 {
			t.Fatalf("Disconnect called more than once: %v", bad)
		}
		if n >= 5 { // kick, bye, boom, bad action, slow
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d Disconnects, want 5", n)
		}
	}
	if m := metric(t, s.edge.addr, `gatehouse_edge_consumer_calls_total{method="receive",outcome="deadline",route="/ws/commands/{room}/"}`); m != 1 {
		t.Errorf("receive deadlines counted: %v, want 1", m)
	}
}

// TestRemoteConsumerKeepalive: with keepalive on the route, a service that goes
// silent without closing its connection (its host gone; here a proxy that swallows
// everything) is noticed by the edge's pings (consumer_up 0, handshakes refused at
// once rather than each waiting out its deadline); when it answers again, all works.
func TestRemoteConsumerKeepalive(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for gRPC's keepalive floor of 10 s")
	}
	svcAddr, _ := serveConsumer(t, newCommands(), "",
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}))
	proxy := pgtest.NewProxy(t, svcAddr)
	s := newSystem(t, nil, []string{"EDGESVC_ROUTES_FILE=" + routesFor(t, proxy.Addr, `, "keepalive": "10s"`)})
	up := func() float64 {
		return metric(t, s.edge.addr, `gatehouse_edge_consumer_up{route="/ws/commands/{room}/"}`)
	}
	for deadline := time.Now().Add(10 * time.Second); up() != 1; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the edge did not reach the service")
		}
	}
	alice, pw := s.newUser(t)
	tok := s.login(t, alice, pw).GetToken()
	ws := openCommands(t, s, commandsURL(s.edge.addr, "k"), tok)
	readText(t, ws, "welcome "+alice.GetUsername()+" to k")

	proxy.Silence(true)
	start := time.Now()
	for up() != 0 {
		if time.Since(start) > 25*time.Second {
			t.Fatal("the edge still takes the silent service for up after 25 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("a silent service noticed after %s (keepalive 10 s, ping timeout 500 ms)", time.Since(start).Round(100*time.Millisecond))
	_, code, reason := dialWSReason(t, commandsURL(s.edge.addr, "k"), cookieHeader(s.edge.addr, tok))
	if code != http.StatusServiceUnavailable || reason != "CONSUMER_UNAVAILABLE" {
		t.Fatalf("a handshake while the service is silent: %d %s, want 503 CONSUMER_UNAVAILABLE", code, reason)
	}

	proxy.Silence(false)
	for deadline := time.Now().Add(10 * time.Second); up() != 1; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the edge did not reach the service once it answered again")
		}
	}
	ws2 := openCommands(t, s, commandsURL(s.edge.addr, "k"), tok)
	readText(t, ws2, "welcome "+alice.GetUsername()+" to k")
}

// TestRemoteConsumerDown: a service that does not answer makes handshakes fail
// closed (503 CONSUMER_UNAVAILABLE); once it is back, new connections work with no
// restart of the edge (over a new Stream, for a service that has one).
func TestRemoteConsumerDown(t *testing.T) {
	t.Run("unary", func(t *testing.T) {
		svc := newCommands()
		consumerDown(t, svc, func(addr string) (string, func()) { return serveConsumer(t, svc, addr) })
	})
	t.Run("stream", func(t *testing.T) {
		svc := newCommands()
		var streams atomic.Int32
		consumerDown(t, svc, func(addr string) (string, func()) { return serveConsumer(t, streamingCommands{svc, &streams}, addr) })
		if n := streams.Load(); n < 2 {
			t.Fatalf("%d streams opened; want one before the service stopped and one after", n)
		}
	})
}

func consumerDown(t *testing.T, svc *commands, serve func(addr string) (string, func())) {
	addr, stop := serve("")
	s := newSystem(t, nil, []string{"EDGESVC_ROUTES_FILE=" + routesFor(t, addr, "")})
	alice, pw := s.newUser(t)
	l := s.login(t, alice, pw)
	ws := openCommands(t, s, commandsURL(s.edge.addr, "r"), l.GetToken())
	readText(t, ws, "welcome "+alice.GetUsername()+" to r")
	up := `gatehouse_edge_consumer_up{route="/ws/commands/{room}/"}`
	if v := metric(t, s.edge.addr, up); v != 1 {
		t.Fatalf("%s = %v while the service answers", up, v)
	}
	stop()
	_, code, reason := dialWSReason(t, commandsURL(s.edge.addr, "r"), cookieHeader(s.edge.addr, l.GetToken()))
	if code != http.StatusServiceUnavailable || reason != "CONSUMER_UNAVAILABLE" {
		t.Fatalf("handshake with the service down: %d %s", code, reason)
	}
	echo(t, mustOpen(t, s.edge.addr, l), "the edge's own routes go on")
	for deadline := time.Now().Add(10 * time.Second); metric(t, s.edge.addr, up) != 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s still 1 with the service down", up)
		}
	}
	serve(addr)
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		ws, code, _ := dialWSReason(t, commandsURL(s.edge.addr, "r"), cookieHeader(s.edge.addr, l.GetToken()))
		if code == http.StatusSwitchingProtocols {
			readText(t, ws, "welcome "+alice.GetUsername()+" to r")
			if v := metric(t, s.edge.addr, up); v != 1 {
				t.Fatalf("%s = %v with the service back", up, v)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the service is back, handshakes still answered %d", code)
		}
	}
}

// TestRoutesFileRefused: a routes file that cannot work stops the edge at start,
// saying why.
func TestRoutesFileRefused(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range []struct{ name, body, want string }{
		{"missing", "", "no such file"},
		{"not-json.json", "routes:", "want {"},
		{"unknown.json", `{"routes": [{"path": "/ws/a/", "consumer": "127.0.0.1:1", "tokn": "x"}]}`, "unknown field"},
		{"nopath.json", `{"routes": [{"path": "ws/a/", "consumer": "127.0.0.1:1"}]}`, "path must be"},
		{"noconsumer.json", `{"routes": [{"path": "/ws/a/"}]}`, "consumer (host:port"},
		{"timeout.json", `{"routes": [{"path": "/ws/a/", "consumer": "127.0.0.1:1", "timeout": "soon"}]}`, "timeout"},
		{"keepalive.json", `{"routes": [{"path": "/ws/a/", "consumer": "127.0.0.1:1", "keepalive": "1s"}]}`, "at least 10s"},
		{"keepalive2.json", `{"routes": [{"path": "/ws/a/", "consumer": "127.0.0.1:1", "keepalive": "often"}]}`, "keepalive"},
		{"taken.json", `{"routes": [{"path": "/ws/chat/{room}/", "consumer": "127.0.0.1:1"}]}`, "conflicts"},
		{"twice.json", `{"routes": [{"path": "/ws/a/", "consumer": "127.0.0.1:1"}, {"path": "/ws/a/", "consumer": "127.0.0.1:2"}]}`, "given once"},
		{"certnoca.json", `{"routes": [{"path": "/ws/a/", "consumer": "127.0.0.1:1", "cert": "c.pem", "key": "k.pem"}]}`, "need ca"},
		{"notoken.json", `{"routes": [{"path": "/ws/a/", "consumer": "127.0.0.1:1", "token_file": "/nonexistent"}]}`, "token_file"},
	} {
		path := filepath.Join(dir, c.name)
		if c.body != "" {
			path = write(c.name, c.body)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		cmd := exec.CommandContext(ctx, filepath.Join(binDir, "edgesvc"))
		cmd.Env = append(os.Environ(), edgeEnv("127.0.0.1:1", "EDGESVC_ROUTES_FILE="+path)...)
		out, err := cmd.CombinedOutput()
		cancel()
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("%s: %v\n%s\nwant an exit saying %q", c.name, err, out, c.want)
		}
	}
}

// TestRemoteConsumerTLS: the edge calls a consumer service over mTLS (the service
// verified against the route's CA, the edge's certificate presented); a certificate
// the service does not trust makes its route unreachable (503), nothing else.
func TestRemoteConsumerTLS(t *testing.T) {
	f := tlsFiles(t, t.TempDir())
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(mustRead(t, f["ca.pem"]))
	cert, err := tls.LoadX509KeyPair(f["server.pem"], f["server-key.pem"])
	if err != nil {
		t.Fatal(err)
	}
	creds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12})
	addr, _ := serveConsumer(t, newCommands(), "", grpc.Creds(creds))
	s := newSystem(t, nil, []string{"EDGESVC_ROUTES_FILE=" + routesFor(t, addr, fmt.Sprintf(`, "ca": %q, "cert": %q, "key": %q`, f["ca.pem"], f["client.pem"], f["client-key.pem"]))})
	alice, pw := s.newUser(t)
	l := s.login(t, alice, pw)
	ws := openCommands(t, s, commandsURL(s.edge.addr, "tls"), l.GetToken())
	readText(t, ws, "welcome "+alice.GetUsername()+" to tls")

	rogue := startEdge(t, s.auth.addr, "EDGESVC_ROUTES_FILE="+routesFor(t, addr, fmt.Sprintf(`, "ca": %q, "cert": %q, "key": %q`, f["ca.pem"], f["rogue.pem"], f["rogue-key.pem"])))
	waitReady(t, rogue.addr)
	_, code, reason := dialWSReason(t, commandsURL(rogue.addr, "tls"), cookieHeader(rogue.addr, l.GetToken()))
	if code != http.StatusServiceUnavailable || reason != "CONSUMER_UNAVAILABLE" {
		t.Fatalf("an edge whose certificate the service does not trust: %d %s, want 503 CONSUMER_UNAVAILABLE", code, reason)
	}
	echo(t, mustOpen(t, rogue.addr, l), "its own routes go on")
}

// slowConnects accepts every connection after a pause.
type slowConnects struct {
	appv1.UnimplementedConsumerServiceServer
}

func (slowConnects) Connect(context.Context, *appv1.ConnectRequest) (*appv1.ConnectResponse, error) {
	time.Sleep(300 * time.Millisecond) // whatever the deadline: the edge stops waiting at it
	return &appv1.ConnectResponse{}, nil
}

// TestRemoteConsumerBound: a route's calls in flight are bounded (max_in_flight); a
// handshake that cannot get a call in before its deadline is refused 503
// CONSUMER_UNAVAILABLE, and the others go through.
func TestRemoteConsumerBound(t *testing.T) {
	addr, _ := serveConsumer(t, slowConnects{}, "")
	s := newSystem(t, nil, []string{"EDGESVC_ROUTES_FILE=" + routesFor(t, addr, `, "max_in_flight": 1, "timeout": "1s"`)})
	alice, pw := s.newUser(t)
	l := s.login(t, alice, pw)
	var mu sync.Mutex
	got := map[string]int{}
	var wg sync.WaitGroup
	for range 6 { // 300 ms each, one at a time: about three fit in a second
		wg.Go(func() {
			ws, code, reason := dialWSReason(t, commandsURL(s.edge.addr, "busy"), cookieHeader(s.edge.addr, l.GetToken()))
			if ws != nil {
				ws.Close()
			}
			mu.Lock()
			got[fmt.Sprint(code, " ", reason)]++
			mu.Unlock()
		})
	}
	wg.Wait()
	ok, refused := got["101 "], got["503 CONSUMER_UNAVAILABLE"]
	if ok < 2 || refused < 1 || ok+refused != 6 {
		t.Fatalf("6 handshakes at once through a bound of 1: %v; want some through, some refused 503 CONSUMER_UNAVAILABLE, nothing else", got)
	}
	route := `route="/ws/commands/{room}/"`
	if n := metric(t, s.edge.addr, `gatehouse_edge_consumer_calls_total{method="connect",outcome="busy",`+route+`}`) +
		metric(t, s.edge.addr, `gatehouse_edge_consumer_calls_total{method="connect",outcome="deadline",`+route+`}`); n < 1 {
		t.Errorf("refusals for the bound counted: %v", n)
	}
}

// TestRemoteConsumerRedeploy: a service stopping gracefully (as a deploy stops it) is
// not held up by the edge's stream, and once it is back the connections that stayed
// open go on with it, with no error in between for an idle one.
func TestRemoteConsumerRedeploy(t *testing.T) {
	svc := newCommands()
	var streams atomic.Int32
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	g := grpc.NewServer()
	appv1.RegisterConsumerServiceServer(g, streamingCommands{svc, &streams})
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	// A deadline long enough for the service to be back before it.
	s := newSystem(t, nil, []string{"EDGESVC_ROUTES_FILE=" + routesFor(t, addr, `, "timeout": "3s"`)})
	alice, pw := s.newUser(t)
	ws := openCommands(t, s, commandsURL(s.edge.addr, "deploy"), s.login(t, alice, pw).GetToken())
	readText(t, ws, "welcome "+alice.GetUsername()+" to deploy")
	_ = ws.WriteMessage(websocket.TextMessage, []byte("echo before"))
	readText(t, ws, "echo before")

	stopped := make(chan struct{})
	go func() { g.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("the service's graceful stop waited 5 s for the edge's stream")
	}
	// A message sent while the service is down waits for it (within the deadline)
	// instead of closing the socket.
	_ = ws.WriteMessage(websocket.TextMessage, []byte("echo during"))
	time.Sleep(300 * time.Millisecond)
	serveConsumer(t, streamingCommands{svc, &streams}, addr)
	readText(t, ws, "echo during")
	for deadline := time.Now().Add(10 * time.Second); metric(t, s.edge.addr, `gatehouse_edge_consumer_up{route="/ws/commands/{room}/"}`) != 1; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the edge did not reach the service again")
		}
	}
	_ = ws.WriteMessage(websocket.TextMessage, []byte("echo after"))
	readText(t, ws, "echo after")
	if n := streams.Load(); n < 2 {
		t.Fatalf("%d streams: want a new one to the new service", n)
	}
}

// TestRoutesWarn: a route without a token, and one to a service off loopback in
// plaintext, are warned of when the edge starts.
func TestRoutesWarn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "routes.json")
	body := `{"routes": [{"path": "/ws/open/", "consumer": "127.0.0.1:1"}, {"path": "/ws/far/", "consumer": "192.0.2.1:5000"}]}`
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startAuth(t)
	e := startEdge(t, a.addr, "EDGESVC_ROUTES_FILE="+path)
	for _, want := range []string{"without a token (token_file) or mTLS", "off loopback in plaintext"} {
		for deadline := time.Now().Add(10 * time.Second); !strings.Contains(e.logs(), want); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no warning %q:\n%s", want, e.logs())
			}
		}
	}
}
