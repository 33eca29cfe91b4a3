package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestEcho(t *testing.T) {
	s := newSystem(t, nil, append([]string{"EDGESVC_READ_LIMIT=4096", "EDGESVC_SEND_QUEUE=8", "EDGESVC_WRITE_TIMEOUT=2s"}, unpaced...))
	u, pw := s.newUser(t)
	l := s.login(t, u, pw)

	t.Run("order over 500 messages", func(t *testing.T) {
		ws := mustOpen(t, s.edge.addr, l)
		const n = 500
		go func() {
			for i := range n {
				if err := ws.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, "message %d", i)); err != nil {
					return
				}
			}
		}()
		_ = ws.SetReadDeadline(time.Now().Add(20 * time.Second))
		for i := range n {
			_, got, err := ws.ReadMessage()
			if err != nil {
				t.Fatalf("after %d echoes: %v", i, err)
			}
			if want := fmt.Sprintf("You said: message %d", i); string(got) != want {
				t.Fatalf("echo %d = %q, want %q", i, got, want)
			}
		}
	})
	t.Run("unicode and empty", func(t *testing.T) {
		ws := mustOpen(t, s.edge.addr, l)
		for _, text := range []string{"héllo wörld", "你好，世界", "emoji 🎉👩‍💻", "", "tab\tnew\nline", `<script>alert(1)</script>`} {
			echo(t, ws, text)
		}
	})
	t.Run("message at the read limit is echoed", func(t *testing.T) {
		ws := mustOpen(t, s.edge.addr, l)
		echo(t, ws, strings.Repeat("x", 4096))
	})
	t.Run("binary frame closes with 1003", func(t *testing.T) {
		ws := mustOpen(t, s.edge.addr, l)
		if err := ws.WriteMessage(websocket.BinaryMessage, []byte{1, 2, 3}); err != nil {
			t.Fatal(err)
		}
		expectClose(t, ws, websocket.CloseUnsupportedData, "", 5*time.Second)
	})
	t.Run("message over the read limit closes with 1009", func(t *testing.T) {
		ws := mustOpen(t, s.edge.addr, l)
		if err := ws.WriteMessage(websocket.TextMessage, []byte(strings.Repeat("x", 4097))); err != nil {
			t.Fatal(err)
		}
		expectClose(t, ws, websocket.CloseMessageTooBig, "", 5*time.Second)
	})
	t.Run("message far over the read limit still closes with 1009", func(t *testing.T) {
		ws := mustOpen(t, s.edge.addr, l)
		// 2 MiB: most of it is still unread when the edge refuses the message.
		go func() { _ = ws.WriteMessage(websocket.TextMessage, []byte(strings.Repeat("x", 2<<20))) }()
		expectClose(t, ws, websocket.CloseMessageTooBig, "", 5*time.Second)
	})
	t.Run("invalid UTF-8 closes with 1007", func(t *testing.T) {
		ws := mustOpen(t, s.edge.addr, l)
		if err := ws.WriteMessage(websocket.TextMessage, []byte{0xff, 0xfe}); err != nil {
			t.Fatal(err)
		}
		expectClose(t, ws, websocket.CloseInvalidFramePayloadData, "", 5*time.Second)
	})
	t.Run("client that stops reading is closed with 1013", func(t *testing.T) {
		ws := mustOpen(t, s.edge.addr, l)
		// Send without reading: the loopback buffers fill, then the 8-message send
		// queue, then the edge stops reading from this client too, and a write here
		// times out. Stay away for longer than the edge waits for queue room (1s of
		// the 2s write timeout), then read again.
		msg := strings.Repeat("y", 4000)
		for {
			_ = ws.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
			if err := ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
				break
			}
		}
		time.Sleep(900 * time.Millisecond)
		// Reading again drains the echoes that made it, then the close frame.
		expectClose(t, ws, websocket.CloseTryAgainLater, "", 20*time.Second)
		// Others are unaffected.
		echo(t, mustOpen(t, s.edge.addr, l), "still here")
	})
}
