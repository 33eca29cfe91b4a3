// Command go-commands is examples/node/consumer.js in Go: a gatehouse.app.v1
// ConsumerService deciding what the sockets of a route such as /ws/commands/{room}/
// do — a "commands" room where /who lists the room (asked of the edge API), /join ROOM
// moves you, and anything else is said to the room. The edge signs users in and
// checks their session before it calls Connect.
//
//	go run ./examples/go-commands -listen 127.0.0.1:50070 -api 127.0.0.1:50052 -api-token-file .run/api-token
//
// and start the edge with EDGESVC_ROUTES_FILE=examples/node/routes.json.
package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"sync"
	"syscall"

	appv1 "github.com/gatehouse/gatehouse/gen/gatehouse/app/v1"
	edgev1 "github.com/gatehouse/gatehouse/gen/gatehouse/edge/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:50070", "where to serve ConsumerService")
	api := flag.String("api", "127.0.0.1:50052", "the edge API, for /who")
	apiTokenFile := flag.String("api-token-file", ".run/api-token", "file holding the edge API token")
	tokenFile := flag.String("token-file", "", "file holding the token the edge must present (the route's token_file); empty: not checked")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(*listen, *api, *apiTokenFile, *tokenFile, log); err != nil {
		fmt.Fprintln(os.Stderr, "go-commands:", err)
		os.Exit(1)
	}
}

func run(listen, api, apiTokenFile, tokenFile string, log *slog.Logger) error {
	read := func(path string) (string, error) {
		if path == "" {
			return "", nil
		}
		b, err := os.ReadFile(path)
		return strings.TrimSpace(string(b)), err
	}
	apiToken, err := read(apiTokenFile)
	if err != nil {
		return err
	}
	token, err := read(tokenFile)
	if err != nil {
		return err
	}
	cc, err := grpc.NewClient(api, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	g := grpc.NewServer(grpc.UnaryInterceptor(checkToken(token)), grpc.StreamInterceptor(checkStreamToken(token)))
	appv1.RegisterConsumerServiceServer(g, &commands{edge: edgev1.NewEdgeServiceClient(cc), apiToken: apiToken, rooms: map[string]string{}, log: log})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() { <-ctx.Done(); g.GracefulStop() }()
	log.Info("consumer listening", "addr", lis.Addr().String())
	return g.Serve(lis)
}

// checkToken refuses unary calls without "authorization: Bearer <token>" (if token
// is set).
func checkToken(token string) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if err := authorized(ctx, token); err != nil {
			return nil, err
		}
		return h(ctx, req)
	}
}

// checkStreamToken is checkToken for streams (the edge's Stream call, if served).
func checkStreamToken(token string) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if err := authorized(ss.Context(), token); err != nil {
			return err
		}
		return h(srv, ss)
	}
}

// authorized compares the call's bearer token with token in constant time (as
// SHA-256 digests, so neither the content nor the length leaks through timing).
func authorized(ctx context.Context, token string) error {
	if token == "" {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get("authorization")
	got, want := sha256.Sum256([]byte(strings.Join(v, "\x00"))), sha256.Sum256([]byte("Bearer "+token))
	if len(v) != 1 || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		return status.Error(codes.Unauthenticated, "wrong or missing token")
	}
	return nil
}

// commands is the service: each connection's room is its own state, which
// Disconnect (best effort) clears.
type commands struct {
	appv1.UnimplementedConsumerServiceServer
	edge     edgev1.EdgeServiceClient
	apiToken string
	mu       sync.Mutex
	rooms    map[string]string // by connection id
	log      *slog.Logger
}

var roomRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,90}$`)

func group(room string) string { return "commands." + room }

func reply(text string) *appv1.Action {
	return &appv1.Action{Action: &appv1.Action_Reply{Reply: &appv1.Reply{Payload: &appv1.Reply_Text{Text: text}}}}
}
func join(room string) *appv1.Action {
	return &appv1.Action{Action: &appv1.Action_Join{Join: &appv1.Join{Group: group(room)}}}
}
func leave(room string) *appv1.Action {
	return &appv1.Action{Action: &appv1.Action_Leave{Leave: &appv1.Leave{Group: group(room)}}}
}
func say(room, text string) *appv1.Action {
	return &appv1.Action{Action: &appv1.Action_Send{Send: &appv1.Send{
		Target: &edgev1.Target{Target: &edgev1.Target_Group{Group: group(room)}}, Payload: &appv1.Send_Text{Text: text},
	}}}
}

func (s *commands) Connect(_ context.Context, req *appv1.ConnectRequest) (*appv1.ConnectResponse, error) {
	c := req.GetConnection()
	room := c.GetPathParams()["room"]
	if room == "" {
		room = "lobby"
	}
	if !roomRE.MatchString(room) {
		return &appv1.ConnectResponse{Refusal: &appv1.Refusal{Status: 404, Reason: "NO_SUCH_ROOM", Message: "no room " + room}}, nil
	}
	s.mu.Lock()
	s.rooms[c.GetId()] = room
	s.mu.Unlock()
	name := c.GetUser().GetUsername()
	return &appv1.ConnectResponse{Actions: []*appv1.Action{
		join(room), reply(fmt.Sprintf("welcome %s to %s: try /who, /join ROOM, or say something", name, room)), say(room, name+" joined"),
	}}, nil
}

func (s *commands) Receive(ctx context.Context, req *appv1.ReceiveRequest) (*appv1.ReceiveResponse, error) {
	c := req.GetConnection()
	name := c.GetUser().GetUsername()
	s.mu.Lock()
	room := s.rooms[c.GetId()]
	s.mu.Unlock()
	if _, ok := req.GetPayload().(*appv1.ReceiveRequest_Text); !ok {
		return &appv1.ReceiveResponse{Actions: []*appv1.Action{{Action: &appv1.Action_Close{Close: &appv1.Close{Code: 4000, Reason: "send text"}}}}}, nil
	}
	text := req.GetText()
	switch {
	case text == "/who":
		p, err := s.edge.GroupPresence(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+s.apiToken), &edgev1.GroupPresenceRequest{Group: group(room)})
		if err != nil {
			return nil, err // the edge closes the connection with 1011
		}
		var names []string
		for _, u := range p.GetUsers() {
			names = append(names, u.GetUsername())
		}
		return &appv1.ReceiveResponse{Actions: []*appv1.Action{reply("in " + room + ": " + strings.Join(names, ", "))}}, nil
	case strings.HasPrefix(text, "/join "):
		next := strings.TrimSpace(strings.TrimPrefix(text, "/join "))
		if !roomRE.MatchString(next) {
			return &appv1.ReceiveResponse{Actions: []*appv1.Action{reply("no room " + next + ": letters, digits, '-', '_', '.'")}}, nil
		}
		s.mu.Lock()
		s.rooms[c.GetId()] = next
		s.mu.Unlock()
		return &appv1.ReceiveResponse{Actions: []*appv1.Action{leave(room), join(next), reply("you are in " + next), say(next, name+" joined")}}, nil
	}
	return &appv1.ReceiveResponse{Actions: []*appv1.Action{say(room, name+": "+text)}}, nil
}

func (s *commands) Disconnect(_ context.Context, req *appv1.DisconnectRequest) (*appv1.DisconnectResponse, error) {
	s.mu.Lock()
	delete(s.rooms, req.GetConnection().GetId())
	s.mu.Unlock()
	s.log.Info("disconnect", "user", req.GetConnection().GetUser().GetUsername(), "code", req.GetCode())
	return &appv1.DisconnectResponse{}, nil
}
