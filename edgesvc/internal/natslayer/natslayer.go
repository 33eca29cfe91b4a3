// Package natslayer is the layer between edges over core NATS: what one edge sends,
// adds to a group, kicks or asks reaches the connections of every edge that shares
// the NATS server (or cluster) and the subject prefix.
//
// Each edge subscribes, on one NATS connection, to the subjects of the users,
// sessions and groups it holds connections of (from the first to the last, as the
// registry reports them), to its own node subject (sends to one connection) and to
// the control subject (group changes, kicks, listings and presence, answered by
// every edge). Every one of these subscriptions feeds one channel, read by one
// dispatcher goroutine: messages one edge published reach each other edge's
// connections in the order it published them, and an edge receives its own sends
// the same way, so nothing is delivered twice. Edges announce themselves on a
// heartbeat subject; a call that must reach every edge waits for the edges heard
// from within the last three heartbeats.
//
// While NATS is unreachable, calls made under layer.RequireAll fail with
// layer.ErrUnavailable and do nothing; the others (consumers') reach this edge's
// connections only; listings and presence answer with this edge's part, partial.
// nats.go reconnects by itself and restores every subscription.
package natslayer

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse/gatehouse/edgesvc/internal/layer"
	"github.com/gatehouse/gatehouse/edgesvc/internal/registry"
)

// Config is how an edge joins the others.
type Config struct {
	URL    string // NATS server URL(s), comma-separated; credentials may be in them
	Prefix string // every subject starts with it; edges sharing one are one system. Default "gatehouse"
	Node   string // this edge's node id (registry.ValidNodeID)
	// Pending is how many received messages may wait for the dispatcher; past it
	// NATS drops them (counted and logged: delivery is at most once). Default 65,536.
	Pending int
	// Heartbeat is how often the edge announces itself; an edge not heard from for
	// three of them is gone. Default 1 s.
	Heartbeat time.Duration
	// Timeout bounds how long a call waits for every edge's answer. Default 2 s.
	Timeout time.Duration
	// MaxMessage is the largest message the edge sends; a NATS server whose
	// max_payload cannot carry it is warned of.
	MaxMessage int64
	// Options are more nats.go options (TLS, credentials), applied last.
	Options []nats.Option
}

// Metrics are the series the layer keeps.
type Metrics struct {
	Connected   prometheus.Gauge   // 1 while connected to NATS
	Edges       prometheus.Gauge   // edges heard from, this one included
	Dropped     prometheus.Counter // received messages dropped: the dispatcher was behind
	Unanswered  prometheus.Counter // calls an edge did not answer in time
	LocalOnly   prometheus.Counter // calls applied to this edge only, NATS being down
	Refused     prometheus.Counter // calls refused with ErrUnavailable, NATS being down
	Disconnects prometheus.Counter // NATS connections lost
}

// Layer is the layer between edges. Make one with New, pass Watch to the registry,
// and Close it last.
type Layer struct {
	cfg      Config
	subj     subjects
	edge     layer.Edge
	m        Metrics
	log      *slog.Logger
	nc       *nats.Conn
	ch       chan *nats.Msg
	instance string // this run of the edge, to tell two edges with one node id apart

	mu          sync.Mutex
	interest    map[string]*nats.Subscription // subject → subscription, while connections here need it
	fixed       []*nats.Subscription          // control and node subjects
	droppedGone int64                         // drops of subscriptions since ended
	droppedSeen int64                         // drops counted in Metrics.Dropped
	peers       map[string]peer
	dupWarned   map[string]bool

	seq   atomic.Uint64
	calls sync.Map // request id → *call

	stop      chan struct{}
	stopped   sync.WaitGroup
	closeOnce sync.Once
}

type peer struct{ seen time.Time }

// Validate checks what New would refuse, for a command to report before it starts.
func Validate(url, prefix string) error {
	if strings.TrimSpace(url) == "" {
		return errors.New("no NATS URL")
	}
	if prefix != "" && !ValidPrefix(prefix) {
		return fmt.Errorf("subject prefix %q: want dot-separated tokens of letters, digits, '-' and '_', at most 64 characters", prefix)
	}
	return nil
}

