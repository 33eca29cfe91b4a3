package edge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// member joins the group in its path in Connect and tells the client its id first.
type member struct{ Echo }

func (member) Connect(_ context.Context, c *Conn, r *http.Request) error {
	if g := r.PathValue("group"); g != "-" {
		if err := c.Join(g); err != nil {
			return &Refusal{Status: http.StatusBadRequest, Reason: "BAD_GROUP", Message: err.Error()}
		}
	}
	return c.Send("id " + c.ID())
}

// client is a test socket that knows its connection id.
type client struct {
	*websocket.Conn
	id string
}

func dialAs(t *testing.T, base, group, token string) *client {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(base+"/ws/g/"+group+"/", http.Header{"Authorization": {"Bearer " + token}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, hello, err := ws.ReadMessage()
	if err != nil || !strings.HasPrefix(string(hello), "id ") {
		t.Fatalf("greeting = %q, %v", hello, err)
	}
	return &client{Conn: ws, id: strings.TrimPrefix(string(hello), "id ")}
}

func (c *client) expect(t *testing.T, want ...string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for _, w := range want {
		_, got, err := c.ReadMessage()
		if err != nil || string(got) != w {
			t.Fatalf("%s: got %q, %v; want %q", c.id, got, err, w)
		}
	}
}

// awaitGroup waits until group has n members on srv.
func awaitGroup(t *testing.T, srv *Server, group string, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(srv.conns.Group(group)) != n {
		if time.Now().After(deadline) {
			t.Fatalf("group %s has %d members, want %d", group, len(srv.conns.Group(group)), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSendTargets(t *testing.T) {
	srv, base := newTestServer(t, "/ws/g/{group}/", func() Consumer { return member{} })
	ctx := t.Context()
	// alice: three tabs, two in session 1; bob: one tab.
	a1, a2, a3 := dialAs(t, base, "room", "u1s1"), dialAs(t, base, "room", "u1s1"), dialAs(t, base, "-", "u1s2")
	b := dialAs(t, base, "room", "u2s3")
	if !strings.HasPrefix(a1.id, srv.NodeID()+".") || a1.id == a2.id {
		t.Fatalf("connection ids %q, %q on node %q", a1.id, a2.id, srv.NodeID())
	}

	mustSend := func(to Target, text string, exclude ...string) {
		t.Helper()
		if err := srv.Send(ctx, to, text, exclude...); err != nil {
			t.Fatal(err)
		}
	}
	mustSend(ToUser(1), "to alice")
	mustSend(ToSession("s1"), "to session 1")
	mustSend(ToGroup("room"), "to the room", b.id)
	mustSend(ToConnection(b.id), "to bob's tab")
	mustSend(ToGroup("room"), "to everyone in the room")
	mustSend(ToUser(99), "to nobody")
	mustSend(ToGroup("empty"), "to nobody")
	// Each connection gets what matched it, in the order the edge accepted the sends.
	a1.expect(t, "to alice", "to session 1", "to the room", "to everyone in the room")
	a2.expect(t, "to alice", "to session 1", "to the room", "to everyone in the room")
	a3.expect(t, "to alice")
	b.expect(t, "to bob's tab", "to everyone in the room")
	// ...and nothing else: an echo comes next.
	for _, c := range []*client{a3, b} {
		if err := c.WriteMessage(websocket.TextMessage, []byte("ping")); err != nil {
			t.Fatal(err)
		}
		c.expect(t, "You said: ping")
	}
}

func TestSendErrors(t *testing.T) {
	srv, _ := newTestServer(t, "/ws/g/{group}/", func() Consumer { return member{} })
	ctx := t.Context()
	for name, err := range map[string]error{
		"user 0":            srv.Send(ctx, ToUser(0), "x"),
		"empty session":     srv.Send(ctx, ToSession(""), "x"),
		"empty connection":  srv.Send(ctx, ToConnection(""), "x"),
		"zero target":       srv.Send(ctx, Target{}, "x"),
		"bad group":         srv.Send(ctx, ToGroup("no spaces"), "x"),
		"group add a group": srv.GroupAdd(ctx, "room", ToGroup("other")),
		"group add bad":     srv.GroupAdd(ctx, "a/b", ToUser(1)),
		"discard a group":   srv.GroupDiscard(ctx, "room", ToGroup("other")),
		"discard bad":       srv.GroupDiscard(ctx, strings.Repeat("x", 101), ToUser(1)),
		"code 4401":         srv.Disconnect(ctx, ToUser(1), CloseSessionEnded, ""),
		"code 1000":         srv.Disconnect(ctx, ToUser(1), 1000, ""),
		"code 5000":         srv.Disconnect(ctx, ToUser(1), 5000, ""),
		"reason too long":   srv.Disconnect(ctx, ToUser(1), 4000, strings.Repeat("x", 121)),
	} {
		want := map[string]error{
			"bad group": ErrInvalidGroup, "group add bad": ErrInvalidGroup, "discard bad": ErrInvalidGroup,
			"code 4401": ErrInvalidCloseCode, "code 1000": ErrInvalidCloseCode, "code 5000": ErrInvalidCloseCode,
			"reason too long": ErrReasonTooLong,
		}[name]
		if want == nil {
			want = ErrInvalidTarget
		}
		if !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", name, err, want)
		}
	}
}

func TestGroupAddDiscardDisconnect(t *testing.T) {
	srv, base := newTestServer(t, "/ws/g/{group}/", func() Consumer { return member{} })
	ctx := t.Context()
	a, b := dialAs(t, base, "-", "u1s1"), dialAs(t, base, "-", "u2s2")
	if err := srv.GroupAdd(ctx, "news", ToUser(1)); err != nil {
		t.Fatal(err)
	}
	if err := srv.GroupAdd(ctx, "news", ToConnection(b.id)); err != nil {
		t.Fatal(err)
	}
	// GroupAdd has returned: a Send that begins now reaches the new members.
	if err := srv.Send(ctx, ToGroup("news"), "headline"); err != nil {
		t.Fatal(err)
	}
	a.expect(t, "headline")
	b.expect(t, "headline")
	if err := srv.GroupDiscard(ctx, "news", ToSession("s1")); err != nil {
		t.Fatal(err)
	}
	if err := srv.Send(ctx, ToGroup("news"), "second"); err != nil {
		t.Fatal(err)
	}
	b.expect(t, "second")

	// Disconnect: the code and reason reach the client after what was sent before.
	if err := srv.Send(ctx, ToUser(1), "last words"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Disconnect(ctx, ToUser(1), 0, "kicked by an operator"); err != nil {
		t.Fatal(err)
	}
	a.expect(t, "last words")
	if ce := readClose(t, a.Conn); ce.Code != 4000 || ce.Text != "kicked by an operator" {
		t.Fatalf("close = %d %q, want 4000 and the reason", ce.Code, ce.Text)
	}
	if err := srv.Disconnect(ctx, ToGroup("news"), 4321, ""); err != nil {
		t.Fatal(err)
	}
	if ce := readClose(t, b.Conn); ce.Code != 4321 {
		t.Fatalf("close = %d, want 4321", ce.Code)
	}
	awaitGroup(t, srv, "news", 0)
}

// TestMembershipEndsWithTheConnection: a member that closes, whose session ends, or
// whose edge shuts down is gone from its groups.
func TestMembershipEndsWithTheConnection(t *testing.T) {
	srv, base := newTestServer(t, "/ws/g/{group}/", func() Consumer { return member{} })
	a, b, c := dialAs(t, base, "room", "u1s1"), dialAs(t, base, "room", "u2s2"), dialAs(t, base, "room", "u3s3")
	awaitGroup(t, srv, "room", 3)
	a.Close()
	awaitGroup(t, srv, "room", 2)
	(*holder)(srv).EndSession("s2", "revoked")
	if ce := readClose(t, b.Conn); ce.Code != CloseSessionEnded {
		t.Fatalf("close = %d, want 4401", ce.Code)
	}
	awaitGroup(t, srv, "room", 1)
	go func() { _ = srv.Shutdown(context.Background()) }()
	if ce := readClose(t, c.Conn); ce.Code != CloseGoingAway {
		t.Fatalf("close = %d, want 1001", ce.Code)
	}
	c.Close()
	awaitGroup(t, srv, "room", 0)
}

// TestPushWakesParkedSocket: a push reaches a socket that has parked (no goroutine),
// and the socket still reads afterwards.
func TestPushWakesParkedSocket(t *testing.T) {
	srv, base := newTestServer(t, "/ws/g/{group}/", func() Consumer { return member{} })
	a := dialAs(t, base, "-", "u1s1")
	time.Sleep(300 * time.Millisecond) // a new socket parks after 100 ms of quiet
	if err := srv.Send(t.Context(), ToConnection(a.id), "while parked"); err != nil {
		t.Fatal(err)
	}
	a.expect(t, "while parked")
	if err := a.WriteMessage(websocket.TextMessage, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	a.expect(t, "You said: hi")
}

func TestJoinLimit(t *testing.T) {
	srv, base := newTestServer(t, "/ws/g/{group}/", func() Consumer { return member{} })
	a := dialAs(t, base, "g0", "u1s1")
	for i := 1; i < 100; i++ {
		if err := srv.GroupAdd(t.Context(), fmt.Sprintf("g%d", i), ToConnection(a.id)); err != nil {
			t.Fatalf("group %d: %v", i+1, err)
		}
	}
	if err := srv.GroupAdd(t.Context(), "g100", ToConnection(a.id)); !errors.Is(err, ErrTooManyGroups) {
		t.Fatalf("group 101: %v, want ErrTooManyGroups", err)
	}
	e := srv.conns.ByID(a.id)
	if g := srv.conns.Groups(e); len(g) != 100 {
		t.Fatalf("%d groups", len(g))
	}
	// A bad name in Connect is the consumer's to refuse.
	_, resp, err := websocket.DefaultDialer.Dial(base+"/ws/g/a.b*/", http.Header{"Authorization": {"Bearer u1s1"}})
	if err == nil || resp.StatusCode != http.StatusBadRequest || resp.Header.Get(ReasonHeader) != "BAD_GROUP" {
		t.Fatalf("dial with a bad group = %v, %v", resp, err)
	}
}

// holdingConnect holds Connect until release is closed, then greets.
type holdingConnect struct {
	Echo
	entered chan struct{}
	release chan struct{}
}

func (h holdingConnect) Connect(_ context.Context, c *Conn, _ *http.Request) error {
	close(h.entered)
	<-h.release
	return c.Send("first")
}

// TestPushesWaitForConnect: a push made while Connect runs does not reach the
// connection (it is not live yet), so what Connect sends comes first; pushes after it
// accepted arrive.
func TestPushesWaitForConnect(t *testing.T) {
	h := holdingConnect{entered: make(chan struct{}), release: make(chan struct{})}
	srv, base := newTestServer(t, "/ws/hold/", func() Consumer { return h })
	dialed := make(chan *websocket.Conn, 1)
	go func() {
		ws, _, err := websocket.DefaultDialer.Dial(base+"/ws/hold/", http.Header{"Authorization": {"Bearer u1s1"}})
		if err != nil {
			t.Error(err)
		}
		dialed <- ws
	}()
	<-h.entered
	if err := srv.Send(t.Context(), ToUser(1), "during connect"); err != nil {
		t.Fatal(err)
	}
	if p, err := srv.ListConnections(t.Context(), nil, nil, 0); err != nil || len(p.Connections) != 0 {
		t.Fatalf("listed %v, %v while Connect runs; want nothing", p.Connections, err)
	}
	close(h.release)
	ws := <-dialed
	if ws == nil {
		t.FailNow()
	}
	defer ws.Close()
	if err := srv.Send(t.Context(), ToUser(1), "after"); err != nil {
		t.Fatal(err)
	}
	c := &client{Conn: ws, id: "hold"}
	c.expect(t, "first", "after")
}

// panicky panics in Connect.
type panicky struct{ Echo }

func (panicky) Connect(context.Context, *Conn, *http.Request) error { panic("consumer bug") }

// TestConnectPanicReleases: a consumer that panics in Connect leaves nothing
// registered, so Shutdown does not wait for it.
func TestConnectPanicReleases(t *testing.T) {
	srv, base := newTestServer(t, "/ws/panic/", func() Consumer { return panicky{} })
	if _, _, err := websocket.DefaultDialer.Dial(base+"/ws/panic/", http.Header{"Authorization": {"Bearer u1s1"}}); err == nil {
		t.Fatal("a handshake whose consumer panicked was upgraded")
	}
	if n := len(srv.conns.All()); n != 0 {
		t.Fatalf("%d connections registered after the panic", n)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown after a panicking Connect: %v", err)
	}
}

// TestSendMetrics: sends are counted by target kind, and groups and memberships are
// visible at scrape time.
func TestSendMetrics(t *testing.T) {
	srv, base := newTestServer(t, "/ws/g/{group}/", func() Consumer { return member{} })
	a, b := dialAs(t, base, "room", "u1s1"), dialAs(t, base, "room", "u2s2")
	_ = dialAs(t, base, "other", "u2s2")
	for _, to := range []Target{ToUser(1), ToGroup("room"), ToGroup("room"), ToConnection(b.id), ToSession("s1")} {
		if err := srv.Send(t.Context(), to, "x"); err != nil {
			t.Fatal(err)
		}
	}
	a.expect(t, "x", "x", "x", "x")
	body := scrape(t, srv)
	for _, want := range []string{
		`gatehouse_edge_sends_total{target="user"} 1`, `gatehouse_edge_sends_total{target="group"} 2`,
		`gatehouse_edge_sends_total{target="connection"} 1`, `gatehouse_edge_sends_total{target="session"} 1`,
		`gatehouse_edge_groups 2`, `gatehouse_edge_group_memberships 3`,
		`gatehouse_edge_send_buffer_bytes_count`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics has no %s", want)
		}
	}
}

func scrape(t *testing.T, srv *Server) string {
	t.Helper()
	rec := httptest.NewRecorder()
	srv.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}
