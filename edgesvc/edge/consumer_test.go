package edge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// stubAuth answers ValidateSession with user 1 (alice), session s1, for any token but
// those shaped "u<user>s<session>", which get that user (named user<id>) and session.
// It stands in for authsvc only in these tests of the consumer plumbing; the e2e tests
// run the real authsvc on PostgreSQL for every handshake row.
type stubAuth struct {
	authv1.UnimplementedAuthServiceServer
}

func (stubAuth) ValidateSession(_ context.Context, r *authv1.ValidateSessionRequest) (*authv1.ValidateSessionResponse, error) {
	user, name, sess := int64(1), "alice", "s1"
	var u, s int
	if n, _ := fmt.Sscanf(r.GetToken(), "u%ds%d", &u, &s); n == 2 {
		user, name, sess = int64(u), fmt.Sprintf("user%d", u), fmt.Sprintf("s%d", s)
	}
	return &authv1.ValidateSessionResponse{
		User:    &authv1.User{Id: user, Username: name, Active: true},
		Session: &authv1.Session{Id: sess, UserId: user, ExpiresAt: timestamppb.New(time.Now().Add(time.Hour))},
	}, nil
}

// echo makes the Echo consumer, as edgesvc routes it.
func echo() Consumer { return Echo{} }

// newTestEdge serves an edge with one route over httptest, with the stub authsvc on a
// loopback gRPC listener, and returns its ws:// base URL.
func newTestEdge(t *testing.T, route string, newConsumer func() Consumer) string {
	t.Helper()
	_, url := newTestServer(t, route, newConsumer)
	return url
}

// newTestServer is newTestEdge that also returns the Server.
func newTestServer(t *testing.T, route string, newConsumer func() Consumer) (*Server, string) {
	t.Helper()
	return newTestServerConfig(t, Config{}, route, newConsumer)
}

