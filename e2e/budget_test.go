package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	edgev1 "github.com/gatehouse/gatehouse/gen/gatehouse/edge/v1"
	"github.com/gorilla/websocket"
)

// Memory an edge holds for its clients is bounded both ways, per user and per edge:
// bytes of messages still arriving, bytes queued to send, how long a message may take
// to arrive, and how fast a client's messages are read (a pause, never a drop).

// pin opens a socket for the login on s and sends an unfinished text message of n
// bytes (its frames are not final), as a client that never completes it would.
func pin(t *testing.T, s *system, token string, user int64, n int) *websocket.Conn {
	t.Helper()
	ws, code := dialWS(t, wsURL(s.edge.addr, user), cookieHeader(s.edge.addr, token))
	if ws == nil {
		t.Fatalf("handshake answered %d", code)
	}
	w, err := ws.NextWriter(websocket.TextMessage)
	if err != nil {
		t.Fatal(err)
	}
	// gorilla sends full frames as its buffer fills, none final until Close.
	if _, err := w.Write(bytes.Repeat([]byte("x"), n)); err != nil {
		t.Fatal(err)
	}
	return ws
}

// closeCode waits for ws to end, and returns its close code (1006 without a close
// frame), or 0 if it is still open after within.
func closeCode(t *testing.T, ws *websocket.Conn, within time.Duration) int {
	t.Helper()
	err := readToEnd(ws, within)
	var ce *websocket.CloseError
	var ne net.Error
	switch {
	case errors.As(err, &ce):
		return ce.Code
	case errors.As(err, &ne) && ne.Timeout():
		return 0 // still open
	}
	return websocket.CloseAbnormalClosure
}

func heapInUse(t *testing.T, s *system) float64 {
	return metric(t, s.edge.addr, "go_memstats_heap_inuse_bytes")
}

// TestReadBudgetPerUser: one user's sockets each holding an unfinished message just
// under the read limit hold no more than the user's read budget: past it a socket is
// closed 1013, and the edge's heap stays near its budget (without the bound, 24
// sockets pinned ~24–48 MiB).
func TestReadBudgetPerUser(t *testing.T) {
	s := newSystem(t, nil, []string{"EDGESVC_READ_BUFFER_PER_USER=4194304"}) // 4 MiB; the read limit is 1 MiB
	u, pw := s.newUser(t)
	l := s.login(t, u, pw)
	before := heapInUse(t, s)
	const n = 24
	socks := make([]*websocket.Conn, n)
	for i := range socks {
		socks[i] = pin(t, s, l.GetToken(), u.GetId(), 1000<<10)
	}
	for deadline := time.Now().Add(20 * time.Second); metric(t, s.edge.addr, `gatehouse_edge_budget_closes_total{direction="read",scope="user"}`) < n-4; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%v sockets closed for the user's read budget, want at least %d of %d", metric(t, s.edge.addr, `gatehouse_edge_budget_closes_total{direction="read",scope="user"}`), n-4, n)
		}
	}
	closed := 0
	for _, ws := range socks {
		switch code := closeCode(t, ws, 300*time.Millisecond); code {
		case websocket.CloseTryAgainLater:
			closed++
		case 0: // holds its message, within the budget
		default:
			t.Fatalf("a pinned socket ended with %d, want 1013 or still open", code)
		}
	}
	if closed < n-4 {
		t.Fatalf("%d of %d pinned sockets closed 1013", closed, n)
	}
	grew := heapInUse(t, s) - before
	if grew > 12<<20 {
		t.Fatalf("the edge's heap grew %.1f MiB with a 4 MiB read budget for the user", grew/(1<<20))
	}
	t.Logf("%d sockets each holding an unfinished 1,000 KiB message: %d closed 1013, the edge's heap grew %.1f MiB", n, closed, grew/(1<<20))
	// Another user is not held up by this one.
	other, opw := s.newUser(t)
	echo(t, mustOpen(t, s.edge.addr, s.login(t, other, opw)), "another user")
}

// TestReadBudgetPerEdge: sockets of several users together are bounded by the edge's
// read budget.
func TestReadBudgetPerEdge(t *testing.T) {
	s := newSystem(t, nil, []string{"EDGESVC_READ_BUFFER_PER_USER=0", "EDGESVC_READ_BUFFER=4194304"})
	for range 3 {
		u, pw := s.newUser(t)
		l := s.login(t, u, pw)
		for range 4 {
			pin(t, s, l.GetToken(), u.GetId(), 1000<<10)
		}
	}
	for deadline := time.Now().Add(20 * time.Second); metric(t, s.edge.addr, `gatehouse_edge_budget_closes_total{direction="read",scope="edge"}`) < 6; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%v sockets closed for the edge's read budget, want at least 6 of 12", metric(t, s.edge.addr, `gatehouse_edge_budget_closes_total{direction="read",scope="edge"}`))
		}
	}
	if n := metric(t, s.edge.addr, `gatehouse_edge_budget_closes_total{direction="read",scope="user"}`); n != 0 {
		t.Fatalf("%v closes for a user's budget, which is off", n)
	}
}

