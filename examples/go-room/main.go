// Command go-room is a WebSocket edge of your own, built on gatehouse's public edge
// package: authsvc signs users in and gatehouse authorises every socket before the
// upgrade, while this program decides what the sockets do. Each socket joins the room
// in its path, /ws/room/{room}/, is greeted, and gets every text it sends back
// prefixed with the room's name; the room "closed" refuses sockets before the upgrade.
//
//	AUTHSVC_ADDR=127.0.0.1:50051 ROOM_LISTEN=127.0.0.1:8100 go run .
//
// Connect with a session token (from authsvc's Login, or the page's sessionid cookie)
// as "Authorization: Bearer <token>".
package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gatehouse/gatehouse/edgesvc/edge"
)

// room is the consumer of one socket; its fields are that socket's state.
type room struct {
	name string
}

func (r *room) Connect(_ context.Context, c *edge.Conn, req *http.Request) error {
	r.name = req.PathValue("room")
	if r.name == "closed" {
		return &edge.Refusal{Status: http.StatusForbidden, Reason: "ROOM_CLOSED", Message: "this room is closed"}
	}
	return c.Send("welcome to " + r.name + ", " + c.User().Username)
}

func (r *room) Receive(_ context.Context, c *edge.Conn, m edge.Message) error {
	if m.Binary {
		c.Close(edge.CloseUnsupported, "text only")
		return nil
	}
	return c.Reply(r.name + ": " + m.Text)
}

func (r *room) Disconnect(context.Context, *edge.Conn, int) {}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log); err != nil {
		log.Error("go-room", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger) error {
	cc, err := grpc.NewClient(env("AUTHSVC_ADDR", "127.0.0.1:50051"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	srv := edge.New(cc, edge.Config{}, log)
	srv.Handle("/ws/room/{room}/", func() edge.Consumer { return &room{} })

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go srv.WatchSessions(ctx)

	lis, err := net.Listen("tcp", env("ROOM_LISTEN", "127.0.0.1:8100"))
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(lis) }()
	log.Info("room edge listening", "addr", lis.Addr().String())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx) // sockets get 1001
	if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