// New connects to NATS (retrying in the background while it is unreachable) and
// starts serving edge. It fails only for settings that can never work.
func New(cfg Config, edge layer.Edge, m Metrics, log *slog.Logger) (*Layer, error) {
	if cfg.Prefix == "" {
		cfg.Prefix = "gatehouse"
	}
	if err := Validate(cfg.URL, cfg.Prefix); err != nil {
		return nil, err
	}
	if !registry.ValidNodeID(cfg.Node) {
		return nil, fmt.Errorf("node id %q is not valid", cfg.Node)
	}
	if cfg.Pending <= 0 {
		cfg.Pending = 65536
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	var nonce [8]byte
	_, _ = rand.Read(nonce[:])
	l := &Layer{
		cfg: cfg, subj: subjects{cfg.Prefix}, edge: edge, m: m, log: log.With("layer", "nats"),
		ch: make(chan *nats.Msg, cfg.Pending), instance: hex.EncodeToString(nonce[:]),
		interest: map[string]*nats.Subscription{}, peers: map[string]peer{}, dupWarned: map[string]bool{},
		stop: make(chan struct{}),
	}
	opts := []nats.Option{
		nats.Name("gatehouse-edge " + cfg.Node),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.ReconnectBufSize(-1), // while disconnected, publishing fails rather than queueing: nothing is delivered late or twice
		nats.PingInterval(5 * time.Second),
		nats.MaxPingsOutstanding(2),
		nats.ConnectHandler(func(nc *nats.Conn) { l.up(nc, "connected") }),
		nats.ReconnectHandler(func(nc *nats.Conn) { l.up(nc, "reconnected") }),
		nats.DisconnectErrHandler(l.down),
		nats.ErrorHandler(l.asyncError),
	}
	nc, err := nats.Connect(cfg.URL, append(opts, cfg.Options...)...)
	if err != nil {
		return nil, fmt.Errorf("NATS: %w", err)
	}
	l.nc = nc
	for _, s := range []string{l.subj.control(), l.subj.node(cfg.Node)} {
		sub, err := nc.ChanSubscribe(s, l.ch)
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("NATS: subscribe %s: %w", s, err)
		}
		l.fixed = append(l.fixed, sub)
	}
	if _, err := nc.Subscribe(l.subj.replies(cfg.Node), l.answered); err != nil {
		nc.Close()
		return nil, fmt.Errorf("NATS: %w", err)
	}
	if _, err := nc.Subscribe(l.subj.heartbeat(), l.heard); err != nil {
		nc.Close()
		return nil, fmt.Errorf("NATS: %w", err)
	}
	l.m.Edges.Set(1)
	l.stopped.Add(2)
	go l.dispatch()
	go l.beat()
	if !nc.IsConnected() { // else the connect handler runs
		l.m.Connected.Set(0)
		l.log.Warn("NATS is not reachable yet: the edge API's calls answer LAYER_UNAVAILABLE and consumers reach this edge's connections only until it is", "url", redact(cfg.URL))
	}
	return l, nil
}

// redact hides the credentials a NATS URL may hold.
func redact(urls string) string {
	var out []string
	for _, u := range strings.Split(urls, ",") {
		if at := strings.LastIndexByte(u, '@'); at >= 0 {
			scheme, _, ok := strings.Cut(u, "://")
			if ok {
				u = scheme + "://[redacted]@" + u[at+1:]
			} else {
				u = "[redacted]@" + u[at+1:]
			}
		}
		out = append(out, strings.TrimSpace(u))
	}
	return strings.Join(out, ",")
}

// up runs when the connection is (re)established: nats.go has restored every
// subscription; the other edges hear of this one at once.
// It may run before New has set l.nc.
func (l *Layer) up(nc *nats.Conn, what string) {
	l.m.Connected.Set(1)
	l.log.Info("NATS "+what, "server", nc.ConnectedUrlRedacted())
	if limit := nc.MaxPayload() - sendOverhead; l.cfg.MaxMessage > limit {
		l.log.Warn("NATS's max_payload is below the edge's read limit plus room for a send's header: sends over max_payload less that room fail with PAYLOAD_TOO_LARGE; raise max_payload in the NATS server's configuration or lower EDGESVC_READ_LIMIT", "max_payload", nc.MaxPayload(), "read_limit", l.cfg.MaxMessage, "room", sendOverhead)
	}
	l.announce(nc, "hello")
}