// TestReadTimeout: a message begun and not completed within EDGESVC_READ_TIMEOUT
// closes its socket with 1008; a socket idle for longer, and one whose message
// arrives slowly but in time, stay open.
func TestReadTimeout(t *testing.T) {
	s := newSystem(t, nil, []string{"EDGESVC_READ_TIMEOUT=1s"})
	u, pw := s.newUser(t)
	l := s.login(t, u, pw)
	idle := mustOpen(t, s.edge.addr, l)
	slow := mustOpen(t, s.edge.addr, l)
	stuck := pin(t, s, l.GetToken(), u.GetId(), 10<<10)
	// Within time: a message in three frames over 600 ms.
	w, err := slow.NextWriter(websocket.TextMessage)
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range []string{"in ", "good ", "time"} {
		if _, err := w.Write([]byte(part)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond) // the client is slow on purpose
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	readText(t, slow, "You said: in good time")
	if code := closeCode(t, stuck, 10*time.Second); code != websocket.ClosePolicyViolation {
		t.Fatalf("an unfinished message: socket ended with %d, want 1008", code)
	}
	if n := metric(t, s.edge.addr, "gatehouse_edge_read_timeouts_total"); n != 1 {
		t.Fatalf("read timeouts %v, want 1", n)
	}
	echo(t, idle, "idle for longer than the timeout")
}

// TestMessageRate: past a connection's message rate, reading pauses and nothing is
// lost: every message is answered, in order; the pause is counted. The per-user rate
// bounds a user's sockets together the same way.
func TestMessageRate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		env   []string
		socks int
	}{
		{"per connection", []string{"EDGESVC_MAX_MESSAGES_PER_SECOND=50", "EDGESVC_MESSAGE_BURST=10", "EDGESVC_MAX_MESSAGES_PER_SECOND_PER_USER=0"}, 1},
		{"per user", []string{"EDGESVC_MAX_MESSAGES_PER_SECOND=0", "EDGESVC_MESSAGE_BURST=10", "EDGESVC_MAX_MESSAGES_PER_SECOND_PER_USER=50"}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSystem(t, nil, tc.env)
			u, pw := s.newUser(t)
			l := s.login(t, u, pw)
			var socks []*websocket.Conn
			for range tc.socks {
				socks = append(socks, mustOpen(t, s.edge.addr, l))
			}
			const n = 40
			for _, ws := range socks {
				for i := range n {
					if err := ws.WriteMessage(websocket.TextMessage, []byte(fmt.Sprint(i))); err != nil {
						t.Fatal(err)
					}
				}
			}
			for _, ws := range socks {
				for i := range n {
					readText(t, ws, fmt.Sprint("You said: ", i))
				}
			}
			if p := metric(t, s.edge.addr, "gatehouse_edge_read_paused_seconds_total"); p <= 0 {
				t.Fatalf("%d messages on %d sockets at 50/s: paused %v s", n*tc.socks, tc.socks, p)
			}
		})
	}
}

// TestChatFloodLeavesOthersOpen: one member sending thousands of messages as fast as
// it can is read at its rate; the other member, reading all along, is not closed for
// falling behind (it was, 1013, before reading was paced).
func TestChatFloodLeavesOthersOpen(t *testing.T) {
	s := newSystem(t, nil, []string{"EDGESVC_MAX_MESSAGES_PER_SECOND=1000", "EDGESVC_MESSAGE_BURST=50"})
	a, apw := s.newUser(t)
	b, bpw := s.newUser(t)
	wa := openChat(t, s, "flood", s.login(t, a, apw))
	wb := openChat(t, s, "flood", s.login(t, b, bpw))
	const n = 3000
	got := make(chan error, 1)
	go func() { // b reads everything until a's last message
		for {
			_ = wb.SetReadDeadline(time.Now().Add(20 * time.Second))
			_, m, err := wb.ReadMessage()
			if err != nil {
				got <- err
				return
			}
			if strings.Contains(string(m), fmt.Sprintf(`"m%d"`, n-1)) {
				got <- nil
				return
			}
		}
	}()
	go func() { // a's frames go unread: only b matters here
		for {
			if _, _, err := wa.ReadMessage(); err != nil {
				return
			}
		}
	}()
	for i := range n {
		if err := wa.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"message":"m%d"}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-got; err != nil {
		t.Fatalf("the other member, during the flood: %v", err)
	}
}