// newTestServerConfig is newTestServer with a Config.
func newTestServerConfig(t *testing.T, cfg Config, route string, newConsumer func() Consumer) (*Server, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	authv1.RegisterAuthServiceServer(g, stubAuth{})
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	s := New(cc, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	s.Handle(route, newConsumer)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return s, "ws" + srv.URL[len("http"):]
}

type failing struct {
	Echo
	connectErr, receiveErr error
	disconnected           chan int
}

func (f failing) Connect(context.Context, *Conn, *http.Request) error { return f.connectErr }
func (f failing) Receive(ctx context.Context, c *Conn, m Message) error {
	if f.receiveErr != nil {
		return f.receiveErr
	}
	return f.Echo.Receive(ctx, c, m)
}
func (f failing) Disconnect(_ context.Context, _ *Conn, code int) { f.disconnected <- code }

func dialStub(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(url, http.Header{"Authorization": {"Bearer tok"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

func readClose(t *testing.T, ws *websocket.Conn) *websocket.CloseError {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, _, err := ws.ReadMessage()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce
		}
		if err != nil {
			t.Fatalf("read: %v, want a close frame", err)
		}
	}
}

func TestConsumerErrorClosesWith1011(t *testing.T) {
	t.Run("receive fails", func(t *testing.T) {
		f := failing{receiveErr: errors.New("boom"), disconnected: make(chan int, 1)}
		ws := dialStub(t, newTestEdge(t, "/ws/app/", func() Consumer { return f })+"/ws/app/")
		if err := ws.WriteMessage(websocket.TextMessage, []byte("hi")); err != nil {
			t.Fatal(err)
		}
		if ce := readClose(t, ws); ce.Code != websocket.CloseInternalServerErr || ce.Text != "internal error" {
			t.Fatalf("close = %d %q, want 1011", ce.Code, ce.Text)
		}
		ws.Close()
		select {
		case code := <-f.disconnected:
			if code != websocket.CloseInternalServerErr {
				t.Fatalf("Disconnect got code %d, want 1011", code)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Disconnect not called")
		}
	})
}

// TestConnectRefuses: Connect decides before the upgrade. A *Refusal is answered with
// its status and reason; any other error with 500 CONSUMER_ERROR; neither upgrades,
// and Disconnect is not called for a connection Connect refused.
func TestConnectRefuses(t *testing.T) {
	for _, tc := range []struct {
		name         string
		err          error
		status       int
		reason, body string
	}{
		{"refusal", &Refusal{Status: http.StatusConflict, Reason: "ROOM_FULL", Message: "the room is full"}, http.StatusConflict, "ROOM_FULL", "the room is full"},
		{"refusal without status or reason", &Refusal{Message: "no"}, http.StatusForbidden, "REFUSED", "no"},
		{"refusal with a status that is not an error", &Refusal{Status: http.StatusOK}, http.StatusForbidden, "REFUSED", ""},
		{"wrapped refusal", fmt.Errorf("chat: %w", &Refusal{Status: http.StatusTooManyRequests, Reason: "SLOW_DOWN"}), http.StatusTooManyRequests, "SLOW_DOWN", ""},
		{"other error", errors.New("database down"), http.StatusInternalServerError, "CONSUMER_ERROR", "internal error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := failing{connectErr: tc.err, disconnected: make(chan int, 1)}
			url := newTestEdge(t, "/ws/app/", func() Consumer { return f }) + "/ws/app/"
			_, resp, err := websocket.DefaultDialer.Dial(url, http.Header{"Authorization": {"Bearer tok"}})
			if err == nil || resp == nil {
				t.Fatalf("dial = %v, %v; want a refused handshake", resp, err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || resp.Header.Get(ReasonHeader) != tc.reason || strings.TrimSpace(string(body)) != tc.body {
				t.Fatalf("refused with %d %q %q; want %d %q %q", resp.StatusCode, resp.Header.Get(ReasonHeader), body, tc.status, tc.reason, tc.body)
			}
			select {
			case <-f.disconnected:
				t.Fatal("Disconnect called for a connection Connect refused")
			default:
			}
		})
	}
}

// greeter sends a greeting in Connect, and closes with a code of its own when the
// path says so, to show what a consumer may do before the upgrade.
type greeter struct {
	Echo
	disconnected chan int
}

func (g greeter) Connect(_ context.Context, c *Conn, r *http.Request) error {
	if err := c.Send("welcome to " + r.PathValue("room") + ", " + c.User().Username); err != nil {
		return err
	}
	if r.PathValue("room") == "closed" {
		c.Close(4003, "this room is closed")
	}
	return nil
}

func (g greeter) Disconnect(_ context.Context, _ *Conn, code int) { g.disconnected <- code }

// TestConnectSendsAndCloses: what Connect sends goes out first, right after the
// upgrade; a Close in Connect upgrades and then closes, so the client sees the code.
func TestConnectSendsAndCloses(t *testing.T) {
	g := greeter{disconnected: make(chan int, 1)}
	base := newTestEdge(t, "/ws/room/{room}/", func() Consumer { return g })

	ws := dialStub(t, base+"/ws/room/lobby/")
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, got, err := ws.ReadMessage(); err != nil || string(got) != "welcome to lobby, alice" {
		t.Fatalf("first message = %q, %v; want the greeting", got, err)
	}
	if err := ws.WriteMessage(websocket.TextMessage, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, got, err := ws.ReadMessage(); err != nil || string(got) != "You said: hi" {
		t.Fatalf("echo = %q, %v", got, err)
	}

	closed := dialStub(t, base+"/ws/room/closed/")
	_ = closed.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, got, err := closed.ReadMessage(); err != nil || string(got) != "welcome to closed, alice" {
		t.Fatalf("first message = %q, %v; want the greeting before the close", got, err)
	}
	if ce := readClose(t, closed); ce.Code != 4003 || ce.Text != "this room is closed" {
		t.Fatalf("close = %d %q, want 4003", ce.Code, ce.Text)
	}
	closed.Close()
	if code := <-g.disconnected; code != 4003 {
		t.Fatalf("Disconnect got %d, want 4003", code)
	}
}

// binaryTaker records binary messages and answers with their length.
type binaryTaker struct{ Echo }

func (binaryTaker) Receive(_ context.Context, c *Conn, m Message) error {
	if !m.Binary || m.Text != "" {
		return fmt.Errorf("got %+v, want a binary message", m)
	}
	return c.Reply(fmt.Sprintf("%d bytes: %x", len(m.Data), m.Data))
}

// TestBinaryMessages: binary messages reach the consumer (echo, which takes text,
// closes with 1003).
func TestBinaryMessages(t *testing.T) {
	ws := dialStub(t, newTestEdge(t, "/ws/bin/", func() Consumer { return binaryTaker{} })+"/ws/bin/")
	if err := ws.WriteMessage(websocket.BinaryMessage, []byte{0, 0xff, 7}); err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, got, err := ws.ReadMessage(); err != nil || string(got) != "3 bytes: 00ff07" {
		t.Fatalf("reply = %q, %v", got, err)
	}

	ws = dialStub(t, newTestEdge(t, "/ws/app/", echo)+"/ws/app/")
	if err := ws.WriteMessage(websocket.BinaryMessage, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if ce := readClose(t, ws); ce.Code != CloseUnsupported {
		t.Fatalf("echo closed binary with %d, want 1003", ce.Code)
	}
}

// closer closes with the code the client sends.
type closer struct{ Echo }

func (closer) Receive(_ context.Context, c *Conn, m Message) error {
	code, _ := strconv.Atoi(m.Text)
	c.Close(code, "as asked")
	return nil
}

// TestCloseCodes: a consumer's code goes out as given when a server may send it, and
// as 1011 when not (1005, 1006 and 1015 never appear on the wire).
func TestCloseCodes(t *testing.T) {
	url := newTestEdge(t, "/ws/close/", func() Consumer { return closer{} }) + "/ws/close/"
	for code, want := range map[int]int{1000: 1000, 4000: 4000, 4999: 4999, 3000: 3000, 1013: 1013,
		1005: 1011, 1006: 1011, 1010: 1011, 1015: 1011, 999: 1011, 5000: 1011, 2000: 1011,
		4401: 1011, // only the session authority says a session ended
	} {
		ws := dialStub(t, url)
		if err := ws.WriteMessage(websocket.TextMessage, []byte(strconv.Itoa(code))); err != nil {
			t.Fatal(err)
		}
		if ce := readClose(t, ws); ce.Code != want {
			t.Errorf("Close(%d): client saw %d, want %d", code, ce.Code, want)
		}
	}
}

// TestRouteWithoutUserID: a route without {user_id} admits any valid session.
func TestRouteWithoutUserID(t *testing.T) {
	ws := dialStub(t, newTestEdge(t, "/ws/lobby/", echo)+"/ws/lobby/")
	if err := ws.WriteMessage(websocket.TextMessage, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, got, err := ws.ReadMessage(); err != nil || string(got) != "You said: hi" {
		t.Fatalf("echo = %q, %v", got, err)
	}
}

// eager hands its connection to another goroutine in Connect, which sends at once,
// before the upgrade and while the socket starts: the messages arrive, in order.
type eager struct{ Echo }

func (eager) Connect(_ context.Context, c *Conn, _ *http.Request) error {
	go func() {
		for i := range 60 { // all fit the send queue (64), even if none goes out before the upgrade
			var err error
			if i%2 == 0 {
				err = c.Send(strconv.Itoa(i))
			} else {
				err = c.Reply(strconv.Itoa(i))
			}
			if err != nil {
				return
			}
		}
	}()
	return nil
}

func TestSendFromAnotherGoroutineWhileStarting(t *testing.T) {
	url := newTestEdge(t, "/ws/eager/", func() Consumer { return eager{} }) + "/ws/eager/"
	for range 20 {
		ws := dialStub(t, url)
		_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		for i := range 60 {
			_, got, err := ws.ReadMessage()
			if err != nil || string(got) != strconv.Itoa(i) {
				t.Fatalf("message %d = %q, %v", i, got, err)
			}
		}
		ws.Close()
	}
}

// flooder pushes 64 KiB messages until the connection closes.
type flooder struct{ Echo }

func (flooder) Receive(_ context.Context, c *Conn, _ Message) error {
	big := strings.Repeat("x", 64<<10)
	for c.Send(big) == nil {
	}
	return nil
}

// TestSlowClientGets1013: a client that does not read while pushes pile up is closed
// with 1013, and what was still queued is dropped, not sent ahead of the close.
func TestSlowClientGets1013(t *testing.T) {
	ws := dialStub(t, newTestEdge(t, "/ws/flood/", func() Consumer { return flooder{} })+"/ws/flood/")
	if err := ws.WriteMessage(websocket.TextMessage, []byte("go")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // not reading: the socket's buffers and the queue fill
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	n := 0
	for {
		_, _, err := ws.ReadMessage()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			if ce.Code != CloseTryAgainLater {
				t.Fatalf("closed with %d after %d messages, want 1013", ce.Code, n)
			}
			break
		}
		if err != nil {
			t.Fatalf("after %d messages: %v, want close 1013", n, err)
		}
		n++
	}
	if n >= 64 {
		t.Fatalf("read %d messages before the close: the full queue (64) was sent, not dropped", n)
	}
}

// TestShutdownRefusesNewSockets: once Shutdown has begun, a handshake is refused with
// 503 SHUTTING_DOWN before any consumer is made; open sockets get 1001.
func TestShutdownRefusesNewSockets(t *testing.T) {
	var made atomic.Int32
	srv, base := newTestServer(t, "/ws/app/", func() Consumer { made.Add(1); return Echo{} })
	open := dialStub(t, base+"/ws/app/")
	if made.Load() != 1 {
		t.Fatalf("%d consumers made for one socket", made.Load())
	}
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(t.Context()) }()
	if ce := readClose(t, open); ce.Code != CloseGoingAway {
		t.Fatalf("open socket closed with %d, want 1001", ce.Code)
	}
	open.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	_, resp, err := websocket.DefaultDialer.Dial(base+"/ws/app/", http.Header{"Authorization": {"Bearer tok"}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get(ReasonHeader) != "SHUTTING_DOWN" {
		t.Fatalf("dial after Shutdown = %v, %v; want 503 SHUTTING_DOWN", resp, err)
	}
	if made.Load() != 1 {
		t.Fatal("a consumer was made for a handshake refused by Shutdown")
	}
	// A balancer checking /readyz stops sending clients here.
	resp, err = http.Get("http" + strings.TrimPrefix(base, "ws") + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz after Shutdown: %d, want 503", resp.StatusCode)
	}
}

// oversize answers every message with a reply, a send, and their binary forms of one
// byte over the read limit, reporting each error as a text reply.
type oversize struct{ Echo }

func (oversize) Receive(_ context.Context, c *Conn, _ Message) error {
	big := strings.Repeat("x", 1024+WrapRoom+1)
	for _, err := range []error{c.Reply(big), c.Send(big), c.ReplyBinary([]byte(big)), c.SendBinary([]byte(big))} {
		if !errors.Is(err, ErrPayloadTooLarge) {
			return c.Reply(fmt.Sprintf("sent over the read limit: %v", err))
		}
	}
	return c.Reply("refused, all four")
}

// TestConsumerSendsBoundedByReadLimit: a consumer cannot send a client more than a
// client may send (Config.ReadLimit): Send and Reply fail with ErrPayloadTooLarge,
// sending nothing.
func TestConsumerSendsBoundedByReadLimit(t *testing.T) {
	_, base := newTestServerConfig(t, Config{ReadLimit: 1024}, "/ws/big/", func() Consumer { return oversize{} })
	ws := dialStub(t, base+"/ws/big/")
	if err := ws.WriteMessage(websocket.TextMessage, []byte("go")); err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, got, err := ws.ReadMessage(); err != nil || string(got) != "refused, all four" {
		t.Fatalf("got %q, %v", got, err)
	}
}

// TestUserIDRouteInAnyForm: a route naming {user_id...} is bound to the session's
// user as {user_id} is.
func TestUserIDRouteInAnyForm(t *testing.T) {
	base := newTestEdge(t, "/ws/rest/{user_id...}", echo)
	for path, want := range map[string]int{"/ws/rest/1": http.StatusSwitchingProtocols, "/ws/rest/2": http.StatusForbidden, "/ws/rest/1/x": http.StatusNotFound} {
		ws, resp, err := websocket.DefaultDialer.Dial(base+path, http.Header{"Authorization": {"Bearer tok"}}) // user 1
		if ws != nil {
			ws.Close()
		}
		if resp == nil || resp.StatusCode != want {
			t.Errorf("%s: %v %v, want %d", path, resp, err, want)
		}
	}
}
