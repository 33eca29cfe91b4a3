package edge

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// stubAuth answers ValidateSession for one token with user 1. It stands in for
// authsvc only in these tests of the consumer plumbing; the e2e tests run the real
// authsvc on PostgreSQL for every handshake row.
type stubAuth struct {
	authv1.UnimplementedAuthServiceServer
}

func (stubAuth) ValidateSession(context.Context, *authv1.ValidateSessionRequest) (*authv1.ValidateSessionResponse, error) {
	return &authv1.ValidateSessionResponse{
		User:    &authv1.User{Id: 1, Username: "alice", Active: true},
		Session: &authv1.Session{Id: "s1", UserId: 1, ExpiresAt: timestamppb.New(time.Now().Add(time.Hour))},
	}, nil
}

// newTestEdge serves s over httptest with the stub authsvc on a loopback gRPC listener.
func newTestEdge(t *testing.T, route string, c Consumer) string {
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
	s := New(cc, Config{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	s.Handle(route, c)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return "ws" + srv.URL[len("http"):]
}

type failing struct {
	Echo
	connectErr, receiveErr error
	disconnected           chan int
}

func (f failing) Connect(context.Context, *Conn) error { return f.connectErr }
func (f failing) Receive(ctx context.Context, c *Conn, text string) error {
	if f.receiveErr != nil {
		return f.receiveErr
	}
	return f.Echo.Receive(ctx, c, text)
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
		ws := dialStub(t, newTestEdge(t, "/ws/app/", f)+"/ws/app/")
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
	t.Run("connect fails", func(t *testing.T) {
		f := failing{connectErr: errors.New("no"), disconnected: make(chan int, 1)}
		ws := dialStub(t, newTestEdge(t, "/ws/app/", f)+"/ws/app/")
		if ce := readClose(t, ws); ce.Code != websocket.CloseInternalServerErr {
			t.Fatalf("close = %d, want 1011", ce.Code)
		}
		select {
		case <-f.disconnected:
			t.Fatal("Disconnect called for a connection the consumer refused")
		case <-time.After(200 * time.Millisecond):
		}
	})
}

// TestRouteWithoutUserID: a route without {user_id} admits any valid session.
func TestRouteWithoutUserID(t *testing.T) {
	ws := dialStub(t, newTestEdge(t, "/ws/lobby/", Echo{})+"/ws/lobby/")
	if err := ws.WriteMessage(websocket.TextMessage, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, got, err := ws.ReadMessage(); err != nil || string(got) != "You said: hi" {
		t.Fatalf("echo = %q, %v", got, err)
	}
}