// TestSendBudgets: bytes queued for sockets that do not read are bounded by their
// user's send budget, and by the edge's across users, below what their sockets' own
// buffers allow.
func TestSendBudgets(t *testing.T) {
	for _, tc := range []struct {
		scope string
		env   []string
		users int
	}{
		{"user", []string{"EDGESVC_SEND_BUFFER_PER_USER=8388608"}, 1},                                // 8 MiB; 4 MiB a socket
		{"edge", []string{"EDGESVC_SEND_BUFFER_PER_USER=0", "EDGESVC_SEND_BUFFER_TOTAL=8388608"}, 3}, // 8 MiB for all
	} {
		t.Run(tc.scope, func(t *testing.T) {
			s := newSystem(t, nil, tc.env)
			// Clients that read nothing, with small receive windows: what is sent stays queued.
			d := websocket.Dialer{NetDialContext: (&net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
				return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
			}}).DialContext}
			for range tc.users {
				u, pw := s.newUser(t)
				l := s.login(t, u, pw)
				for range 6 / tc.users {
					ws, _, err := d.Dial(wsURL(s.edge.addr, u.GetId()), cookieHeader(s.edge.addr, l.GetToken()))
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { ws.Close() })
				}
			}
			api := edgeAPI(t, s)
			ctx := apiCtx(context.Background())
			list, err := api.ListConnections(ctx, &edgev1.ListConnectionsRequest{})
			if err != nil || len(list.GetConnections()) != 6 {
				t.Fatalf("ListConnections: %v %v", list, err)
			}
			// A message for each socket of its own (as a consumer's replies are): a push to
			// a user would be one frame shared by their sockets, which counts against each
			// socket's own buffer but not against the budgets (its memory is one frame's).
			// Round by round the sockets fill evenly: their sum passes 8 MiB when each
			// holds about 1.4 MiB beyond what its kernel buffers took, long before one
			// holds its own 4 MiB.
			big := strings.Repeat("y", 900<<10)
			for range 10 {
				for _, c := range list.GetConnections() {
					if _, err := api.Send(ctx, &edgev1.SendRequest{Target: connTarget(c.GetId()), Payload: &edgev1.SendRequest_Text{Text: big}}); err != nil {
						t.Fatal(err)
					}
				}
			}
			if n := metric(t, s.edge.addr, `gatehouse_edge_budget_closes_total{direction="send",scope="`+tc.scope+`"}`); n < 1 {
				t.Fatalf("6 sockets not reading, 10 pushes of 900 KiB each, an 8 MiB budget: %v closes for it (push_overflow: %v)", n,
					metric(t, s.edge.addr, `gatehouse_edge_slow_closes_total{reason="push_overflow"}`))
			}
		})
	}
}

// clientFrame is a masked client frame: fin, opcode, payload.
func clientFrame(fin bool, op byte, payload []byte) []byte {
	b := []byte{op}
	if fin {
		b[0] |= 0x80
	}
	b = append(b, 0x80|byte(len(payload)), 1, 2, 3, 4) // payloads under 126 bytes here
	for i, p := range payload {
		b = append(b, p^[]byte{1, 2, 3, 4}[i%4])
	}
	return b
}

// TestReadTimeoutBehindAPing: a ping that arrives in pieces neither shields the
// message behind it from EDGESVC_READ_TIMEOUT nor puts an idle socket under it.
func TestReadTimeoutBehindAPing(t *testing.T) {
	s := newSystem(t, nil, []string{"EDGESVC_READ_TIMEOUT=1s"})
	u, pw := s.newUser(t)
	l := s.login(t, u, pw)
	ping := clientFrame(true, 0x9, []byte("hi"))

	// A ping in two pieces, then nothing for longer than the timeout: still open.
	idle := mustOpen(t, s.edge.addr, l)
	raw := idle.UnderlyingConn()
	if _, err := raw.Write(ping[:3]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the rest of the ping comes later, as over a slow link
	if _, err := raw.Write(ping[3:]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // past the timeout, idle
	echo(t, idle, "idle after a ping in pieces")

	// A ping in two pieces, then a message begun and never finished: 1008.
	stuck := mustOpen(t, s.edge.addr, l)
	raw = stuck.UnderlyingConn()
	if _, err := raw.Write(ping[:3]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if _, err := raw.Write(append(ping[3:], clientFrame(false, 0x1, []byte("never finished"))...)); err != nil {
		t.Fatal(err)
	}
	if code := closeCode(t, stuck, 10*time.Second); code != websocket.ClosePolicyViolation {
		t.Fatalf("a message begun behind a ping and never finished: ended with %d, want 1008", code)
	}
}
