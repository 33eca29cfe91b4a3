package edge

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Outgoing data is bounded in bytes per connection (Config.SendBuffer).

// readUntilClose reads until the close frame and returns its code and the messages.
func readUntilClose(t *testing.T, ws *websocket.Conn) (int, []string) {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(20 * time.Second))
	var got []string
	for {
		_, m, err := ws.ReadMessage()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code, got
		}
		if err != nil {
			t.Fatalf("after %d messages: %v, want a close frame", len(got), err)
		}
		got = append(got, string(m))
	}
}

// TestPushOverflowCloses1013: pushes to a client that does not read never hold more
// than the send buffer (plus the one message an empty buffer takes); the push that
// does not fit closes it with 1013, counted.
func TestPushOverflowCloses1013(t *testing.T) {
	const limit = 128 << 10
	srv, base := newTestServerConfig(t, Config{ReadLimit: 64 << 10, SendBuffer: limit}, "/ws/g/{group}/", func() Consumer { return member{} })
	a := dialAs(t, base, "-", "u1s1")
	e := srv.conns.ByID(a.id)
	msg := strings.Repeat("x", 16<<10)
	var most int64
	pushes := 0
	for ; pushes < 10000; pushes++ {
		if err := e.Conn.sock.Send(msg); err != nil {
			break
		}
		most = max(most, e.Conn.sock.QueuedBytes())
	}
	if pushes == 10000 {
		t.Fatal("10,000 pushes of 16 KiB to a client that does not read were all taken")
	}
	if most > limit {
		t.Fatalf("%d bytes queued for one connection, over its %d-byte send buffer", most, limit)
	}
	if code, _ := readUntilClose(t, a.Conn); code != CloseTryAgainLater {
		t.Fatalf("closed with %d, want 1013", code)
	}
	if n := testutil.ToFloat64(srv.metrics.Socket.SlowCloses.WithLabelValues("push_overflow")); n != 1 {
		t.Fatalf("push_overflow closes counted: %v, want 1", n)
	}
}

// TestOneMessageAlwaysFits: a message larger than the whole buffer is still taken
// when nothing waits.
func TestOneMessageAlwaysFits(t *testing.T) {
	srv, base := newTestServerConfig(t, Config{ReadLimit: 64 << 10, SendBuffer: 128 << 10}, "/ws/g/{group}/", func() Consumer { return member{} })
	a := dialAs(t, base, "-", "u1s1")
	// Through the API a push is at most ReadLimit (half the buffer at most)...
	if err := srv.Send(t.Context(), ToConnection(a.id), strings.Repeat("y", 100<<10)); !errors.Is(err, ErrPayloadTooLarge) {
		t.Fatalf("a push over the read limit: %v, want ErrPayloadTooLarge", err)
	}
	// ...but the socket takes any one message into an empty buffer.
	e := srv.conns.ByID(a.id)
	if err := e.Conn.sock.Send(strings.Repeat("z", 200<<10)); err != nil {
		t.Fatalf("one 200 KiB message into an empty 128 KiB buffer: %v", err)
	}
	a.expect(t, strings.Repeat("z", 200<<10))
}

// TestReplyPausesReading: a client that sends fast and does not read its answers is
// read no faster than it takes them; past half the write timeout it is closed with
// 1013 (reply_timeout, or write_stalled when the answer being written straight to
// the socket is what stalls), after the answers already queued.
func TestReplyPausesReading(t *testing.T) {
	srv, base := newTestServerConfig(t, Config{ReadLimit: 64 << 10, SendBuffer: 128 << 10, WriteWait: 600 * time.Millisecond},
		"/ws/g/{group}/", func() Consumer { return member{} })
	a := dialAs(t, base, "-", "u1s1")
	msg := strings.Repeat("q", 32<<10)
	var wg sync.WaitGroup
	wg.Go(func() { // the client's writes block once the edge stops reading
		for range 2000 {
			_ = a.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if a.WriteMessage(websocket.TextMessage, []byte(msg)) != nil {
				return
			}
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	slow := func() float64 {
		return testutil.ToFloat64(srv.metrics.Socket.SlowCloses.WithLabelValues("reply_timeout")) +
			testutil.ToFloat64(srv.metrics.Socket.SlowCloses.WithLabelValues("write_stalled"))
	}
	for slow() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("no slow-client close within 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	code, got := readUntilClose(t, a.Conn)
	// A reply that waited too long for room closes with 1013. If instead the write
	// deadline passed in the middle of a frame (a loaded machine: the race run hit
	// it), a close frame may not fit after the half-written one, and the socket is
	// cut: 1006 is then right too.
	stalled := testutil.ToFloat64(srv.metrics.Socket.SlowCloses.WithLabelValues("write_stalled")) == 1
	if code != CloseTryAgainLater && !(stalled && code == websocket.CloseAbnormalClosure) {
		t.Fatalf("closed with %d after %d answers (write stalled: %v), want 1013", code, len(got), stalled)
	}
	for i, m := range got {
		if m != "You said: "+msg {
			t.Fatalf("answer %d is not an echo (%d bytes)", i, len(m))
		}
	}
	wg.Wait()
}

// TestSlowMemberDoesNotDelayOthers: a broadcast to a group in which one member does
// not read reaches every other member with every message, in order; the slow one is
// closed with 1013; the sender never waits.
func TestSlowMemberDoesNotDelayOthers(t *testing.T) {
	srv, base := newTestServerConfig(t, Config{ReadLimit: 64 << 10, SendBuffer: 256 << 10}, "/ws/g/{group}/", func() Consumer { return member{} })
	slow := dialAs(t, base, "room", "u1s1")
	fast := []*client{dialAs(t, base, "room", "u2s2"), dialAs(t, base, "room", "u3s3")}
	const n = 400 // 24 MB for each member: more than any socket buffer takes
	payload := strings.Repeat("p", 60<<10)
	var read [2]atomic.Int64
	var wg sync.WaitGroup
	for k, c := range fast {
		wg.Go(func() {
			_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
			for i := range n {
				_, got, err := c.ReadMessage()
				if err != nil || string(got) != fmt.Sprint(i, payload) {
					t.Errorf("%s message %d: %d bytes, %v", c.id, i, len(got), err)
					return
				}
				read[k].Add(1)
			}
		})
	}
	var sending time.Duration
	for i := range n {
		// Paced by the readers that keep up (a burst larger than their buffers would
		// close them too, rightly): the slow member falls behind alone.
		for deadline := time.Now().Add(10 * time.Second); read[0].Load() < int64(i-2) || read[1].Load() < int64(i-2); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) || t.Failed() {
				t.Fatalf("fast members stuck at %d, %d of %d", read[0].Load(), read[1].Load(), i)
			}
		}
		start := time.Now()
		if err := srv.Send(context.Background(), ToGroup("room"), fmt.Sprint(i, payload)); err != nil {
			t.Fatal(err)
		}
		sending += time.Since(start)
	}
	wg.Wait()
	if sending > 5*time.Second {
		t.Fatalf("%d sends took %s in all: the sender waited for a client", n, sending)
	}
	if code, _ := readUntilClose(t, slow.Conn); code != CloseTryAgainLater {
		t.Fatalf("the slow member closed with %d, want 1013", code)
	}
}
