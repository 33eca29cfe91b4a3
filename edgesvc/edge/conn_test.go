package edge

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestEchoFrameSizes: replies written straight to the socket (Reply's direct path)
// use each of the three length encodings correctly, as a standard client reads them.
func TestEchoFrameSizes(t *testing.T) {
	ws := dialStub(t, newTestEdge(t, "/ws/app/", echo)+"/ws/app/")
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	prefix := len("You said: ")
	for _, n := range []int{0, 1, 125 - prefix, 126 - prefix, 127, 65535 - prefix, 65536 - prefix, 70000, 1 << 20} {
		text := strings.Repeat("é", n/2) + strings.Repeat("x", n%2)
		if err := ws.WriteMessage(websocket.TextMessage, []byte(text)); err != nil {
			t.Fatal(err)
		}
		_, got, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("size %d: %v", n, err)
		}
		if string(got) != "You said: "+text {
			t.Fatalf("size %d: echo of %d bytes differs", n, len(got))
		}
	}
}

// pushReply sends a push, a reply and another push for every message.
type pushReply struct{ Echo }

func (pushReply) Receive(_ context.Context, c *Conn, m Message) error {
	text := m.Text
	if err := c.Send(text + " a"); err != nil {
		return err
	}
	if err := c.Reply(text + " b"); err != nil {
		return err
	}
	return c.Send(text + " c")
}

// TestSendAndReplyKeepOrder: a reply written straight to the socket never overtakes
// a push queued before it, nor is overtaken by one queued after it.
func TestSendAndReplyKeepOrder(t *testing.T) {
	ws := dialStub(t, newTestEdge(t, "/ws/app/", func() Consumer { return pushReply{} })+"/ws/app/")
	const n, window = 300, 10 // at most 10 messages unanswered: 30 pushes fit the queue
	sent := make(chan struct{}, window)
	go func() {
		for i := range n {
			sent <- struct{}{}
			if err := ws.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, "m%d", i)); err != nil {
				return
			}
		}
	}()
	_ = ws.SetReadDeadline(time.Now().Add(20 * time.Second))
	for i := range n {
		for _, part := range []string{"a", "b", "c"} {
			_, got, err := ws.ReadMessage()
			if err != nil {
				t.Fatalf("message %d%s: %v", i, part, err)
			}
			if want := fmt.Sprintf("m%d %s", i, part); string(got) != want {
				t.Fatalf("got %q, want %q", got, want)
			}
		}
		<-sent
	}
}
