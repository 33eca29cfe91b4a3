package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	edgev1 "github.com/gatehouse/gatehouse/gen/gatehouse/edge/v1"
	"github.com/gorilla/websocket"
	"google.golang.org/grpc/codes"
)

// Several edges and authsvc replicas on one PostgreSQL and one NATS, all real
// processes: what one edge is asked reaches the connections of the other.

// natsServer is a nats-server the test runs, on a port it keeps across restarts.
type natsServer struct {
	t    *testing.T
	addr string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  strings.Builder
}

// natsBin finds the pinned nats-server: beside the services, in bin/, or on PATH.
func natsBin(t *testing.T) string {
	for _, p := range []string{filepath.Join(binDir, "nats-server"), "../bin/nats-server"} {
		if _, err := os.Stat(p); err == nil {
			abs, _ := filepath.Abs(p)
			return abs
		}
	}
	p, err := exec.LookPath("nats-server")
	if err != nil {
		t.Fatal("no nats-server: run make test (it installs the pinned one into bin/)")
	}
	return p
}

// startNATS runs a nats-server on a free loopback port until the test ends.
func startNATS(t *testing.T) *natsServer {
	n := &natsServer{t: t, addr: freeAddr(t)}
	n.start()
	t.Cleanup(func() {
		n.kill()
		if t.Failed() {
			n.mu.Lock()
			t.Logf("--- nats-server log ---\n%s", n.log.String())
			n.mu.Unlock()
		}
	})
	return n
}

func (n *natsServer) url() string { return "nats://" + n.addr }