func (l *Layer) down(_ *nats.Conn, err error) {
	l.m.Connected.Set(0)
	l.m.Disconnects.Inc()
	l.log.Warn("NATS connection lost: the edge API's calls answer LAYER_UNAVAILABLE and consumers reach this edge's connections only until it is back", "err", err)
}

func (l *Layer) asyncError(_ *nats.Conn, sub *nats.Subscription, err error) {
	if errors.Is(err, nats.ErrSlowConsumer) {
		l.log.Warn("NATS messages dropped: this edge's dispatcher is behind (deliveries are at most once)", "pending_limit", l.cfg.Pending)
		return
	}
	subject := ""
	if sub != nil {
		subject = sub.Subject
	}
	l.log.Warn("NATS error", "subject", subject, "err", err)
}

// Watch subscribes to what reaches t's connections while this edge holds some (on),
// and unsubscribes when it holds none. The registry calls it, in order.
func (l *Layer) Watch(t layer.Target, on bool) {
	s, ok := l.subj.target(t)
	if !ok || t.Kind == layer.Connection {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !on {
		if sub := l.interest[s]; sub != nil {
			if n, err := sub.Dropped(); err == nil {
				l.droppedGone += int64(n)
			}
			_ = sub.Unsubscribe()
			delete(l.interest, s)
		}
		return
	}
	if l.interest[s] != nil {
		return
	}
	sub, err := l.nc.ChanSubscribe(s, l.ch)
	if err != nil {
		if !l.nc.IsClosed() {
			l.log.Error("NATS: cannot subscribe: sends from other edges will not reach this edge's connections", "subject", s, "err", err)
		}
		return
	}
	l.interest[s] = sub
}

// connected reports whether publishing can reach the other edges now.
func (l *Layer) connected() bool { return l.nc.IsConnected() }

// Send publishes m to its target's subject; every edge holding a connection it
// matches (this one included) delivers it.
func (l *Layer) Send(ctx context.Context, m layer.Send) error {
	s, ok := l.subj.target(m.To)
	if !ok {
		return nil // no connection anywhere can match it
	}
	if l.connected() {
		err := l.nc.Publish(s, encodeSend(m))
		if err == nil {
			return nil
		}
		if errors.Is(err, nats.ErrMaxPayload) {
			return fmt.Errorf("%w (NATS max_payload %d bytes)", layer.ErrTooLarge, l.nc.MaxPayload())
		}
	}
	return l.alone(ctx, func() error { l.edge.Deliver(m); return nil })
}

// alone applies a call to this edge only, NATS being unreachable, unless the call
// requires every edge.
func (l *Layer) alone(ctx context.Context, apply func() error) error {
	if layer.AllRequired(ctx) {
		l.m.Refused.Inc()
		return fmt.Errorf("%w: NATS is not reachable", layer.ErrUnavailable)
	}
	l.m.LocalOnly.Inc()
	return apply()
}

// GroupAdd has every edge join its connections to matches to group.
func (l *Layer) GroupAdd(ctx context.Context, group string, to layer.Target) error {
	return l.change(ctx, request{Op: opAdd, Group: group, To: &to}, func() error { return l.edge.GroupAdd(group, to) })
}

// GroupDiscard has every edge take its connections to matches out of group.
func (l *Layer) GroupDiscard(ctx context.Context, group string, to layer.Target) error {
	return l.change(ctx, request{Op: opDiscard, Group: group, To: &to}, func() error { l.edge.GroupDiscard(group, to); return nil })
}

// Disconnect has every edge close its connections to matches.
func (l *Layer) Disconnect(ctx context.Context, to layer.Target, code int, reason string) error {
	return l.change(ctx, request{Op: opDisconnect, To: &to, Code: code, Reason: reason}, func() error { l.edge.Disconnect(to, code, reason); return nil })
}

// change sends a change to every edge and returns once each edge heard from lately
// has applied it. An edge that does not answer in time makes it fail with
// ErrUnavailable: the others did apply it, and every change is idempotent, so the
// caller may retry.
func (l *Layer) change(ctx context.Context, r request, local func() error) error {
	if !l.connected() {
		return l.alone(ctx, local)
	}
	answers, missing, err := l.ask(ctx, r)
	if errors.Is(err, layer.ErrUnavailable) {
		return l.alone(ctx, local)
	}
	if err != nil {
		return err
	}
	for _, a := range answers {
		if a.Err == errTooManyGroups {
			return registry.ErrTooManyGroups
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: edge %s did not answer within %s", layer.ErrUnavailable, strings.Join(missing, ", "), l.cfg.Timeout)
	}
	return nil
}

// List gathers every edge's connections that q matches and returns the first
// q.Limit, in order.
func (l *Layer) List(ctx context.Context, q layer.ListQuery) (layer.Page, error) {
	if !l.connected() {
		return layer.Page{Conns: l.edge.List(q), Partial: true}, nil
	}
	answers, missing, err := l.ask(ctx, request{Op: opList, To: q.To, After: q.After, Limit: q.Limit})
	if errors.Is(err, layer.ErrUnavailable) {
		return layer.Page{Conns: l.edge.List(q), Partial: true}, nil
	}
	if err != nil {
		return layer.Page{}, err
	}
	var page layer.Page
	var cut *layer.Cursor // an edge whose answer was cut knows nothing past its last
	for _, a := range answers {
		page.Conns = append(page.Conns, a.Conns...)
		if a.Cut && len(a.Conns) > 0 {
			if c := a.Conns[len(a.Conns)-1].Cursor(); cut == nil || c.Before(*cut) {
				cut = &c
			}
		}
	}
	slices.SortFunc(page.Conns, func(a, b layer.ConnInfo) int {
		if a.Cursor().Before(b.Cursor()) {
			return -1
		}
		return 1
	})
	if cut != nil {
		page.Conns = slices.DeleteFunc(page.Conns, func(c layer.ConnInfo) bool { return cut.Before(c.Cursor()) })
		page.Cut = true
	}
	if len(page.Conns) > q.Limit {
		page.Conns = page.Conns[:q.Limit]
	}
	page.Partial = len(missing) > 0
	return page, nil
}

// Presence gathers every edge's members of group, by user.
func (l *Layer) Presence(ctx context.Context, group string) ([]layer.PresentUser, bool, error) {
	if !l.connected() {
		return l.edge.Presence(group), true, nil
	}
	answers, missing, err := l.ask(ctx, request{Op: opPresence, Group: group})
	if errors.Is(err, layer.ErrUnavailable) {
		return l.edge.Presence(group), true, nil
	}
	if err != nil {
		return nil, false, err
	}
	byUser := map[int64]*layer.PresentUser{}
	for _, a := range answers {
		for _, u := range a.Users {
			if p := byUser[u.ID]; p != nil {
				p.Count += u.Count
			} else {
				u := u
				byUser[u.ID] = &u
			}
		}
	}
	out := make([]layer.PresentUser, 0, len(byUser))
	for _, u := range byUser {
		out = append(out, *u)
	}
	slices.SortFunc(out, func(a, b layer.PresentUser) int { return cmp.Compare(a.ID, b.ID) })
	return out, len(missing) > 0, nil
}

// The operations of a control request.
const (
	opAdd        = "group_add"
	opDiscard    = "group_discard"
	opDisconnect = "disconnect"
	opList       = "list"
	opPresence   = "presence"
)

// errTooManyGroups is how an answer says registry.ErrTooManyGroups.
const errTooManyGroups = "too_many_groups"

// request is a control request, published to every edge.
type request struct {
	Op     string        `json:"op"`
	ID     uint64        `json:"id"`
	From   string        `json:"from"`
	To     *layer.Target `json:"to,omitempty"`
	Group  string        `json:"group,omitempty"`
	Code   int           `json:"code,omitempty"`
	Reason string        `json:"reason,omitempty"`
	After  layer.Cursor  `json:"after"`
	Limit  int           `json:"limit,omitempty"`
}

// answer is one edge's answer to a request.
type answer struct {
	ID    uint64              `json:"id"`
	Node  string              `json:"node"`
	Err   string              `json:"err,omitempty"`
	Conns []layer.ConnInfo    `json:"conns,omitempty"`
	Cut   bool                `json:"cut,omitempty"` // Conns was cut to fit NATS's max_payload
	Users []layer.PresentUser `json:"users,omitempty"`
}

// call is a request waiting for its answers.
type call struct {
	mu      sync.Mutex
	want    map[string]bool // edges still to answer
	answers []answer
	done    chan struct{} // closed once want is empty
}

// ask publishes r to every edge and waits for the answers of the edges heard from
// lately (this one included), until ctx ends or Config.Timeout passes; missing
// names those that did not answer. It fails with ErrUnavailable when r cannot be
// published.
func (l *Layer) ask(ctx context.Context, r request) (answers []answer, missing []string, err error) {
	r.ID, r.From = l.seq.Add(1), l.cfg.Node
	data, err := json.Marshal(r)
	if err != nil {
		return nil, nil, err
	}
	c := &call{want: l.live(), done: make(chan struct{})}
	l.calls.Store(r.ID, c)
	defer l.calls.Delete(r.ID)
	if err := l.nc.PublishRequest(l.subj.control(), l.subj.replies(l.cfg.Node), append([]byte{opControl}, data...)); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", layer.ErrUnavailable, err)
	}
	t := time.NewTimer(l.cfg.Timeout)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	missing = slices.Sorted(maps.Keys(c.want))
	if len(missing) > 0 {
		l.m.Unanswered.Inc()
		l.log.Warn("edges did not answer in time", "op", r.Op, "edges", missing, "timeout", l.cfg.Timeout)
	}
	answers, c.answers = c.answers, nil
	c.want = nil // later answers are dropped
	return answers, missing, nil
}

// answered takes an answer to one of this edge's requests.
func (l *Layer) answered(m *nats.Msg) {
	var a answer
	if err := json.Unmarshal(m.Data, &a); err != nil {
		l.log.Warn("malformed answer on NATS", "subject", m.Subject, "err", err)
		return
	}
	v, ok := l.calls.Load(a.ID)
	if !ok {
		return // too late
	}
	c := v.(*call)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.want == nil {
		return
	}
	c.answers = append(c.answers, a)
	if c.want[a.Node] {
		delete(c.want, a.Node)
		if len(c.want) == 0 {
			close(c.done)
		}
	}
}

// dispatch applies, in the order received, every message of the subscriptions
// that feed the channel: sends, then control requests, answered here.
func (l *Layer) dispatch() {
	defer l.stopped.Done()
	for {
		select {
		case m := <-l.ch:
			l.apply(m)
		case <-l.stop:
			return
		}
	}
}

func (l *Layer) apply(m *nats.Msg) {
	if len(m.Data) == 0 {
		return
	}
	switch m.Data[0] {
	case opSend:
		s, err := decodeSend(m.Data)
		if err != nil {
			l.log.Warn("malformed send on NATS", "subject", m.Subject)
			return
		}
		l.edge.Deliver(s)
	case opControl:
		var r request
		if err := json.Unmarshal(m.Data[1:], &r); err != nil {
			l.log.Warn("malformed request on NATS", "subject", m.Subject, "err", err)
			return
		}
		l.answer(m.Reply, r)
	default:
		l.log.Warn("unknown message on NATS", "subject", m.Subject)
	}
}

// answer applies r to this edge and publishes the answer to reply.
func (l *Layer) answer(reply string, r request) {
	a := answer{ID: r.ID, Node: l.cfg.Node}
	switch {
	case r.To == nil && (r.Op == opAdd || r.Op == opDiscard || r.Op == opDisconnect):
		a.Err = "no_target"
	case r.Op == opAdd:
		if err := l.edge.GroupAdd(r.Group, *r.To); errors.Is(err, registry.ErrTooManyGroups) {
			a.Err = errTooManyGroups
		} else if err != nil {
			a.Err = err.Error()
		}
	case r.Op == opDiscard:
		l.edge.GroupDiscard(r.Group, *r.To)
	case r.Op == opDisconnect:
		l.edge.Disconnect(*r.To, r.Code, r.Reason)
	case r.Op == opList:
		a.Conns = l.edge.List(layer.ListQuery{To: r.To, After: r.After, Limit: max(0, min(r.Limit, 1001))})
	case r.Op == opPresence:
		a.Users = l.edge.Presence(r.Group)
	default:
		a.Err = "unknown_op"
	}
	if reply == "" {
		return
	}
	data, _ := json.Marshal(a)
	for limit := l.nc.MaxPayload() - 1024; int64(len(data)) > limit && len(a.Conns) > 0; {
		a.Conns, a.Cut = a.Conns[:len(a.Conns)/2], true // answer a prefix; the asker pages on
		data, _ = json.Marshal(a)
	}
	if err := l.nc.Publish(reply, data); err != nil {
		l.log.Warn("NATS: cannot answer", "op", r.Op, "to", r.From, "err", err)
	}
}

// heartbeat is what an edge announces on the heartbeat subject.
type heartbeat struct {
	Node     string `json:"node"`
	Instance string `json:"instance"`
	Kind     string `json:"kind"` // hello (answer with a beat), beat, bye
}

// announce publishes this edge's heartbeat of kind on nc.
func (l *Layer) announce(nc *nats.Conn, kind string) {
	data, _ := json.Marshal(heartbeat{Node: l.cfg.Node, Instance: l.instance, Kind: kind})
	_ = nc.Publish(l.subj.heartbeat(), data)
}

// heard takes another edge's heartbeat.
func (l *Layer) heard(m *nats.Msg) {
	var h heartbeat
	if json.Unmarshal(m.Data, &h) != nil || !registry.ValidNodeID(h.Node) {
		return
	}
	l.mu.Lock()
	if h.Node == l.cfg.Node {
		warn := h.Instance != l.instance && !l.dupWarned[h.Instance]
		l.dupWarned[h.Instance] = true
		l.mu.Unlock()
		if warn {
			l.log.Error("another edge uses this node id: connection ids and answers collide; give each edge its own EDGESVC_NODE_ID", "node_id", h.Node)
		}
		return
	}
	_, known := l.peers[h.Node]
	if h.Kind == "bye" {
		delete(l.peers, h.Node)
	} else {
		l.peers[h.Node] = peer{seen: time.Now()}
	}
	l.m.Edges.Set(float64(len(l.peers) + 1))
	l.mu.Unlock()
	switch {
	case h.Kind == "bye":
		l.log.Info("edge left", "node_id", h.Node)
	case !known:
		l.log.Info("edge joined", "node_id", h.Node)
	}
	if h.Kind == "hello" {
		l.announce(l.nc, "beat")
	}
}

// live returns the edges heard from within three heartbeats, and this one.
func (l *Layer) live() map[string]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]bool{l.cfg.Node: true}
	for node, p := range l.peers {
		if time.Since(p.seen) < 3*l.cfg.Heartbeat {
			out[node] = true
		}
	}
	return out
}

