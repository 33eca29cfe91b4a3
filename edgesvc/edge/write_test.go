package edge

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Every frame the edge sends goes through one writer: a frame the socket took only
// part of is finished before any ping, pong or close, so the stream stays valid.

// TestControlFramesWaitForAFrameBegun: while a client does not read, big pushes are
// begun and left unfinished by the socket; the client's pings and the edge's own
// pings are answered and sent meanwhile. When the client reads again it gets every
// message whole, the pongs and the edge's pings.
func TestControlFramesWaitForAFrameBegun(t *testing.T) {
	// A ping period of 1 s, not less: a client silent for a whole period is dropped,
	// and under the race detector on a busy machine this client's 30 ms pings were
	// once held up past 200 ms.
	srv, base := newTestServerConfig(t, Config{ReadLimit: 1 << 20, SendBuffer: 8 << 20, PingPeriod: time.Second},
		"/ws/g/{group}/", func() Consumer { return member{} })
	a := dialAs(t, base, "-", "u1s1")
	var pongs atomic.Int64
	var lastPong atomic.Value
	a.SetPongHandler(func(p string) error { pongs.Add(1); lastPong.Store(p); return nil })
	var pings atomic.Int64
	a.SetPingHandler(func(p string) error {
		pings.Add(1)
		return a.WriteControl(websocket.PongMessage, []byte(p), time.Now().Add(time.Second))
	})
	const n = 6
	msg := func(i int) string { return fmt.Sprint(i, strings.Repeat("m", 1<<20-16)) }
	for i := range n {
		if err := srv.Send(context.Background(), ToConnection(a.id), msg(i)); err != nil {
			t.Fatal(err)
		}
	}
	// The client pings every 30 ms throughout (which also keeps the edge from
	// dropping it for not answering its pings while it does not read).
	stop := make(chan struct{})
	pinged := make(chan struct{})
	go func() {
		defer close(pinged)
		for i := 0; ; i++ {
			if a.WriteControl(websocket.PingMessage, []byte(fmt.Sprint("ping ", i)), time.Now().Add(time.Second)) != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(30 * time.Millisecond):
			}
		}
	}()
	time.Sleep(1500 * time.Millisecond) // not reading: the edge pings meanwhile
	_ = a.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := range n {
		_, got, err := a.ReadMessage()
		if err != nil || string(got) != msg(i) {
			t.Fatalf("message %d: %d bytes, %v", i, len(got), err)
		}
	}
	close(stop)
	<-pinged
	// An echo answered after the pings were read comes after their pongs.
	if err := a.WriteMessage(websocket.TextMessage, []byte("after")); err != nil {
		t.Fatal(err)
	}
	if _, got, err := a.ReadMessage(); err != nil || string(got) != "You said: after" {
		t.Fatalf("echo %q, %v", got, err)
	}
	if last, _ := lastPong.Load().(string); pongs.Load() == 0 || !strings.HasPrefix(last, "ping ") {
		t.Fatalf("%d pongs, the last %q", pongs.Load(), last)
	}
	if pings.Load() == 0 {
		t.Fatal("the edge sent no ping in 1.5 s with a ping period of 1 s")
	}
}

// TestClientCloseIsAnswered: a close from the client is answered with its code, even
// with pushes queued (they are dropped), and the connection then ends.
func TestClientCloseIsAnswered(t *testing.T) {
	srv, base := newTestServerConfig(t, Config{ReadLimit: 1 << 20, SendBuffer: 8 << 20}, "/ws/g/{group}/", func() Consumer { return member{} })
	for _, queued := range []int{0, 8} {
		a := dialAs(t, base, "-", "u1s1")
		for i := range queued {
			if err := srv.Send(context.Background(), ToConnection(a.id), fmt.Sprint(i, strings.Repeat("q", 1<<20-16))); err != nil {
				t.Fatal(err)
			}
		}
		if err := a.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4000, "bye"), time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		_ = a.SetReadDeadline(time.Now().Add(5 * time.Second))
		var err error
		for err == nil {
			_, _, err = a.ReadMessage() // what the socket had taken before the close
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != 4000 {
			t.Fatalf("with %d queued: %v, want the close answered with 4000", queued, err)
		}
		if _, err := a.NetConn().Read(make([]byte, 1)); err == nil {
			t.Fatalf("with %d queued: the connection is still open after the close was answered", queued)
		}
	}
}