// start runs the server and waits until it takes connections.
func (n *natsServer) start() {
	t := n.t
	host, port, _ := net.SplitHostPort(n.addr)
	cmd := exec.Command(natsBin(t), "-a", host, "-p", port)
	n.mu.Lock()
	cmd.Stdout, cmd.Stderr = &lockedWriter{&n.mu, &n.log}, &lockedWriter{&n.mu, &n.log}
	n.mu.Unlock()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	n.cmd, n.done = cmd, done
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.Dial("tcp", n.addr); err == nil {
			c.Close()
			return
		}
		select {
		case <-done:
			t.Fatalf("nats-server exited:\n%s", n.log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("nats-server did not listen")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill stops the server at once.
func (n *natsServer) kill() {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Kill()
	<-n.done
	n.cmd = nil
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// cluster is two authsvc replicas and two edges, each edge on its own authsvc,
// all on one NATS: sys[i] is edge i with authsvc i.
type cluster struct {
	nats *natsServer
	sys  [2]*system
}

func newCluster(t *testing.T, edgeExtra ...string) *cluster {
	c := &cluster{nats: startNATS(t)}
	for i, node := range []string{"edge-a", "edge-b"} {
		s := newSystem(t, nil, append([]string{"EDGESVC_NATS_URL=" + c.nats.url(), "EDGESVC_LAYER_KEY=" + layerKey, "EDGESVC_NODE_ID=" + node}, edgeExtra...))
		c.sys[i] = s
	}
	// Each edge has heard the other.
	for _, s := range c.sys {
		for deadline := time.Now().Add(10 * time.Second); metric(t, s.edge.addr, "gatehouse_edge_nats_edges") != 2; {
			if time.Now().After(deadline) {
				t.Fatalf("edge %s does not see 2 edges", s.edge.addr)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return c
}

// readFrame reads one message within 10 s.
func readFrame(t *testing.T, ws *websocket.Conn) string {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, b, err := ws.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(b)
}

// TestClusterEdgeAPI: every EdgeService method, asked of one edge, acts on the
// connections of both.
func TestClusterEdgeAPI(t *testing.T) {
	c := newCluster(t)
	a, b := c.sys[0], c.sys[1]
	ctx := apiCtx(t.Context())
	apiA, apiB := edgeAPI(t, a), edgeAPI(t, b)
	alice, pw := a.newUser(t)
	bob, bpw := a.newUser(t)
	la := a.login(t, alice, pw)
	onA, onB := mustOpen(t, a.edge.addr, la), mustOpen(t, b.edge.addr, b.login(t, alice, pw))
	bobB := mustOpen(t, b.edge.addr, b.login(t, bob, bpw))

	send := func(api edgev1.EdgeServiceClient, to *edgev1.Target, text string) {
		t.Helper()
		if _, err := api.Send(ctx, &edgev1.SendRequest{Target: to, Payload: &edgev1.SendRequest_Text{Text: text}}); err != nil {
			t.Fatalf("Send %q: %v", text, err)
		}
	}
	// Sends to a user, a session and each connection, from either edge.
	send(apiB, userTarget(alice.GetId()), "to alice")
	readText(t, onA, "to alice")
	readText(t, onB, "to alice")
	send(apiB, &edgev1.Target{Target: &edgev1.Target_SessionId{SessionId: la.GetSession().GetId()}}, "to the session")
	readText(t, onA, "to the session")

	list, err := apiA.ListConnections(ctx, &edgev1.ListConnectionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	byEdge := map[string][]*edgev1.Connection{}
	for _, conn := range list.GetConnections() {
		byEdge[conn.GetEdge()] = append(byEdge[conn.GetEdge()], conn)
	}
	if len(list.GetConnections()) != 3 || len(byEdge["edge-a"]) != 1 || len(byEdge["edge-b"]) != 2 || list.GetPartial() {
		t.Fatalf("ListConnections from edge-a: %v", list)
	}
	for i := 1; i < len(list.GetConnections()); i++ {
		p, q := list.GetConnections()[i-1], list.GetConnections()[i]
		if q.GetConnectedAt().AsTime().Before(p.GetConnectedAt().AsTime()) {
			t.Fatalf("ListConnections out of order: %v", list)
		}
	}
	// Paged, one at a time, across both edges.
	var paged []string
	for token := ""; ; {
		resp, err := apiB.ListConnections(ctx, &edgev1.ListConnectionsRequest{PageSize: 1, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, conn := range resp.GetConnections() {
			paged = append(paged, conn.GetId())
		}
		if token = resp.GetNextPageToken(); token == "" || len(paged) > 5 {
			break
		}
	}
	if want := []string{list.GetConnections()[0].GetId(), list.GetConnections()[1].GetId(), list.GetConnections()[2].GetId()}; fmt.Sprint(paged) != fmt.Sprint(want) {
		t.Fatalf("paged through %v, want %v", paged, want)
	}
	send(apiA, connTarget(byEdge["edge-a"][0].GetId()), "to alice on a")
	readText(t, onA, "to alice on a")
	for _, conn := range byEdge["edge-b"] {
		send(apiA, connTarget(conn.GetId()), "to "+conn.GetId())
	}
	for _, conn := range byEdge["edge-b"] {
		ws := bobB
		if conn.GetUser().GetId() == alice.GetId() {
			ws = onB
		}
		readText(t, ws, "to "+conn.GetId())
	}

	// GroupAdd on one edge: both edges' connections are members when it returns.
	if _, err := apiA.GroupAdd(ctx, &edgev1.GroupAddRequest{Group: "news.eu", Target: userTarget(alice.GetId())}); err != nil {
		t.Fatal(err)
	}
	if _, err := apiB.GroupAdd(ctx, &edgev1.GroupAddRequest{Group: "news.eu", Target: userTarget(bob.GetId())}); err != nil {
		t.Fatal(err)
	}
	send(apiA, groupTarget("news.eu"), "news")
	for _, ws := range []*websocket.Conn{onA, onB, bobB} {
		readText(t, ws, "news")
	}
	for _, api := range []edgev1.EdgeServiceClient{apiA, apiB} {
		pres, err := api.GroupPresence(ctx, &edgev1.GroupPresenceRequest{Group: "news.eu"})
		if err != nil {
			t.Fatal(err)
		}
		if pres.GetConnectionCount() != 3 || len(pres.GetUsers()) != 2 || pres.GetUsers()[0].GetId() != alice.GetId() ||
			pres.GetUsers()[0].GetConnectionCount() != 2 || pres.GetPartial() {
			t.Fatalf("presence: %v", pres)
		}
	}
	// A group whose name is another's with more after a dot is another group.
	send(apiB, groupTarget("news"), "not for news.eu")
	// GroupDiscard on one edge: gone from both.
	if _, err := apiB.GroupDiscard(ctx, &edgev1.GroupDiscardRequest{Group: "news.eu", Target: userTarget(alice.GetId())}); err != nil {
		t.Fatal(err)
	}
	send(apiA, groupTarget("news.eu"), "bob only")
	readText(t, bobB, "bob only")
	send(apiA, userTarget(alice.GetId()), "after discard")
	readText(t, onA, "after discard") // nothing for news.eu or news came first
	readText(t, onB, "after discard")

	// Disconnect on one edge closes the user's connections on both.
	if _, err := apiA.Disconnect(ctx, &edgev1.DisconnectRequest{Target: userTarget(alice.GetId()), Code: 4321, Reason: "bye"}); err != nil {
		t.Fatal(err)
	}
	expectClose(t, onA, 4321, "bye", 5*time.Second)
	expectClose(t, onB, 4321, "bye", 5*time.Second)
	echo(t, bobB, "still here")
}

// TestClusterOrder: sends accepted by one edge reach a connection on the other in
// the order they were accepted, whatever their targets.
func TestClusterOrder(t *testing.T) {
	c := newCluster(t)
	a, b := c.sys[0], c.sys[1]
	ctx := apiCtx(t.Context())
	apiA := edgeAPI(t, a)
	alice, pw := a.newUser(t)
	l := a.login(t, alice, pw)
	ws := mustOpen(t, b.edge.addr, l)
	if _, err := apiA.GroupAdd(ctx, &edgev1.GroupAddRequest{Group: "g", Target: userTarget(alice.GetId())}); err != nil {
		t.Fatal(err)
	}
	targets := []*edgev1.Target{userTarget(alice.GetId()), groupTarget("g"), {Target: &edgev1.Target_SessionId{SessionId: l.GetSession().GetId()}}}
	const n = 300
	for i := range n {
		if _, err := apiA.Send(ctx, &edgev1.SendRequest{Target: targets[i%3], Payload: &edgev1.SendRequest_Text{Text: fmt.Sprint(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		if got := readFrame(t, ws); got != fmt.Sprint(i) {
			t.Fatalf("message %d: got %q", i, got)
		}
	}
}

// TestClusterChat: the chat room is one room across edges.
func TestClusterChat(t *testing.T) {
	c := newCluster(t)
	a, b := c.sys[0], c.sys[1]
	alice, apw := a.newUser(t)
	bob, bpw := a.newUser(t)
	wa := openChat(t, a, "lobby", a.login(t, alice, apw))
	wantFrame(t, frame(t, wa), map[string]any{"type": "chat.members", "room": "lobby", "users": []any{userOf(alice)}})
	wb := openChat(t, b, "lobby", b.login(t, bob, bpw))
	wantFrame(t, frame(t, wb), map[string]any{"type": "chat.members", "room": "lobby", "users": []any{userOf(alice), userOf(bob)}})
	wantFrame(t, frame(t, wa), map[string]any{"type": "chat.join", "room": "lobby", "user": userOf(bob)})
	if err := wb.WriteMessage(websocket.TextMessage, []byte(`{"message": "hi from b"}`)); err != nil {
		t.Fatal(err)
	}
	for _, ws := range []*websocket.Conn{wa, wb} {
		if m := frame(t, ws); m["type"] != "chat.message" || m["message"] != "hi from b" || m["room"] != "lobby" {
			t.Fatalf("got %v", m)
		}
	}
	_ = wb.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
	wantFrame(t, frame(t, wa), map[string]any{"type": "chat.leave", "room": "lobby", "user": userOf(bob)})
}

// TestClusterLogout: a logout through one authsvc replica closes the session's
// sockets on both edges (each follows its own replica's feed).
func TestClusterLogout(t *testing.T) {
	c := newCluster(t)
	a, b := c.sys[0], c.sys[1]
	alice, pw := a.newUser(t)
	l := a.login(t, alice, pw)
	onA, onB := mustOpen(t, a.edge.addr, l), mustOpen(t, b.edge.addr, l)
	if _, err := b.authC.Logout(t.Context(), &authv1.LogoutRequest{Token: l.GetToken()}); err != nil {
		t.Fatal(err)
	}
	expectClose(t, onA, 4401, "logout", 5*time.Second)
	expectClose(t, onB, 4401, "logout", 5*time.Second)
}

// TestClusterSubjectInjection: ids and group names that look like NATS wildcards or
// subject tokens reach nothing but what they name.
func TestClusterSubjectInjection(t *testing.T) {
	c := newCluster(t)
	a, b := c.sys[0], c.sys[1]
	ctx := apiCtx(t.Context())
	apiA := edgeAPI(t, a)
	alice, pw := a.newUser(t)
	l := a.login(t, alice, pw)
	ws := mustOpen(t, b.edge.addr, l)
	for _, g := range []string{"a.b", "a"} {
		if _, err := apiA.GroupAdd(ctx, &edgev1.GroupAddRequest{Group: "x." + g, Target: userTarget(alice.GetId())}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := apiA.GroupDiscard(ctx, &edgev1.GroupDiscardRequest{Group: "x.a", Target: userTarget(alice.GetId())}); err != nil {
		t.Fatal(err)
	}
	for _, to := range []*edgev1.Target{
		{Target: &edgev1.Target_SessionId{SessionId: ">"}},
		{Target: &edgev1.Target_SessionId{SessionId: "*"}},
		{Target: &edgev1.Target_SessionId{SessionId: l.GetSession().GetId() + ".>"}},
		{Target: &edgev1.Target_SessionId{SessionId: "a b\r\nPUB x 1"}},
		{Target: &edgev1.Target_SessionId{SessionId: strings.Repeat("s", 5000)}},
		connTarget(">"), connTarget("*"), connTarget("edge-b.*"), connTarget("edge-b.>"), connTarget("edge b.1"), connTarget("*.1"), connTarget(".1"),
		groupTarget("x"), groupTarget("x.a"), groupTarget("x.a.b.c"),
	} {
		if _, err := apiA.Send(ctx, &edgev1.SendRequest{Target: to, Payload: &edgev1.SendRequest_Text{Text: "leak " + fmt.Sprint(to)}}); err != nil && !strings.Contains(err.Error(), "INVALID") {
			t.Fatalf("Send to %v: %v", to, err)
		}
	}
	for _, g := range []string{"x.>", "x.*", "x a", ""} {
		_, err := apiA.Send(ctx, &edgev1.SendRequest{Target: groupTarget(g), Payload: &edgev1.SendRequest_Text{Text: "leak"}})
		wantReason(t, "group "+g, err, codes.InvalidArgument, "INVALID_GROUP")
	}
	if _, err := apiA.Send(ctx, &edgev1.SendRequest{Target: groupTarget("x.a.b"), Payload: &edgev1.SendRequest_Text{Text: "to x.a.b"}}); err != nil {
		t.Fatal(err)
	}
	readText(t, ws, "to x.a.b") // the first thing it got: none of the above reached it
	// The layer is still up on both edges.
	if _, err := apiA.Send(ctx, &edgev1.SendRequest{Target: userTarget(alice.GetId()), Payload: &edgev1.SendRequest_Text{Text: "still up"}}); err != nil {
		t.Fatal(err)
	}
	readText(t, ws, "still up")
}

// TestClusterNATSDown: with NATS stopped, local sockets and the chat room's local
// members go on, the edge API refuses with LAYER_UNAVAILABLE and lists the local
// part as partial; with NATS back, everything works across edges again.
func TestClusterNATSDown(t *testing.T) {
	c := newCluster(t)
	a, b := c.sys[0], c.sys[1]
	ctx := apiCtx(t.Context())
	apiA := edgeAPI(t, a)
	alice, apw := a.newUser(t)
	bob, bpw := a.newUser(t)
	la := a.login(t, alice, apw)
	echoA, echoB := mustOpen(t, a.edge.addr, la), mustOpen(t, b.edge.addr, la)
	ca := openChat(t, a, "ops", la)
	frame(t, ca) // members
	cb := openChat(t, a, "ops", a.login(t, bob, bpw))
	frame(t, cb) // members
	frame(t, ca) // bob joined

	c.nats.kill()
	for deadline := time.Now().Add(10 * time.Second); metric(t, a.edge.addr, "gatehouse_edge_nats_connected") != 0; {
		if time.Now().After(deadline) {
			t.Fatal("edge-a did not notice NATS stopped")
		}
		time.Sleep(20 * time.Millisecond)
	}
	echo(t, echoA, "local echo")
	echo(t, echoB, "local echo")
	_, err := apiA.Send(ctx, &edgev1.SendRequest{Target: userTarget(alice.GetId()), Payload: &edgev1.SendRequest_Text{Text: "lost"}})
	wantReason(t, "Send with NATS down", err, codes.Unavailable, "LAYER_UNAVAILABLE")
	_, err = apiA.GroupAdd(ctx, &edgev1.GroupAddRequest{Group: "g", Target: userTarget(alice.GetId())})
	wantReason(t, "GroupAdd with NATS down", err, codes.Unavailable, "LAYER_UNAVAILABLE")
	_, err = apiA.Disconnect(ctx, &edgev1.DisconnectRequest{Target: userTarget(alice.GetId())})
	wantReason(t, "Disconnect with NATS down", err, codes.Unavailable, "LAYER_UNAVAILABLE")
	list, err := apiA.ListConnections(ctx, &edgev1.ListConnectionsRequest{})
	if err != nil || !list.GetPartial() || len(list.GetConnections()) != 3 {
		t.Fatalf("ListConnections with NATS down: %v, %v; want edge-a's 3, partial", list, err)
	}
	pres, err := apiA.GroupPresence(ctx, &edgev1.GroupPresenceRequest{Group: "chat.ops"})
	if err != nil || !pres.GetPartial() || pres.GetConnectionCount() != 2 {
		t.Fatalf("GroupPresence with NATS down: %v, %v", pres, err)
	}
	// The chat room's local members still talk.
	if err := cb.WriteMessage(websocket.TextMessage, []byte(`{"message": "local"}`)); err != nil {
		t.Fatal(err)
	}
	for _, ws := range []*websocket.Conn{ca, cb} {
		if m := frame(t, ws); m["message"] != "local" {
			t.Fatalf("chat with NATS down: %v", m)
		}
	}
	if got := readBody(mustGet(t, http.DefaultClient, "http://"+a.edge.addr+"/readyz")); got != "ready\n" {
		t.Fatalf("/readyz with NATS down: %q; it is about authentication", got)
	}
	if metric(t, a.edge.addr, "gatehouse_edge_nats_refused_total") < 3 || metric(t, a.edge.addr, "gatehouse_edge_nats_local_only_total") < 1 {
		t.Error("refusals and local-only sends are not counted")
	}

	c.nats.start()
	// Both edges reconnect by themselves; once edge-a lists edge-b's connections
	// again, everything works across edges.
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		list, err = apiA.ListConnections(ctx, &edgev1.ListConnectionsRequest{})
		if err == nil && !list.GetPartial() && len(list.GetConnections()) == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ListConnections 15s after NATS is back: %v, %v", list, err)
		}
	}
	if _, err := apiA.Send(ctx, &edgev1.SendRequest{Target: userTarget(alice.GetId()), Payload: &edgev1.SendRequest_Text{Text: "back"}}); err != nil {
		t.Fatal(err)
	}
	readText(t, echoA, "back")
	readText(t, echoB, "back") // edge-b's subscriptions were restored
}

// TestClusterNATSStalled: a NATS server that stops answering (SIGSTOP: its
// connections stay open) holds up nothing on the edges: sockets open and echo, and
// the edge API answers LAYER_UNAVAILABLE within seconds rather than hanging.
func TestClusterNATSStalled(t *testing.T) {
	c := newCluster(t)
	a := c.sys[0]
	ctx := apiCtx(t.Context())
	apiA := edgeAPI(t, a)
	alice, pw := a.newUser(t)
	l := a.login(t, alice, pw)
	ws := mustOpen(t, a.edge.addr, l)
	if err := c.nats.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.nats.cmd.Process.Signal(syscall.SIGCONT) }()
	big := strings.Repeat("x", 256<<10)
	for range 64 { // 16 MiB: more than the sockets to the stalled server hold
		_, _ = apiA.Send(ctx, &edgev1.SendRequest{Target: userTarget(alice.GetId()), Payload: &edgev1.SendRequest_Text{Text: big}})
	}
	start := time.Now()
	for range 5 { // handshakes register connections: interest the layer must not wait on
		echo(t, mustOpen(t, a.edge.addr, l), "still here")
	}
	echo(t, ws, "still here")
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("5 handshakes and echoes took %s with NATS stalled", d)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		_, err := apiA.Send(ctx, &edgev1.SendRequest{Target: userTarget(alice.GetId()), Payload: &edgev1.SendRequest_Text{Text: "x"}})
		if errorInfo(err).GetReason() == "LAYER_UNAVAILABLE" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Send 10s into the stall: %v, want LAYER_UNAVAILABLE", err)
		}
	}
}

// TestClusterEdgeKilled: an edge killed without a word leaves listings and presence
// within the heartbeat timeout; until then answers say partial.
func TestClusterEdgeKilled(t *testing.T) {
	c := newCluster(t)
	a, b := c.sys[0], c.sys[1]
	ctx := apiCtx(t.Context())
	apiA := edgeAPI(t, a)
	alice, pw := a.newUser(t)
	l := a.login(t, alice, pw)
	mustOpen(t, a.edge.addr, l)
	mustOpen(t, b.edge.addr, l)
	if _, err := apiA.GroupAdd(ctx, &edgev1.GroupAddRequest{Group: "g", Target: userTarget(alice.GetId())}); err != nil {
		t.Fatal(err)
	}
	if pres, err := apiA.GroupPresence(ctx, &edgev1.GroupPresenceRequest{Group: "g"}); err != nil || pres.GetConnectionCount() != 2 {
		t.Fatalf("presence: %v %v", pres, err)
	}
	killed := time.Now()
	_ = b.edge.cmd.Process.Signal(syscall.SIGKILL)
	<-b.edge.done
	sawPartial := false
	for {
		pres, err := apiA.GroupPresence(ctx, &edgev1.GroupPresenceRequest{Group: "g"})
		if err != nil {
			t.Fatal(err)
		}
		if pres.GetConnectionCount() == 1 && !pres.GetPartial() {
			if !sawPartial {
				t.Fatal("presence left edge-b out without ever saying partial: it was forgotten before its heartbeats stopped counting")
			}
			t.Logf("edge-b's connection left presence %s after it was killed", time.Since(killed).Round(100*time.Millisecond))
			break
		}
		if pres.GetConnectionCount() != 1 || !pres.GetPartial() {
			t.Fatalf("presence while edge-b is being forgotten: %v; want edge-a's one connection, partial", pres)
		}
		sawPartial = true
		if time.Since(killed) > 10*time.Second {
			t.Fatalf("edge-b's connection still in presence after 10s: %v", pres)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Changes no longer wait for it.
	if _, err := apiA.GroupDiscard(context.WithoutCancel(ctx), &edgev1.GroupDiscardRequest{Group: "g", Target: userTarget(alice.GetId())}); err != nil {
		t.Fatal(err)
	}
}
