package natslayer

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gatehouse/gatehouse/edgesvc/internal/layer"
)

// rogue holds the layer key but asks for what no edge may: an edge of another
// version, or one that misbehaves. It seals as an edge does, with its own instance.
type rogue struct {
	t        *testing.T
	nc       *nats.Conn
	s        sealer
	subj     subjects
	counter  uint64
	instance [8]byte
}

func newRogue(t *testing.T, srv *server) *rogue {
	nc, err := nats.Connect("nats://" + srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return &rogue{t: t, nc: nc, s: sealer{k: mustKeyring(t, testKey)}, subj: newSubjects("gatehouse", [][]byte{testKey}), instance: [8]byte{'r', 'o', 'g', 'u', 'e'}}
}

// publish seals payload as message number counter (the next one when 0).
func (r *rogue) publish(subject, reply string, payload []byte, counter uint64) {
	r.t.Helper()
	if counter == 0 {
		r.counter++
		counter = r.counter
	}
	msg := r.s.seal(nil, subject, reply, meta{instance: r.instance, counter: counter, sent: time.Now().UnixNano()}, payload)
	if err := r.nc.PublishMsg(&nats.Msg{Subject: subject, Reply: reply, Data: msg}); err != nil {
		r.t.Fatal(err)
	}
	if err := r.nc.Flush(); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rogue) control(req map[string]any, reply string) {
	r.t.Helper()
	b, _ := json.Marshal(req)
	r.publish(r.subj.control(), reply, append([]byte{opControl}, b...), 0)
}

// TestChecksOnArrival: a sealed request is applied only if the edge API could have
// asked for it: close codes (never 4401), reasons, groups, targets, limits and the
// reply subject are checked, and sends are bounded by the read limit.
func TestChecksOnArrival(t *testing.T) {
	s := startServer(t)
	e := &fakeEdge{}
	m := testMetrics()
	l, err := New(Config{URL: "nats://" + s.addr, Node: "a", Heartbeat: 200 * time.Millisecond, Timeout: time.Second, Key: testKey, MaxMessage: 1000},
		e, m, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	l.Watch(user1, true)
	r := newRogue(t, s)
	// Its subscriptions are on the server once its own heartbeat has come back.
	eventually(t, "a hears itself", 5*time.Second, func() bool { return l.selfSeen.Load() != 0 })
	invalid := func() float64 { return testutil.ToFloat64(m.Rejected.WithLabelValues(rejectInvalid)) }
	rogueReplies := r.subj.replies("rogue")
	answers, err := r.nc.SubscribeSync(rogueReplies)
	if err != nil {
		t.Fatal(err)
	}
	elsewhere, err := r.nc.SubscribeSync("elsewhere")
	if err != nil {
		t.Fatal(err)
	}
	user := map[string]any{"Kind": layer.User, "User": 1}
	cases := []struct {
		name  string
		req   map[string]any
		reply string
	}{
		{"disconnect 4401", map[string]any{"op": opDisconnect, "to": user, "code": 4401}, ""},
		{"disconnect 0", map[string]any{"op": opDisconnect, "to": user, "code": 0}, ""},
		{"disconnect 1005", map[string]any{"op": opDisconnect, "to": user, "code": 1005}, ""},
		{"disconnect 70000", map[string]any{"op": opDisconnect, "to": user, "code": 70000}, ""},
		{"disconnect, a long reason", map[string]any{"op": opDisconnect, "to": user, "code": 4000, "reason": fmt.Sprintf("%0121d", 0)}, ""},
		{"disconnect, no target", map[string]any{"op": opDisconnect, "code": 4000}, ""},
		{"group_add, a bad group", map[string]any{"op": opAdd, "to": user, "group": "a b"}, ""},
		{"group_add to a group", map[string]any{"op": opAdd, "to": map[string]any{"Kind": layer.Group, "ID": "g"}, "group": "h"}, ""},
		{"group_add, user 0", map[string]any{"op": opAdd, "to": map[string]any{"Kind": layer.User, "User": 0}, "group": "h"}, ""},
		{"list, limit too high", map[string]any{"op": opList, "limit": 100000}, ""},
		{"presence, a bad group", map[string]any{"op": opPresence, "group": ""}, ""},
		{"an unknown operation", map[string]any{"op": "drop_all"}, ""},
		{"answers elsewhere", map[string]any{"op": opPresence, "group": "g"}, "elsewhere"},
		{"answers to a plain name", map[string]any{"op": opPresence, "group": "g"}, "gatehouse.r.rogue"},
		{"no sender", map[string]any{"op": opPresence, "group": "g", "from": ""}, r.subj.replies("")},
	}
	for i, c := range cases {
		before := invalid()
		c.req["id"] = i + 1
		if _, ok := c.req["from"]; !ok {
			c.req["from"] = "rogue"
		}
		reply := c.reply
		if reply == "" {
			reply = rogueReplies
		}
		r.control(c.req, reply)
		eventually(t, c.name+": rejected", 5*time.Second, func() bool { return invalid() > before })
		if reply == rogueReplies { // told why, so it need not wait
			msg, err := answers.NextMsg(5 * time.Second)
			if err != nil {
				t.Fatalf("%s: no answer: %v", c.name, err)
			}
			_, p, err := r.s.open(msg.Subject, msg.Reply, msg.Data)
			var a answer
			if err != nil || json.Unmarshal(p, &a) != nil || a.Err == "" || a.ID != uint64(i+1) {
				t.Fatalf("%s: answered %q (%v), want an error", c.name, p, err)
			}
		}
	}
	if _, err := elsewhere.NextMsg(100 * time.Millisecond); err == nil {
		t.Fatal("an edge answered to a subject not under the prefix")
	}
	e.mu.Lock()
	closes, groups := e.closes, len(e.groups)
	e.mu.Unlock()
	if len(closes) > 0 || groups > 0 {
		t.Fatalf("refused requests were applied: closes %v, %d groups", closes, groups)
	}

	// Sends: a bad target is not delivered (a send's size is bounded by NATS's
	// max_payload, not this edge's read limit, which another edge may not share).
	user1Subject, _ := r.subj.target(user1)
	before := invalid()
	r.publish(user1Subject, "", encodeSend(layer.Send{To: layer.Target{Kind: layer.User, User: 0}, Data: "x"}), 0)
	r.publish(user1Subject, "", encodeSend(layer.Send{To: layer.Target{Kind: layer.Group, ID: "a b"}, Data: "x"}), 0)
	eventually(t, "sends rejected", 5*time.Second, func() bool { return invalid() >= before+2 })
	// A good one from the rogue goes through (it holds the key), and a replay of it
	// does not.
	good := encodeSend(layer.Send{To: user1, Data: "from a keyed edge"})
	r.publish(user1Subject, "", good, 0)
	replays := func() float64 { return testutil.ToFloat64(m.Rejected.WithLabelValues(rejectReplay)) }
	before = replays()
	r.publish(user1Subject, "", good, r.counter) // the same counter again
	r.publish(user1Subject, "", good, 1)         // an earlier one
	eventually(t, "replays rejected", 5*time.Second, func() bool { return replays() >= before+2 })
	if got := e.got(); len(got) != 1 || got[0] != "from a keyed edge" {
		t.Fatalf("delivered %q", got)
	}
}

// TestAnswersOnlyFromPeers: an answer that claims to be another edge's, or comes from
// an edge never heard from, is not taken.
func TestAnswersOnlyFromPeers(t *testing.T) {
	s := startServer(t)
	m := testMetrics()
	e := &fakeEdge{}
	l, err := New(Config{URL: "nats://" + s.addr, Node: "a", Heartbeat: 200 * time.Millisecond, Timeout: time.Second, Key: testKey}, e, m, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	// Its subscriptions are on the server once its own heartbeat has come back.
	eventually(t, "a hears itself", 5*time.Second, func() bool { return l.selfSeen.Load() != 0 })
	r := newRogue(t, s)
	invalid := func() float64 { return testutil.ToFloat64(m.Rejected.WithLabelValues(rejectInvalid)) }
	before := invalid()
	for _, node := range []string{"a", "b"} { // this edge's own name; an edge not heard from
		b, _ := json.Marshal(answer{ID: 1, Node: node, Users: []layer.PresentUser{{ID: 9, Count: 1}}})
		r.publish(r.subj.replies("a"), "", b, 0)
	}
	eventually(t, "answers rejected", 5*time.Second, func() bool { return invalid() >= before+2 })
}

// lockedBuffer is a log sink tests can read while the layer writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *lockedBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// TestDuplicateNodeIDLoggedOnce: heartbeats of other runs under this edge's node id
// are logged at most once a minute, however many come (each logged an ERROR before).
func TestDuplicateNodeIDLoggedOnce(t *testing.T) {
	s := startServer(t)
	var logs lockedBuffer
	l, err := New(Config{URL: "nats://" + s.addr, Node: "a", Heartbeat: 200 * time.Millisecond, Timeout: time.Second, Key: testKey},
		&fakeEdge{}, testMetrics(), slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	eventually(t, "a hears itself", 5*time.Second, func() bool { return l.selfSeen.Load() != 0 })
	r := newRogue(t, s)
	beat, _ := json.Marshal(heartbeat{Node: "a", Kind: beatBeat})
	for i := range 50 { // each from another run
		r.instance[7] = byte(i)
		r.publish(r.subj.heartbeat(), "", beat, 0)
	}
	eventually(t, "the duplicate logged", 5*time.Second, func() bool { return strings.Contains(logs.String(), "another edge uses this node id") })
	// The next beat of a's own comes after all 50 (one publisher's order): by then each
	// has been handled.
	seen := l.selfSeen.Load()
	eventually(t, "a hears itself again", 5*time.Second, func() bool { return l.selfSeen.Load() != seen })
	if n := strings.Count(logs.String(), "another edge uses this node id"); n != 1 {
		t.Fatalf("logged %d times for 50 heartbeats", n)
	}
}