// beat announces this edge every heartbeat, forgets edges gone silent and counts
// dropped messages.
func (l *Layer) beat() {
	defer l.stopped.Done()
	t := time.NewTicker(l.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-l.stop:
			return
		}
		if l.connected() {
			l.announce(l.nc, "beat")
		}
		var gone []string
		l.mu.Lock()
		for node, p := range l.peers {
			if time.Since(p.seen) >= 3*l.cfg.Heartbeat {
				delete(l.peers, node)
				gone = append(gone, node)
			}
		}
		l.m.Edges.Set(float64(len(l.peers) + 1))
		dropped := l.droppedGone
		for _, sub := range l.interest {
			if n, err := sub.Dropped(); err == nil {
				dropped += int64(n)
			}
		}
		for _, sub := range l.fixed {
			if n, err := sub.Dropped(); err == nil {
				dropped += int64(n)
			}
		}
		if dropped > l.droppedSeen {
			l.m.Dropped.Add(float64(dropped - l.droppedSeen))
			l.droppedSeen = dropped
		}
		l.mu.Unlock()
		for _, node := range gone {
			l.log.Warn("edge gone silent: its connections leave listings and presence", "node_id", node, "after", 3*l.cfg.Heartbeat)
		}
	}
}

// Close tells the other edges this one is leaving and closes the NATS connection.
// Calls after the first do nothing.
func (l *Layer) Close() {
	l.closeOnce.Do(func() {
		if l.connected() {
			l.announce(l.nc, "bye")
			_ = l.nc.FlushTimeout(time.Second)
		}
		l.nc.Close()
		close(l.stop)
		l.stopped.Wait()
	})
}
