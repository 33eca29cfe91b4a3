package edge_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gatehouse/gatehouse/edgesvc/edge"
)

// shout is a consumer: it greets each user, answers every text in capitals, and
// refuses sockets on the "quiet" route before the upgrade.
type shout struct {
	room string // per connection: Handle makes one shout for each
}

func (s *shout) Connect(_ context.Context, c *edge.Conn, r *http.Request) error {
	s.room = r.PathValue("room")
	if s.room == "quiet" {
		return &edge.Refusal{Status: http.StatusForbidden, Reason: "QUIET_ROOM", Message: "no shouting here"}
	}
	return c.Send("hello " + c.User().Username + ", welcome to " + s.room)
}

func (s *shout) Receive(_ context.Context, c *edge.Conn, m edge.Message) error {
	if m.Binary {
		c.Close(edge.CloseUnsupported, "text only")
		return nil
	}
	return c.Reply(strings.ToUpper(m.Text) + "!")
}

func (s *shout) Disconnect(context.Context, *edge.Conn, int) {}

// ExampleServer_Handle runs an edge with a consumer of its own on a route of its own.
// In production the edge dials authsvc (grpc.NewClient("authsvc:50051", …)); here a
// one-user stand-in answers, so the example runs alone.
func ExampleServer_Handle() {
	cc, stopAuthsvc := standInAuthsvc()
	defer stopAuthsvc()

	srv := edge.New(cc, edge.Config{}, slog.New(slog.DiscardHandler))
	srv.Handle("/ws/shout/{room}/", func() edge.Consumer { return &shout{} })
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go srv.WatchSessions(ctx)
	hs := httptest.NewServer(srv)
	defer hs.Close()
	defer srv.Shutdown(context.Background())

	// A client with a session token (a browser sends the sessionid cookie instead).
	url := "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws/shout/lobby/"
	header := http.Header{"Authorization": {"Bearer " + standInToken}}
	ws, _, err := websocket.DefaultDialer.Dial(url, header)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ws.Close()
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, greeting, _ := ws.ReadMessage()
	fmt.Println(string(greeting))
	_ = ws.WriteMessage(websocket.TextMessage, []byte("hi there"))
	_, answer, _ := ws.ReadMessage()
	fmt.Println(string(answer))

	_, resp, _ := websocket.DefaultDialer.Dial(strings.Replace(url, "lobby", "quiet", 1), header)
	fmt.Println(resp.StatusCode, resp.Header.Get(edge.ReasonHeader))
	// Output:
	// hello alice, welcome to lobby
	// HI THERE!
	// 403 QUIET_ROOM
}

// standInToken is the one session the stand-in authsvc knows.
const standInToken = "wISXoPAn1KUkyp2RJQtJ4CxJXrAUx59HGX5mTCTuHjk"

// standInAuthsvc serves a one-user AuthService over loopback gRPC and returns a client
// connection to it, and a function that stops both. The edge's tests against the real
// authsvc are in e2e/.
func standInAuthsvc() (*grpc.ClientConn, func()) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	g := grpc.NewServer()
	authv1.RegisterAuthServiceServer(g, standIn{})
	go func() { _ = g.Serve(lis) }()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		panic(err)
	}
	return cc, func() { cc.Close(); g.Stop() }
}

type standIn struct {
	authv1.UnimplementedAuthServiceServer
}

func (standIn) ValidateSession(_ context.Context, r *authv1.ValidateSessionRequest) (*authv1.ValidateSessionResponse, error) {
	if r.GetToken() != standInToken {
		return nil, fmt.Errorf("unknown session")
	}
	return &authv1.ValidateSessionResponse{
		User:    &authv1.User{Id: 1, Username: "alice", Active: true},
		Session: &authv1.Session{Id: "s1", UserId: 1, ExpiresAt: timestamppb.New(time.Now().Add(time.Hour))},
	}, nil
}
