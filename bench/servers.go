package main

import (
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// baselineWS is the bare gorilla/websocket echo server the edge is compared with:
// it upgrades every request at once and answers "You said: X", with the chat
// example's read limit, one reader and a direct write.
func baselineWS(args []string) error {
	fs := flag.NewFlagSet("baseline-ws", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	_ = fs.Parse(args)
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		ws.SetReadLimit(1 << 20)
		for {
			mt, msg, err := ws.ReadMessage()
			if err != nil {
				return
			}
			if err := ws.WriteMessage(mt, append([]byte("You said: "), msg...)); err != nil {
				return
			}
		}
	})
	return serveUntilSignal(*listen, func(l net.Listener) error { return http.Serve(l, h) })
}

// baselineGRPC is a bare gRPC ValidateSession: one map lookup, no database.
func baselineGRPC(args []string) error {
	fs := flag.NewFlagSet("baseline-grpc", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	tokens := fs.String("tokens", "", "file of tokens (one per line) to accept")
	_ = fs.Parse(args)
	m := &mapAuth{sessions: map[[32]byte]int{}}
	if *tokens != "" {
		toks, err := readLines(*tokens)
		if err != nil {
			return err
		}
		for i, t := range toks {
			m.sessions[sha256.Sum256([]byte(t))] = i
		}
	}
	g := grpc.NewServer()
	authv1.RegisterAuthServiceServer(g, m)
	return serveUntilSignal(*listen, g.Serve)
}

type mapAuth struct {
	authv1.UnimplementedAuthServiceServer
	mu       sync.RWMutex
	sessions map[[32]byte]int
}

func (m *mapAuth) ValidateSession(_ context.Context, req *authv1.ValidateSessionRequest) (*authv1.ValidateSessionResponse, error) {
	m.mu.RLock()
	i, ok := m.sessions[sha256.Sum256([]byte(req.GetToken()))]
	m.mu.RUnlock()
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "session unknown")
	}
	return &authv1.ValidateSessionResponse{
		User:    &authv1.User{Id: 1, Username: "bench", Active: true},
		Session: &authv1.Session{Id: fmt.Sprint(i), UserId: 1, ExpiresAt: timestamppb.New(time.Now().Add(time.Hour))},
	}, nil
}

// serveUntilSignal listens, prints "listening ADDR" on stdout and serves until
// SIGTERM or SIGINT.
func serveUntilSignal(addr string, serve func(net.Listener) error) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Printf("listening %s\n", l.Addr())
	errc := make(chan error, 1)
	go func() { errc <- serve(l) }()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case err := <-errc:
		return err
	case <-sig:
		return nil
	}
}
