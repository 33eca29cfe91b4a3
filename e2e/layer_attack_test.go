package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	edgev1 "github.com/gatehouse/gatehouse/gen/gatehouse/edge/v1"
	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
)

// The layer between edges against a NATS client with publish and subscribe rights on
// the prefix but without the layer key: it reads every message the edges exchange,
// forges sends, kicks, group changes, heartbeats, presence answers and listings in the
// format edges used before sealing (reading request ids and instances where it can),
// and replays everything it captured. It achieves nothing and reads no plaintext;
// the edges count its messages and legitimate deliveries go on.

// attacker is a NATS client on the edges' server, without the layer key.
type attacker struct {
	t  *testing.T
	nc *nats.Conn

	mu       sync.Mutex
	captured []*nats.Msg // what the edges published, as it was
	answers  int         // answers an edge sent to the attacker's reply subject
}

func newAttacker(t *testing.T, url string) *attacker {
	a := &attacker{t: t}
	nc, err := nats.Connect(url, nats.NoEcho(), nats.Name("attacker"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	a.nc = nc
	if _, err := nc.Subscribe("gatehouse.>", func(m *nats.Msg) {
		a.mu.Lock()
		defer a.mu.Unlock()
		if m.Subject == "gatehouse.r.evil" {
			a.answers++
			return
		}
		a.captured = append(a.captured, &nats.Msg{Subject: m.Subject, Reply: m.Reply, Data: bytes.Clone(m.Data)})
	}); err != nil {
		t.Fatal(err)
	}
	// Answer every question an edge asks with made-up members: to the request's id
	// when it can be read (edges before sealing), blindly to the first ids otherwise.
	if _, err := nc.Subscribe("gatehouse.ctl", func(m *nats.Msg) {
		var r struct {
			ID   uint64 `json:"id"`
			From string `json:"from"`
		}
		ids := []uint64{}
		if len(m.Data) > 1 && json.Unmarshal(m.Data[1:], &r) == nil && r.ID > 0 {
			ids = append(ids, r.ID)
		} else {
			for id := uint64(1); id <= 64; id++ {
				ids = append(ids, id)
			}
		}
		for _, id := range ids {
			for _, node := range []string{"edge-a", "edge-b", "evil"} {
				data, _ := json.Marshal(map[string]any{"id": id, "node": node, "users": []map[string]any{{"ID": 999999, "Username": "mallory", "Count": 7}}})
				_ = nc.Publish(m.Reply, data)
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return a
}

func (a *attacker) publish(subject, reply string, data []byte) {
	a.t.Helper()
	var err error
	if reply == "" {
		err = a.nc.Publish(subject, data)
	} else {
		err = a.nc.PublishRequest(subject, reply, data)
	}
	if err != nil {
		a.t.Fatal(err)
	}
}

func (a *attacker) flush() {
	a.t.Helper()
	if err := a.nc.Flush(); err != nil {
		a.t.Fatal(err)
	}
}

func (a *attacker) snapshot() []*nats.Msg {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*nats.Msg(nil), a.captured...)
}

// unsealedSend is a send in the format edges used before sealing: 's', the origin's
// instance and sequence number, the kind, flags, user, id, excluded ids, data.
func unsealedSend(instance []byte, seq uint64, kind byte, user int64, id, data string) []byte {
	b := []byte{'s'}
	b = append(b, instance[:8]...)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = append(b, kind, 0)
	b = binary.AppendUvarint(b, uint64(user))
	b = binary.AppendUvarint(b, uint64(len(id)))
	b = append(b, id...)
	b = binary.AppendUvarint(b, 0)
	return append(b, data...)
}

func control(r map[string]any) []byte {
	b, _ := json.Marshal(r)
	return append([]byte{'c'}, b...)
}

// rejected sums an edge's rejections of reason.
func rejected(t *testing.T, s *system, reason string) float64 {
	return metric(t, s.edge.addr, `gatehouse_edge_nats_rejected_total{reason="`+reason+`"}`)
}

// waitRejected waits until each edge has rejected at least n more messages for reason
// than before.
func waitRejected(t *testing.T, c *cluster, reason string, before [2]float64, n float64) {
	t.Helper()
	for i, s := range c.sys {
		for deadline := time.Now().Add(20 * time.Second); rejected(t, s, reason) < before[i]+n; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("edge %d rejected %v %s messages, want at least %v more than %v", i, rejected(t, s, reason), reason, n, before[i])
			}
		}
	}
}

func rejectedBoth(t *testing.T, c *cluster, reason string) [2]float64 {
	return [2]float64{rejected(t, c.sys[0], reason), rejected(t, c.sys[1], reason)}
}

func TestLayerAttacker(t *testing.T) {
	c := newCluster(t)
	a, b := c.sys[0], c.sys[1]
	ctx := apiCtx(t.Context())
	apiA, apiB := edgeAPI(t, a), edgeAPI(t, b)
	evil := newAttacker(t, c.nats.url())

	alice, pw := a.newUser(t)
	la := a.login(t, alice, pw)
	aliceA := mustOpen(t, a.edge.addr, la)
	aliceB := mustOpen(t, b.edge.addr, b.login(t, alice, pw))
	carol, cpw := b.newUser(t)
	carolB := mustOpen(t, b.edge.addr, b.login(t, carol, cpw))

	// What the edges say to each other while they work: pushes, group changes,
	// listings, presence, a kick.
	const secret = "secret push 7f3a"
	if _, err := apiA.Send(ctx, &edgev1.SendRequest{Target: userTarget(alice.GetId()), Payload: &edgev1.SendRequest_Text{Text: secret}}); err != nil {
		t.Fatal(err)
	}
	readText(t, aliceA, secret)
	readText(t, aliceB, secret)
	if _, err := apiA.GroupAdd(ctx, &edgev1.GroupAddRequest{Group: "news", Target: userTarget(alice.GetId())}); err != nil {
		t.Fatal(err)
	}
	if _, err := apiB.Send(ctx, &edgev1.SendRequest{Target: groupTarget("news"), Payload: &edgev1.SendRequest_Text{Text: secret + " to news"}}); err != nil {
		t.Fatal(err)
	}
	readText(t, aliceA, secret+" to news")
	readText(t, aliceB, secret+" to news")
	pres, err := apiA.GroupPresence(ctx, &edgev1.GroupPresenceRequest{Group: "news"})
	if err != nil {
		t.Fatal(err)
	}
	if len(pres.GetUsers()) != 1 || pres.GetUsers()[0].GetId() != alice.GetId() || pres.GetConnectionCount() != 2 {
		t.Fatalf("presence with an attacker answering for the edges: %v", pres)
	}
	list, err := apiB.ListConnections(ctx, &edgev1.ListConnectionsRequest{})
	if err != nil || len(list.GetConnections()) != 3 {
		t.Fatalf("ListConnections: %v %v", list, err)
	}
	if _, err := apiA.Disconnect(ctx, &edgev1.DisconnectRequest{Target: userTarget(carol.GetId()), Code: 4005, Reason: "moved"}); err != nil {
		t.Fatal(err)
	}
	expectClose(t, carolB, 4005, "moved", 10*time.Second)
	carolB = mustOpen(t, b.edge.addr, b.login(t, carol, cpw))

	// It read nothing: no text, no name, no session id, no connection id, in the
	// messages or in their subjects.
	captured := evil.snapshot()
	if len(captured) < 10 {
		t.Fatalf("the attacker captured %d messages: it should see the edges' traffic (sealed)", len(captured))
	}
	b64 := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	names := []string{"gatehouse.u." + fmt.Sprint(alice.GetId()), "gatehouse.s." + b64(la.GetSession().GetId()), "gatehouse.g." + b64("news"),
		"gatehouse.n.edge-", "gatehouse.r.edge-"}
	var targets, replies []string // the subjects it saw sends and requests on, and their reply subjects
	for _, m := range captured {
		for _, plain := range []string{secret, alice.GetUsername(), la.GetSession().GetId(), list.GetConnections()[0].GetId(), "news", "edge-a", "edge-b", "disconnect", "moved"} {
			if bytes.Contains(m.Data, []byte(plain)) {
				t.Fatalf("the attacker read %q in a message on %s", plain, m.Subject)
			}
		}
		for _, n := range names {
			if strings.HasPrefix(m.Subject, n) || strings.HasPrefix(m.Reply, n) {
				t.Fatalf("the attacker read a name in the subject %s (reply %q)", m.Subject, m.Reply)
			}
		}
		if m.Subject != "gatehouse.ctl" && m.Subject != "gatehouse.hb" && !slices.Contains(targets, m.Subject) {
			targets = append(targets, m.Subject)
		}
		if m.Reply != "" && !slices.Contains(replies, m.Reply) {
			replies = append(replies, m.Reply)
		}
	}
	if len(targets) == 0 || len(replies) == 0 {
		t.Fatalf("the attacker saw no send (%d) or no request (%d)", len(targets), len(replies))
	}

	// Forgeries in the format of edges before sealing.
	open0 := rejectedBoth(t, c, "open")
	instance := captured[0].Data[1:9] // an edge's instance, before sealing
	forged := 0
	forge := func(subject, reply string, data []byte) {
		evil.publish(subject, reply, data)
		forged++
	}
	perEdge := 0                                        // forgeries every edge receives
	for _, subject := range append(targets, names[0]) { // where it saw sends go, and where they went before
		forge(subject, "", unsealedSend(instance, 1, 1, alice.GetId(), "", `{"type":"chat.message","from":"alice","text":"forged"}`))
		forge(subject, "", unsealedSend(instance, 1<<64-1, 1, alice.GetId(), "", "poisoned")) // sequence poisoning
	}
	for i, code := range []int{4401, 0, 1005, 70000} {
		forge("gatehouse.ctl", "gatehouse.r.evil", control(map[string]any{"op": "disconnect", "id": 100 + i, "from": "edge-a",
			"to": map[string]any{"Kind": 1, "User": alice.GetId()}, "code": code, "reason": "revoked"}))
	}
	forge("gatehouse.ctl", "gatehouse.r.evil", control(map[string]any{"op": "group_add", "id": 200, "from": "edge-a",
		"to": map[string]any{"Kind": 1, "User": alice.GetId()}, "group": "evil"}))
	for i := range 50 {
		hb, _ := json.Marshal(map[string]string{"node": fmt.Sprintf("fake-%d", i), "instance": fmt.Sprintf("%016x", i), "kind": "hello"})
		forge("gatehouse.hb", "", hb)
	}
	hb, _ := json.Marshal(map[string]string{"node": "edge-a", "instance": "0000000000000000", "kind": "beat"})
	forge("gatehouse.hb", "", hb) // an edge's node id, another instance
	for i := range 3000 {
		forge("gatehouse.ctl", "gatehouse.r.evil", control(map[string]any{"op": "list", "id": 1000 + i, "from": "evil", "limit": 1001}))
	}
	perEdge = forged - 2*(len(targets)+1) // the control and heartbeat subjects reach every edge
	for _, reply := range replies {       // answers to requests the edges will ask, where they ask for them
		for i := range 200 {
			data, _ := json.Marshal(map[string]any{"id": i, "node": "edge-b", "users": []map[string]any{{"ID": 999999, "Username": "mallory", "Count": 1}}})
			forge(reply, "", data)
		}
	}
	evil.flush()
	waitRejected(t, c, "open", open0, float64(perEdge))

	// None of it did anything. Alice's sockets are open, in no group "evil", got no
	// forged push, and pushes from either edge reach both (the sequence poisoning did
	// not stop edge-a's own sends).
	for i, api := range []edgev1.EdgeServiceClient{apiA, apiB} {
		text := fmt.Sprintf("after the forgeries %d", i)
		if _, err := api.Send(ctx, &edgev1.SendRequest{Target: userTarget(alice.GetId()), Payload: &edgev1.SendRequest_Text{Text: text}}); err != nil {
			t.Fatal(err)
		}
		readText(t, aliceA, text)
		readText(t, aliceB, text)
	}
	if _, err := apiA.Send(ctx, &edgev1.SendRequest{Target: groupTarget("evil"), Payload: &edgev1.SendRequest_Text{Text: "to evil"}}); err != nil {
		t.Fatal(err)
	}
	echo(t, aliceA, "still open")
	echo(t, aliceB, "still open")
	// The fake heartbeats made no edge wait for fake peers.
	for _, s := range c.sys {
		if n := metric(t, s.edge.addr, "gatehouse_edge_nats_edges"); n != 2 {
			t.Fatalf("an edge counts %v edges after 50 fake heartbeats", n)
		}
	}
	if _, err := apiB.GroupAdd(ctx, &edgev1.GroupAddRequest{Group: "after", Target: userTarget(alice.GetId())}); err != nil {
		t.Fatalf("GroupAdd after the fake heartbeats: %v", err)
	}
	pres, err = apiA.GroupPresence(ctx, &edgev1.GroupPresenceRequest{Group: "news"})
	if err != nil || len(pres.GetUsers()) != 1 || pres.GetUsers()[0].GetId() != alice.GetId() || pres.GetPartial() {
		t.Fatalf("presence after forged answers: %v %v", pres, err)
	}
	evil.mu.Lock()
	answered := evil.answers
	evil.mu.Unlock()
	if answered > 0 {
		t.Fatalf("the edges answered the attacker's listings %d times", answered)
	}

	// Replays of everything captured, verbatim: nothing happens twice.
	replay0 := rejectedBoth(t, c, "replay")
	for _, m := range captured {
		evil.publish(m.Subject, m.Reply, m.Data)
	}
	evil.flush()
	waitRejected(t, c, "replay", replay0, 5)
	marker := "after the replay"
	if _, err := apiB.Send(ctx, &edgev1.SendRequest{Target: userTarget(alice.GetId()), Payload: &edgev1.SendRequest_Text{Text: marker}}); err != nil {
		t.Fatal(err)
	}
	readText(t, aliceA, marker) // not the secret pushes again
	readText(t, aliceB, marker)
	echo(t, carolB, "not kicked again")

	// A flood of garbage on every subject it knows while pushes go on: each push
	// arrives, in order, and the flood is counted.
	flood0 := rejectedBoth(t, c, "open")
	done := make(chan struct{})
	go func() {
		defer close(done)
		junk := bytes.Repeat([]byte{0x5a}, 512)
		for i := 0; i < 20_000; i++ {
			for _, subject := range append([]string{"gatehouse.ctl", "gatehouse.hb"}, targets...) {
				_ = evil.nc.Publish(subject, junk)
			}
		}
		_ = evil.nc.Flush()
	}()
	for i := range 100 {
		if _, err := apiA.Send(ctx, &edgev1.SendRequest{Target: userTarget(alice.GetId()), Payload: &edgev1.SendRequest_Text{Text: fmt.Sprint("during the flood ", i)}}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 100 {
		readText(t, aliceA, fmt.Sprint("during the flood ", i))
		readText(t, aliceB, fmt.Sprint("during the flood ", i))
	}
	<-done
	waitRejected(t, c, "open", flood0, 40_000) // the control and heartbeat subjects reach both
	t.Logf("captured %d sealed messages; forged %d; replayed %d: rejected open %v+%v, replay %v+%v", len(captured), forged, len(captured),
		rejected(t, a, "open")-open0[0], rejected(t, b, "open")-open0[1], rejected(t, a, "replay")-replay0[0], rejected(t, b, "replay")-replay0[1])
	for _, ws := range []*websocket.Conn{aliceA, aliceB, carolB} {
		ws.Close()
	}
}
