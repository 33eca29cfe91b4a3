package e2e

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gorilla/websocket"
)

const (
	goroutines = "go_goroutines"
	openConns  = "gatehouse_edge_connections_open"
)

// waitMetric polls the edge's /metrics until ok(series) holds, for up to 5 s.
func waitMetric(t *testing.T, edgeAddr, series string, ok func(float64) bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		v := metric(t, edgeAddr, series)
		if ok(v) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s = %v", what, series, v)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestQuietSocketsPark: sockets quiet for EDGESVC_PARK_AFTER give up their reading
// goroutine, and yet answer messages, keepalive pings, closes and revocations as
// before; a client that stops answering pings is dropped.
func TestQuietSocketsPark(t *testing.T) {
	s := newSystem(t, nil, []string{"EDGESVC_PARK_AFTER=100ms", "EDGESVC_PING_PERIOD=300ms"})
	u, pw := s.newUser(t)
	l := s.login(t, u, pw)
	base := metric(t, s.edge.addr, goroutines)

	const n = 100
	socks := make([]*websocket.Conn, n)
	closes := make([]chan error, n)
	for i := range socks {
		socks[i] = mustOpen(t, s.edge.addr, l)
		closes[i] = make(chan error, 1)
	}
	// Clients read all the time, as browsers do, so they answer pings. Their reads
	// also carry the echoes back.
	echoes := make([]chan string, n)
	for i, ws := range socks {
		echoes[i] = make(chan string, 4)
		go func() {
			for {
				_, msg, err := ws.ReadMessage()
				if err != nil {
					closes[i] <- err
					return
				}
				echoes[i] <- string(msg)
			}
		}()
	}
	few := func(v float64) bool { return v < base+n/4 }
	waitMetric(t, s.edge.addr, goroutines, few, fmt.Sprintf("%d quiet sockets still hold goroutines (%v before)", n, base))

	t.Run("parked sockets answer messages and stay up across pings", func(t *testing.T) {
		for round := range 3 {
			time.Sleep(400 * time.Millisecond) // more than a ping period: each socket is pinged and parks again
			for i, ws := range socks {
				text := fmt.Sprintf("round %d socket %d", round, i)
				if err := ws.WriteMessage(websocket.TextMessage, []byte(text)); err != nil {
					t.Fatal(err)
				}
				select {
				case got := <-echoes[i]:
					if got != "You said: "+text {
						t.Fatalf("echo = %q", got)
					}
				case err := <-closes[i]:
					t.Fatalf("socket %d closed: %v", i, err)
				case <-time.After(5 * time.Second):
					t.Fatalf("socket %d: no echo", i)
				}
			}
		}
		if got := metric(t, s.edge.addr, openConns); got != n {
			t.Errorf("open connections = %v, want %d", got, n)
		}
		waitMetric(t, s.edge.addr, goroutines, few, "sockets did not park again after messages")
	})

	t.Run("a parked socket answers a client's ping", func(t *testing.T) {
		ws := mustOpen(t, s.edge.addr, l)
		pong := make(chan string, 1)
		ws.SetPongHandler(func(p string) error { pong <- p; return nil })
		go func() {
			for {
				if _, _, err := ws.ReadMessage(); err != nil {
					return
				}
			}
		}()
		time.Sleep(200 * time.Millisecond) // parked
		if err := ws.WriteControl(websocket.PingMessage, []byte("are you there"), time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		select {
		case p := <-pong:
			if p != "are you there" {
				t.Errorf("pong payload %q", p)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no pong")
		}
		ws.Close()
		waitMetric(t, s.edge.addr, openConns, func(v float64) bool { return v == n }, "closed socket still counted")
	})

	t.Run("a client that stops answering pings is dropped", func(t *testing.T) {
		// A raw TCP client: it completes the handshake, then never reads a frame.
		mute := mustOpen(t, s.edge.addr, l)
		waitMetric(t, s.edge.addr, openConns, func(v float64) bool { return v == n+1 }, "mute socket not counted")
		waitMetric(t, s.edge.addr, openConns, func(v float64) bool { return v == n }, "mute socket never dropped")
		_ = mute.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			if _, _, err := mute.ReadMessage(); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatal("the edge dropped the socket but the client never saw it end")
				}
				break
			}
		}
	})

	t.Run("a revocation closes every parked socket", func(t *testing.T) {
		if _, err := s.admin.RevokeSession(adminCtx(t.Context()), &authv1.RevokeSessionRequest{SessionId: l.GetSession().GetId()}); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for i := range socks {
			wg.Go(func() {
				select {
				case err := <-closes[i]:
					if ce, ok := err.(*websocket.CloseError); !ok || ce.Code != 4401 {
						t.Errorf("socket %d ended with %v, want 4401", i, err)
					}
				case <-time.After(closeWithin):
					t.Errorf("socket %d: no close", i)
				}
			})
		}
		wg.Wait()
		waitMetric(t, s.edge.addr, openConns, func(v float64) bool { return v == 0 }, "connections not released")
		waitMetric(t, s.edge.addr, goroutines, func(v float64) bool { return v <= base+5 }, "goroutines not released")
	})
}
