// Package natslayer is the layer between edges over core NATS: what one edge sends,
// adds to a group, kicks or asks reaches the connections of every edge that shares
// the NATS server (or cluster), the subject prefix and the layer key.
//
// Every message an edge publishes is sealed with the layer key (seal.go); what does
// not open, was heard before or asks for what no edge may ask is dropped and
// counted. A client of the NATS server without the key reads nothing and can make
// no edge do anything.
//
// Each edge subscribes, on one NATS connection, to the subjects of the users,
// sessions and groups it holds connections of (from the first to the last, as the
// registry reports them), to its own node subject (sends to one connection) and to
// the control subject (group changes, kicks, listings and presence, answered by
// every edge), to its replies subject and to the heartbeat subject. Everything the
// edge does on NATS — subscribe, unsubscribe, publish — goes through one outbox, in
// order, worked by one goroutine that seals each message: no caller, and never the
// registry's lock, waits for NATS. Everything received comes in on one channel, in
// the order NATS delivered it, to a forwarder that opens it and checks it for
// replays; heartbeats it takes at once, answers go to a collector, and the rest to
// one inbox, bounded in bytes, applied in order by one dispatcher goroutine:
// messages one edge published reach each other edge's connections in the order it
// published them, and an edge receives its own sends the same way, so nothing is
// delivered twice. Questions (listings, presence) are answered aside, by a few
// goroutines, so that a flood of them delays no delivery.
// Edges announce themselves on a heartbeat subject; a call that must reach every
// edge waits for the edges heard from within the last three heartbeats.
//
// The layer is usable while nats.go is connected and this edge's own heartbeat came
// back lately (a stalled server is noticed within three heartbeats). Otherwise calls
// made under layer.RequireAll fail with layer.ErrUnavailable, doing nothing; other
// sends (consumers') reach this edge's connections only, through the dispatcher, in
// order; group changes and kicks fail with ErrUnavailable (they are not sends);
// listings and presence answer with this edge's part, partial. nats.go reconnects
// by itself and restores every subscription.
package natslayer

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
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
	// Pending bounds the bytes of received messages waiting for the dispatcher, and
	// of messages waiting to be published; past it a message is dropped (counted and
	// logged: delivery is at most once). Default 64 MiB each.
	Pending int64
	// Heartbeat is how often the edge announces itself; an edge not heard from for
	// three of them is gone. Default 1 s.
	Heartbeat time.Duration
	// Timeout bounds how long a call waits for every edge's answer. Default 2 s.
	Timeout time.Duration
	// MaxMessage is the largest message the edge sends; a NATS server whose
	// max_payload cannot carry it is warned of.
	MaxMessage int64
	// Key is the layer key (at least MinKeyBytes): every edge of one system has it.
	// Fallbacks are earlier keys, accepted on receive during a rotation, never used
	// to send.
	Key       []byte
	Fallbacks [][]byte
	// Options are more nats.go options (TLS, credentials), applied last.
	Options []nats.Option
}

// Metrics are the series the layer keeps.
type Metrics struct {
	Connected   prometheus.Gauge   // 1 while the layer is usable
	Edges       prometheus.Gauge   // edges heard from, this one included
	Dropped     prometheus.Counter // received messages dropped: the dispatcher was behind
	Unsent      prometheus.Counter // messages not published: NATS did not take them
	Unconfirmed prometheus.Counter // sends whose connection failed before the server confirmed them
	Unanswered  prometheus.Counter // calls an edge did not answer in time
	LocalOnly   prometheus.Counter // sends delivered on this edge only, NATS being unusable
	Refused     prometheus.Counter // calls refused with ErrUnavailable, NATS being unusable
	Disconnects prometheus.Counter // NATS connections lost
	// Rejected counts received messages dropped, by reason: "open" (not sealed with
	// the layer key or a fallback, for its subject), "replay" (heard before, or sent
	// outside the replay window) and "invalid" (sealed, but asking for what no edge
	// may ask, or malformed).
	Rejected *prometheus.CounterVec
}

// Layer is the layer between edges. Make one with New, pass Watch to the registry,
// and Close it last.
type Layer struct {
	cfg    Config
	subj   subjects
	edge   layer.Edge
	m      Metrics
	log    *slog.Logger
	nc     *nats.Conn
	origin [8]byte // this run of the edge (random): the instance its seals carry

	// orderMu orders this edge's sends: each takes the next sequence number and its
	// place in the outbox (or, NATS being unusable, the inbox) at once. The
	// dispatcher delivers a send of this edge's only if it comes after the last one
	// it delivered (lastOwn): an echo that NATS hands back after a later send was
	// delivered here directly is dropped rather than delivered out of order.
	orderMu sync.Mutex
	sendSeq uint64
	lastOwn uint64 // the dispatcher's

	in        chan *nats.Msg                // from nats.go's reader, every subscription's, for the forwarder
	inbox     *queue[received]              // for the dispatcher
	answers   *queue[received]              // for the collector
	questions chan question                 // for those answering aside
	outbox    *queue[outgoing]              // for the sender
	subs      map[string]*nats.Subscription // the sender's: subject → subscription
	fixed     []*nats.Subscription

	// Sealing: the sender seals with out and numbers what it publishes (counter);
	// the forwarder opens with in and drops replays with guard.
	out, opener  sealer
	counter      uint64 // the sender's
	guard        *replayGuard
	rejected     map[string]prometheus.Counter // by reason
	rejectLogged [3]atomic.Int64               // unix ns each reason was last logged (reasonIndex)

	up          atomic.Bool  // nats.go is connected
	closing     atomic.Bool  // Close has begun
	upSince     atomic.Int64 // unix ns of the last (re)connect
	usableSince atomic.Int64 // unix ns the layer last became usable (a reconnect, or a stall's end)
	selfSeen    atomic.Int64 // unix ns this edge's own heartbeat last came back
	maxPayload  atomic.Int64 // the server's, as of the last connect

	mu          sync.Mutex
	peers       map[string]peer      // other edges, by node id
	byes        map[string]time.Time // edges that said bye, when (kept a minute)
	dropped     int64                // received messages dropped by nats.go, as last summed
	droppedGone int64                // of subscriptions since ended
	lastWarn    map[string]time.Time // for rate-limited warnings

	// published counts the sends handed to nats.go; the confirmer flushes (a PING
	// the server answers after everything before it) after each batch, and counts
	// those the connection failed with before it answered as unconfirmed (so does
	// the disconnect handler, for what was outstanding when the connection died).
	published atomic.Uint64
	confirm   chan struct{}
	confirmMu sync.Mutex
	confirmed uint64        // published sends confirmed or counted, under confirmMu
	conns     atomic.Uint64 // connections lost so far: a flush across one confirms nothing before it
	flushCtx  context.Context
	endFlush  context.CancelFunc // Close: a flush in progress stops waiting

	// After a reconnect, sends that must reach every edge wait until the edges
	// live when the connection was lost have been heard on the new one (they have
	// resubscribed by then), or have left, or a grace of three heartbeats has passed.
	reconnectedAt time.Time       // under mu; with its monotonic reading
	expect        map[string]bool // under mu: edges to hear again since reconnectedAt

	seq   atomic.Uint64
	calls sync.Map // request id → *call

	stop      chan struct{}
	stopped   sync.WaitGroup
	closeOnce sync.Once
}

// peer is another edge as heard from.
type peer struct {
	seen     time.Time
	instance [8]byte
}

// received is a message that opened (or a send of this edge's, delivered here while
// NATS is unusable): where it came, its sender and its payload.
type received struct {
	subject, reply string
	from           meta
	data           []byte
}

// size is what r counts for in a queue bounded in bytes.
func (r received) size() int64 { return int64(len(r.data) + len(r.subject) + len(r.reply)) }

// outgoing is one thing the sender does on NATS, in order.
type outgoing struct {
	sub, unsub     bool // subscribe to or unsubscribe from subject; else publish
	subject, reply string
	data           []byte
	send           bool       // a send to connections (counted for confirmation)
	done           chan error // if not nil, told how the publish went
}

// maxPeers bounds the edges remembered (anyone who may publish under the prefix
// could announce more).
const maxPeers = 1024

// Validate checks what New would refuse, for a command to report before it starts.
func Validate(urls, prefix string) error {
	if strings.TrimSpace(urls) == "" {
		return errors.New("no NATS URL")
	}
	for _, u := range strings.Split(urls, ",") {
		u = strings.TrimSpace(u)
		if !strings.Contains(u, "://") {
			u = "nats://" + u
		}
		p, err := url.Parse(u)
		if err != nil || p.Host == "" || (p.Path != "" && p.Path != "/") || p.RawQuery != "" {
			return fmt.Errorf("NATS URL %q: want nats://host:port (or tls://, ws://, wss://), comma-separated", redact(u))
		}
		switch p.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return fmt.Errorf("NATS URL %q: scheme %q, want nats, tls, ws or wss", redact(u), p.Scheme)
		}
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
		cfg.Pending = 64 << 20
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	keys, err := newKeyring(cfg.Key, cfg.Fallbacks)
	if err != nil {
		return nil, err
	}
	var nonce [8]byte
	_, _ = rand.Read(nonce[:])
	l := &Layer{
		cfg: cfg, subj: newSubjects(cfg.Prefix, keys.secrets), edge: edge, m: m, log: log.With("layer", "nats"),
		origin: nonce,
		in:     make(chan *nats.Msg, 65536), inbox: newQueue[received](cfg.Pending), answers: newQueue[received](cfg.Pending),
		questions: make(chan question, maxQuestions), outbox: newQueue[outgoing](cfg.Pending),
		out: sealer{k: keys}, opener: sealer{k: keys}, guard: newReplayGuard(time.Now()), rejected: map[string]prometheus.Counter{},
		subs: map[string]*nats.Subscription{}, peers: map[string]peer{}, byes: map[string]time.Time{}, lastWarn: map[string]time.Time{},
		stop: make(chan struct{}), confirm: make(chan struct{}, 1),
	}
	for _, reason := range []string{rejectOpen, rejectReplay, rejectInvalid} {
		l.rejected[reason] = m.Rejected.WithLabelValues(reason)
	}
	l.flushCtx, l.endFlush = context.WithCancel(context.Background())
	l.maxPayload.Store(1 << 20) // NATS's default, until the server says
	opts := []nats.Option{
		nats.Name("gatehouse-edge " + cfg.Node),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.ReconnectBufSize(-1), // while disconnected, publishing fails rather than queueing: nothing goes out late
		nats.IgnoreAuthErrorAbort(),
		nats.PingInterval(time.Second), // a dead connection is noticed in about 2 s
		nats.MaxPingsOutstanding(2),
		nats.FlusherTimeout(2 * time.Second), // a stalled server fails writes rather than holding them a minute
		nats.ConnectHandler(func(nc *nats.Conn) { l.connected(nc, "connected") }),
		nats.ReconnectHandler(func(nc *nats.Conn) { l.connected(nc, "reconnected") }),
		nats.DisconnectErrHandler(l.disconnected),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) { l.warnEvery("reconnect", "cannot reach NATS; retrying", "err", err) }),
		nats.ClosedHandler(func(*nats.Conn) { l.closed() }),
		nats.ErrorHandler(l.asyncError),
	}
	nc, err := nats.Connect(cfg.URL, append(opts, cfg.Options...)...)
	if err != nil {
		return nil, fmt.Errorf("NATS: %w", err)
	}
	l.nc = nc
	// Subscriptions made before the sender starts: the first hello it sends finds
	// them in place, so the answering beats are heard. All on one channel, so the
	// forwarder sees each sender's messages in the order it published them.
	fixed := append([]string{l.subj.control(), l.subj.heartbeat()}, l.subj.all('n', cfg.Node)...)
	for _, s := range append(fixed, l.subj.all('r', cfg.Node)...) {
		sub, err := nc.ChanSubscribe(s, l.in)
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("NATS: subscribe %s: %w", s, err)
		}
		l.fixed = append(l.fixed, sub)
	}
	l.m.Edges.Set(1)
	if nc.IsConnected() { // the connect handler, which runs later, says so too
		l.markUp(nc)
	}
	l.stopped.Add(6 + answerers)
	go l.forward()
	go l.dispatch()
	go l.collect()
	go l.send()
	go l.beat()
	go l.confirmer()
	for range answerers {
		go l.answerAside()
	}
	if !nc.IsConnected() {
		l.log.Warn("NATS is not reachable yet: the edge API's calls answer LAYER_UNAVAILABLE and consumers reach this edge's connections only until it is", "url", redact(cfg.URL))
	}
	return l, nil
}

// redact hides the credentials a NATS URL may hold.
func redact(urls string) string {
	var out []string
	for _, u := range strings.Split(urls, ",") {
		if at := strings.LastIndexByte(u, '@'); at >= 0 {
			if scheme, _, ok := strings.Cut(u, "://"); ok {
				u = scheme + "://[redacted]@" + u[at+1:]
			} else {
				u = "[redacted]@" + u[at+1:]
			}
		}
		out = append(out, strings.TrimSpace(u))
	}
	return strings.Join(out, ",")
}

// connected runs when nats.go has (re)established the connection and restored
// every subscription; the other edges hear of this one at once. It may run before
// New has set l.nc.
func (l *Layer) connected(nc *nats.Conn, what string) {
	l.markUp(nc)
	l.log.Info("NATS "+what, "server", nc.ConnectedUrlRedacted())
	if limit := nc.MaxPayload() - sendOverhead; l.cfg.MaxMessage > limit {
		l.log.Warn("NATS's max_payload is below the edge's read limit plus room for a send's header: sends over max_payload less that room fail with PAYLOAD_TOO_LARGE; raise max_payload in the NATS server's configuration or lower EDGESVC_READ_LIMIT",
			"max_payload", nc.MaxPayload(), "read_limit", l.cfg.MaxMessage, "room", sendOverhead)
	}
	l.announce(beatHello)
}

// markUp records that nc is connected.
func (l *Layer) markUp(nc *nats.Conn) {
	l.maxPayload.Store(nc.MaxPayload())
	l.mu.Lock()
	l.reconnectedAt = time.Now()
	l.mu.Unlock()
	now := time.Now().UnixNano()
	l.upSince.Store(now)
	l.usableSince.Store(now)
	l.up.Store(true)
	l.m.Connected.Set(1)
}

func (l *Layer) disconnected(_ *nats.Conn, err error) {
	l.up.Store(false)
	l.m.Connected.Set(0)
	l.conns.Add(1)
	// What went out on this connection unconfirmed may have died with it.
	l.settle(l.published.Load(), fmt.Errorf("connection lost: %v", err))
	if l.closing.Load() {
		return
	}
	// The edges live now must be heard again after the reconnect before a send that
	// must reach them all goes out.
	l.mu.Lock()
	l.expect = map[string]bool{}
	for node, p := range l.peers {
		if time.Since(p.seen) < 3*l.cfg.Heartbeat {
			l.expect[node] = true
		}
	}
	l.mu.Unlock()
	l.m.Disconnects.Inc()
	l.log.Warn("NATS connection lost: the edge API's calls answer LAYER_UNAVAILABLE and consumers reach this edge's connections only until it is back", "err", err)
}

func (l *Layer) closed() {
	l.up.Store(false)
	l.m.Connected.Set(0)
	select {
	case <-l.stop: // Close
	default:
		l.log.Error("NATS connection closed for good: this edge is on its own until it restarts")
	}
}

func (l *Layer) asyncError(_ *nats.Conn, sub *nats.Subscription, err error) {
	if errors.Is(err, nats.ErrSlowConsumer) {
		l.warnEvery("slow", "NATS messages dropped: this edge takes them slower than they come (deliveries are at most once)")
		return
	}
	subject := ""
	if sub != nil {
		subject = sub.Subject
	}
	l.warnEvery(err.Error(), "NATS error", "subject", subject, "err", err)
}

// warnEvery logs a warning of kind at most every 10 s.
func (l *Layer) warnEvery(kind, msg string, args ...any) {
	l.logEvery(kind, 10*time.Second, slog.LevelWarn, msg, args...)
}

// logEvery logs msg at level at most once every period for each kind.
func (l *Layer) logEvery(kind string, period time.Duration, level slog.Level, msg string, args ...any) {
	l.mu.Lock()
	last, ok := l.lastWarn[kind]
	if ok && time.Since(last) < period {
		l.mu.Unlock()
		return
	}
	if len(l.lastWarn) > 100 {
		clear(l.lastWarn)
	}
	l.lastWarn[kind] = time.Now()
	l.mu.Unlock()
	l.log.Log(context.Background(), level, msg, args...)
}

// Why a received message is dropped (gatehouse_edge_nats_rejected_total's reasons).
const (
	rejectOpen    = "open"
	rejectReplay  = "replay"
	rejectInvalid = "invalid"
)

// reasonIndex is reason's place in Layer.rejectLogged.
func reasonIndex(reason string) int {
	switch reason {
	case rejectOpen:
		return 0
	case rejectReplay:
		return 1
	}
	return 2
}

// reject counts a received message dropped for reason, and logs it at most once a
// minute for each reason.
func (l *Layer) reject(reason, subject string, args ...any) {
	l.rejected[reason].Inc()
	// A flood of garbage is counted here and goes no further: the shared lock that
	// logEvery takes, and the log line's arguments, only once a minute.
	last := &l.rejectLogged[reasonIndex(reason)]
	if t := last.Load(); t != 0 && time.Since(time.Unix(0, t)) < time.Minute {
		return
	}
	last.Store(time.Now().UnixNano())
	var msg string
	switch reason {
	case rejectOpen:
		msg = "a message on NATS does not open with the layer key: dropped. It was sealed with another key (EDGESVC_LAYER_KEY differs between edges, or a rotation's old key is not in EDGESVC_LAYER_KEY_FALLBACKS_FILE), came from an edge of a version before sealing, or from a NATS client that is not an edge"
	case rejectReplay:
		msg = "a message on NATS was heard before, or sent outside the replay window: dropped. A replay, or the clocks of the edges disagree by more than the window"
		args = append(args, "window", replayWindow)
	default:
		msg = "a sealed message on NATS asks for what no edge may: dropped"
	}
	l.logEvery("rejected "+reason, time.Minute, slog.LevelWarn, msg, append([]any{"reason", reason, "subject", subject}, args...)...)
}

// usable reports whether what is published now reaches the other edges: nats.go is
// connected and this edge heard its own heartbeat lately (or connected lately).
func (l *Layer) usable() bool {
	if !l.up.Load() || l.closing.Load() {
		return false
	}
	window := 3 * l.cfg.Heartbeat.Nanoseconds()
	now := time.Now().UnixNano()
	return now-l.selfSeen.Load() < window || now-l.upSince.Load() < window
}

// Watch subscribes to what reaches t's connections while this edge holds some (on),
// and unsubscribes when it holds none. The registry calls it, in order, under its
// lock: it only queues the change for the sender.
func (l *Layer) Watch(t layer.Target, on bool) {
	if t.Kind == layer.Connection || l.closing.Load() {
		return
	}
	for _, s := range l.subj.targets(t) { // one per key, during a rotation
		l.outbox.push(outgoing{sub: on, unsub: !on, subject: s}, 0, true)
	}
}

// send works the outbox: subscriptions, unsubscriptions and publishes (sealed), in
// order.
func (l *Layer) send() {
	defer l.stopped.Done()
	var sealed []byte // nats.go copies what it publishes
	for {
		select {
		case <-l.outbox.ready:
		case <-l.stop:
			return
		}
		for _, e := range l.outbox.take() {
			select {
			case <-l.stop:
				return
			default:
			}
			o := e.v
			l.outbox.release(e.size)
			switch {
			case o.sub:
				if l.subs[o.subject] != nil {
					continue
				}
				sub, err := l.nc.ChanSubscribe(o.subject, l.in)
				if err != nil {
					if !l.nc.IsClosed() {
						l.log.Error("NATS: cannot subscribe: sends from other edges will not reach this edge's connections", "subject", o.subject, "err", err)
					}
					continue
				}
				l.mu.Lock()
				l.subs[o.subject] = sub
				l.mu.Unlock()
			case o.unsub:
				l.mu.Lock()
				sub := l.subs[o.subject]
				delete(l.subs, o.subject)
				if sub != nil {
					if n, err := sub.Dropped(); err == nil {
						l.droppedGone += int64(n)
					}
				}
				l.mu.Unlock()
				if sub != nil {
					_ = sub.Unsubscribe()
				}
			default:
				l.counter++
				sealed = l.out.seal(sealed, o.subject, o.reply, meta{instance: l.origin, counter: l.counter, sent: time.Now().UnixNano()}, o.data)
				var err error
				if o.reply == "" {
					err = l.nc.Publish(o.subject, sealed)
				} else {
					err = l.nc.PublishRequest(o.subject, o.reply, sealed)
				}
				if err != nil {
					l.m.Unsent.Inc()
					l.warnEvery("unsent", "NATS did not take a message: it is lost (deliveries are at most once)", "subject", o.subject, "err", err)
				} else if o.send {
					l.published.Add(1)
				}
				if o.done != nil {
					o.done <- err
				}
			}
		}
		select { // have what went out confirmed
		case l.confirm <- struct{}{}:
		default:
		}
	}
}

// confirmer has the sends handed to nats.go confirmed by the server: after each batch
// it flushes (a PING, answered once the server has everything before it). Sends
// whose connection failed before the answer may have died with it — written to a
// socket the server never read — and are counted as unconfirmed: the one loss a
// sender cannot tell apart from a delivery.
func (l *Layer) confirmer() {
	defer l.stopped.Done()
	for {
		select {
		case <-l.confirm:
		case <-l.stop:
			return
		}
		n := l.published.Load()
		l.confirmMu.Lock()
		pending := n > l.confirmed
		l.confirmMu.Unlock()
		if !pending {
			continue
		}
		conns := l.conns.Load()
		ctx, cancel := context.WithTimeout(l.flushCtx, l.cfg.Timeout)
		err := l.nc.FlushWithContext(ctx)
		cancel()
		if err == nil && l.conns.Load() != conns {
			// Answered on a new connection: what went out on the lost one is not
			// confirmed by it (the disconnect handler counted it).
			err = errors.New("the connection was lost during the flush")
		}
		l.settle(n, err)
	}
}

// settle marks the sends published up to n as confirmed (err nil) or counts those not
// yet confirmed as unconfirmed.
func (l *Layer) settle(n uint64, err error) {
	l.confirmMu.Lock()
	defer l.confirmMu.Unlock()
	if n <= l.confirmed {
		return
	}
	if err != nil && !l.closing.Load() {
		l.m.Unconfirmed.Add(float64(n - l.confirmed))
		l.warnEvery("unconfirmed", "NATS failed before confirming sends: they may be lost (deliveries are at most once)", "sends", n-l.confirmed, "err", err)
	}
	l.confirmed = n
}

// publish queues data for subject (answers to reply); false if the outbox is full.
func (l *Layer) publish(subject, reply string, data []byte) bool {
	return l.outbox.push(outgoing{subject: subject, reply: reply, data: data}, int64(len(data)), false)
}

// allHeard reports whether every edge this one counts as live has been heard since
// this edge last connected to NATS: only then are their subscriptions known to be on
// the server it publishes to (an edge resubscribes on reconnecting before it
// publishes anything, and a server keeps one connection's messages in order). Just
// after NATS comes back, an edge that has not reconnected yet would miss a send.
func (l *Layer) allHeard() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.expect) == 0 {
		return true
	}
	if time.Since(l.reconnectedAt) >= 3*l.cfg.Heartbeat {
		clear(l.expect) // those not back by now count as gone
		return true
	}
	for node := range l.expect {
		if p, ok := l.peers[node]; !ok || p.seen.After(l.reconnectedAt) {
			delete(l.expect, node) // heard again, or left
		}
	}
	return len(l.expect) == 0
}

// forward opens what nats.go received, in the order it came, and drops (counting
// them) what does not open and replays. It takes heartbeats itself, passes answers
// to the collector and the rest to the inbox, dropping (and counting) what does not
// fit their byte bounds.
func (l *Layer) forward() {
	defer l.stopped.Done()
	heartbeats, replies := l.subj.heartbeat(), l.subj.all('r', l.cfg.Node)
	for {
		var m *nats.Msg
		select {
		case m = <-l.in:
		case <-l.stop:
			return
		}
		from, data, err := l.opener.open(m.Subject, m.Reply, m.Data)
		if err != nil {
			l.reject(rejectOpen, m.Subject, "bytes", len(m.Data))
			continue
		}
		if !l.guard.accept(from, time.Now()) {
			l.reject(rejectReplay, m.Subject, "sent", time.Unix(0, from.sent).UTC())
			continue
		}
		r := received{subject: m.Subject, reply: m.Reply, from: from, data: data}
		switch {
		case m.Subject == heartbeats:
			l.heard(r)
		case slices.Contains(replies, m.Subject):
			if !l.answers.push(r, r.size(), false) {
				l.m.Dropped.Inc()
				l.warnEvery("behind answers", "answers on NATS dropped: this edge takes them slower than they come")
			}
		default:
			if !l.inbox.push(r, r.size(), false) {
				l.m.Dropped.Inc()
				l.warnEvery("behind", "NATS messages dropped: this edge's dispatcher is behind (deliveries are at most once)")
			}
		}
	}
}

// collect takes the answers to this edge's requests, in order.
func (l *Layer) collect() {
	defer l.stopped.Done()
	for {
		select {
		case <-l.answers.ready:
		case <-l.stop:
			return
		}
		for _, e := range l.answers.take() {
			l.answered(e.v)
			l.answers.release(e.size)
		}
	}
}

// dispatch applies, in the order received, everything in the inbox: sends (from
// NATS, or delivered locally while NATS is unusable) and control requests.
func (l *Layer) dispatch() {
	defer l.stopped.Done()
	for {
		select {
		case <-l.inbox.ready:
		case <-l.stop:
			return
		}
		for _, e := range l.inbox.take() {
			l.apply(e.v)
			l.inbox.release(e.size)
		}
	}
}

func (l *Layer) apply(r received) {
	if len(r.data) == 0 {
		l.reject(rejectInvalid, r.subject, "err", "empty")
		return
	}
	switch r.data[0] {
	case opSend:
		s, seq, err := decodeSend(r.data)
		if err == nil {
			err = checkSend(s)
		}
		if err != nil {
			l.reject(rejectInvalid, r.subject, "err", err)
			return
		}
		if r.from.instance == l.origin {
			if seq <= l.lastOwn { // a later send of this edge's was delivered already
				l.m.Dropped.Inc()
				return
			}
			l.lastOwn = seq
		}
		l.edge.Deliver(s)
	case opControl:
		var q request
		if err := json.Unmarshal(r.data[1:], &q); err != nil {
			l.reject(rejectInvalid, r.subject, "err", err)
			return
		}
		if err := checkRequest(q, r.reply, l.subj); err != nil {
			l.reject(rejectInvalid, r.subject, "op", q.Op, "from", q.From, "err", err)
			if registry.ValidNodeID(q.From) && slices.Contains(l.subj.all('r', q.From), r.reply) && q.ID != 0 { // the asker need not wait
				l.reply(r.reply, answer{ID: q.ID, Node: l.cfg.Node, Err: "invalid: " + err.Error()})
			}
			return
		}
		if q.Op == opList || q.Op == opPresence {
			// Questions wait for nothing that follows them: answered aside, from the
			// registry as it stands after everything before them, so deliveries go
			// on. Past maxQuestions waiting, the asker finds this edge missing.
			select {
			case l.questions <- question{reply: r.reply, q: q}: // decoded: the message's bytes are let go
			default:
				l.m.Dropped.Inc()
				l.warnEvery("questions", "listing and presence questions on NATS dropped: more are waiting than this edge answers", "waiting", maxQuestions)
			}
			return
		}
		l.answer(r.reply, q)
	default:
		l.reject(rejectInvalid, r.subject, "err", "unknown kind of message")
	}
}

// Answering questions aside: answerers goroutines, at most maxQuestions waiting.
const (
	answerers    = 4
	maxQuestions = 1024
)

// question is a listing or presence request waiting to be answered.
type question struct {
	reply string
	q     request
}

// answerAside answers the questions the dispatcher passes on.
func (l *Layer) answerAside() {
	defer l.stopped.Done()
	for {
		select {
		case q := <-l.questions:
			l.answer(q.reply, q.q)
		case <-l.stop:
			return
		}
	}
}

// Send publishes m to its target's subject; every edge holding a connection it
// matches (this one included) delivers it.
func (l *Layer) Send(ctx context.Context, m layer.Send) error {
	s, ok := l.subj.target(m.To)
	if !ok {
		return nil // no connection anywhere can match it
	}
	data := encodeSend(m)
	if int64(len(data)+sealOverhead) > l.maxPayload.Load() {
		return fmt.Errorf("%w (NATS max_payload %d bytes)", layer.ErrTooLarge, l.maxPayload.Load())
	}
	required := layer.AllRequired(ctx)
	if required && l.usable() && !l.allHeard() {
		// Refused, not sent: the caller may retry without a duplicate.
		l.m.Refused.Inc()
		return fmt.Errorf("%w: not every edge has reconnected to NATS yet", layer.ErrUnavailable)
	}
	l.orderMu.Lock()
	defer l.orderMu.Unlock()
	l.sendSeq++
	stamp(data, l.sendSeq)
	if l.usable() && l.outbox.push(outgoing{subject: s, data: data, send: true}, int64(len(data)), false) {
		return nil
	}
	if required {
		l.m.Refused.Inc()
		return fmt.Errorf("%w: NATS is not usable", layer.ErrUnavailable)
	}
	// This edge's members only, after what it delivered before (an older send NATS
	// hands back later is dropped).
	l.m.LocalOnly.Inc()
	own := received{from: meta{instance: l.origin}, data: data}
	if !l.inbox.push(own, own.size(), false) {
		l.m.Dropped.Inc()
	}
	return nil
}

// GroupAdd has every edge join its connections to matches to group.
func (l *Layer) GroupAdd(ctx context.Context, group string, to layer.Target) error {
	return l.change(ctx, request{Op: opAdd, Group: group, To: &to})
}

// GroupDiscard has every edge take its connections to matches out of group.
func (l *Layer) GroupDiscard(ctx context.Context, group string, to layer.Target) error {
	return l.change(ctx, request{Op: opDiscard, Group: group, To: &to})
}

// Disconnect has every edge close its connections to matches.
func (l *Layer) Disconnect(ctx context.Context, to layer.Target, code int, reason string) error {
	return l.change(ctx, request{Op: opDisconnect, To: &to, Code: code, Reason: reason})
}

// change sends a change to every edge and returns once each edge heard from lately
// has applied it. While NATS is unusable it fails with ErrUnavailable, doing
// nothing; an edge that does not answer in time makes it fail with ErrUnavailable
// too: the others did apply it, and every change is idempotent, so the caller may
// retry.
func (l *Layer) change(ctx context.Context, r request) error {
	answers, missing, err := l.ask(ctx, r)
	if err != nil {
		if errors.Is(err, layer.ErrUnavailable) {
			l.m.Refused.Inc()
		}
		return err
	}
	for _, a := range answers {
		switch a.Err {
		case "":
		case errTooManyGroups:
			return registry.ErrTooManyGroups
		default:
			return fmt.Errorf("%w: edge %s did not apply it: %s", layer.ErrUnavailable, a.Node, a.Err)
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
		if a.Err != "" {
			missing = append(missing, a.Node)
			continue
		}
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
	answers, missing, err := l.ask(ctx, request{Op: opPresence, Group: group})
	if errors.Is(err, layer.ErrUnavailable) {
		return l.edge.Presence(group), true, nil
	}
	if err != nil {
		return nil, false, err
	}
	byUser := map[int64]*layer.PresentUser{}
	for _, a := range answers {
		if a.Err != "" {
			missing = append(missing, a.Node)
			continue
		}
		for _, u := range a.Users {
			if p := byUser[u.ID]; p != nil {
				p.Count += u.Count
			} else {
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

// errTooManyGroups is how an answer says registry.ErrTooManyGroups; errTooLarge,
// that the answer would not fit NATS's max_payload.
const (
	errTooManyGroups = "too_many_groups"
	errTooLarge      = "too_large"
)

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
	limit   int // connections asked for (listings)
	mu      sync.Mutex
	answers map[string]answer // by edge
	more    chan struct{}     // a token after each answer
}

// sentBy reports whether instance is node's run: this edge's own, or a peer's as its
// heartbeats say.
func (l *Layer) sentBy(node string, instance [8]byte) bool {
	if node == l.cfg.Node {
		return instance == l.origin
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	p, ok := l.peers[node]
	return ok && p.instance == instance
}

// ask publishes r to every edge and waits for the answers of the edges heard from
// lately (this one included), until ctx ends or Config.Timeout passes. It stops
// waiting for an edge that goes silent or leaves meanwhile. Right after the layer
// became usable it also waits one heartbeat, for the edges that answer its hello.
// missing names the edges that were waited for and did not answer (not those that
// said bye). It fails with ErrUnavailable, having published nothing, while NATS is
// unusable.
func (l *Layer) ask(ctx context.Context, r request) (answers []answer, missing []string, err error) {
	if !l.usable() {
		return nil, nil, fmt.Errorf("%w: NATS is not usable", layer.ErrUnavailable)
	}
	r.ID, r.From = l.seq.Add(1), l.cfg.Node
	data, err := json.Marshal(r)
	if err != nil {
		return nil, nil, err
	}
	c := &call{limit: r.Limit, answers: map[string]answer{}, more: make(chan struct{}, 1)}
	l.calls.Store(r.ID, c)
	defer l.calls.Delete(r.ID)
	began := time.Now()
	required := l.live()
	if !l.publish(l.subj.control(), l.subj.replies(l.cfg.Node), append([]byte{opControl}, data...)) {
		return nil, nil, fmt.Errorf("%w: NATS is not taking messages", layer.ErrUnavailable)
	}
	deadline := began.Add(l.cfg.Timeout)
	warm := time.Unix(0, max(l.upSince.Load(), l.usableSince.Load())).Add(l.cfg.Heartbeat)
	t := time.NewTimer(0)
	defer t.Stop()
	<-t.C
	for {
		now := time.Now()
		live := l.live()
		waiting := false
		c.mu.Lock()
		for node := range live {
			if _, ok := c.answers[node]; ok {
				continue
			}
			if required[node] {
				waiting = true
			} else if now.Before(warm) { // an edge that answered this one's hello
				required[node], waiting = true, true
			}
		}
		c.mu.Unlock()
		if !waiting && !now.Before(warm) || !now.Before(deadline) {
			break
		}
		// Wake for an answer, at the deadline, or soon: an edge waited for may go
		// silent, or another answer the hello.
		t.Reset(min(time.Until(deadline), l.cfg.Heartbeat/4))
		select {
		case <-c.more:
		case <-t.C:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
	c.mu.Lock()
	for _, a := range c.answers {
		answers = append(answers, a)
	}
	for node := range required {
		if _, ok := c.answers[node]; !ok && !l.saidBye(node, began) {
			missing = append(missing, node)
		}
	}
	c.answers = nil // later answers are dropped
	c.mu.Unlock()
	slices.Sort(missing)
	if len(missing) > 0 {
		l.m.Unanswered.Inc()
		l.warnEvery("unanswered", "edges did not answer in time", "op", r.Op, "edges", missing, "timeout", l.cfg.Timeout)
	}
	return answers, missing, nil
}

// saidBye reports whether node said bye since t.
func (l *Layer) saidBye(node string, t time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	at, ok := l.byes[node]
	return ok && !at.Before(t)
}

// answered takes an answer to one of this edge's requests.
func (l *Layer) answered(r received) {
	var a answer
	if err := json.Unmarshal(r.data, &a); err != nil || !registry.ValidNodeID(a.Node) {
		l.reject(rejectInvalid, r.subject, "err", "malformed answer")
		return
	}
	if !l.sentBy(a.Node, r.from.instance) {
		// Answers only from the edges heard from, each for itself.
		l.reject(rejectInvalid, r.subject, "err", "an answer from an edge not heard from", "node_id", a.Node)
		return
	}
	v, ok := l.calls.Load(a.ID)
	if !ok {
		return // too late
	}
	c := v.(*call)
	if err := checkAnswer(a, c.limit); err != nil {
		l.reject(rejectInvalid, r.subject, "err", err, "node_id", a.Node)
		return
	}
	c.mu.Lock()
	if c.answers != nil {
		c.answers[a.Node] = a
	}
	c.mu.Unlock()
	select {
	case c.more <- struct{}{}:
	default:
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
		a.Conns = l.edge.List(layer.ListQuery{To: r.To, After: r.After, Limit: max(0, min(r.Limit, maxListLimit))})
	case r.Op == opPresence:
		a.Users = l.edge.Presence(r.Group)
	default:
		a.Err = "unknown_op " + r.Op
	}
	l.reply(reply, a)
}

// reply publishes a to reply, cut to fit NATS's max_payload.
func (l *Layer) reply(reply string, a answer) {
	data, _ := json.Marshal(a)
	limit := l.maxPayload.Load() - 1024
	for int64(len(data)) > limit && len(a.Conns) > 0 {
		a.Conns, a.Cut = a.Conns[:len(a.Conns)/2], true // answer a prefix; the asker pages on
		data, _ = json.Marshal(a)
	}
	if int64(len(data)) > limit {
		l.warnEvery("too_large", "an answer is too large for NATS's max_payload: the asker sees it as missing", "bytes", len(data))
		data, _ = json.Marshal(answer{ID: a.ID, Node: l.cfg.Node, Err: errTooLarge})
	}
	if !l.publish(reply, "", data) {
		l.m.Unsent.Inc()
	}
}

// heartbeat is what an edge announces on the heartbeat subject (its instance is in
// the seal).
type heartbeat struct {
	Node string `json:"node"`
	Kind string `json:"kind"` // hello (answer with a beat), beat, bye
}

// The kinds of heartbeat.
const (
	beatHello = "hello"
	beatBeat  = "beat"
	beatBye   = "bye"
)

// announce queues this edge's heartbeat of kind.
func (l *Layer) announce(kind string) {
	data, _ := json.Marshal(heartbeat{Node: l.cfg.Node, Kind: kind})
	l.outbox.push(outgoing{subject: l.subj.heartbeat(), data: data}, int64(len(data)), true)
}

// heard takes a heartbeat that opened: this edge's own (NATS works) or another's.
func (l *Layer) heard(r received) {
	var h heartbeat
	if json.Unmarshal(r.data, &h) != nil || !registry.ValidNodeID(h.Node) || (h.Kind != beatHello && h.Kind != beatBeat && h.Kind != beatBye) {
		l.reject(rejectInvalid, r.subject, "err", "malformed heartbeat")
		return
	}
	if r.from.instance == l.origin {
		if h.Node == l.cfg.Node {
			l.selfSeen.Store(time.Now().UnixNano())
		}
		return
	}
	if h.Node == l.cfg.Node {
		l.logEvery("duplicate node id", time.Minute, slog.LevelError, "another edge uses this node id: connection ids and answers collide; give each edge its own EDGESVC_NODE_ID", "node_id", h.Node)
		return
	}
	l.mu.Lock()
	p, known := l.peers[h.Node]
	switch {
	case h.Kind == beatBye && known && p.instance != r.from.instance:
		// an earlier run of a node that has restarted: it is not the one that left
	case h.Kind == beatBye:
		delete(l.peers, h.Node)
		l.byes[h.Node] = time.Now()
	case known && p.instance != r.from.instance && time.Since(p.seen) < 3*l.cfg.Heartbeat && h.Kind != beatHello:
		// two live runs claim one node id: the one heard first keeps it until silent
		// (a restarted edge says hello first, and takes its place at once)
		l.mu.Unlock()
		l.logEvery("duplicate node id "+h.Node, time.Minute, slog.LevelError, "two edges use one node id: connection ids and answers collide; give each edge its own EDGESVC_NODE_ID", "node_id", h.Node)
		return
	case known || len(l.peers) < maxPeers:
		l.peers[h.Node] = peer{seen: time.Now(), instance: r.from.instance}
	}
	l.m.Edges.Set(float64(len(l.peers) + 1))
	l.mu.Unlock()
	switch {
	case h.Kind == beatBye:
		l.log.Info("edge left", "node_id", h.Node)
	case !known:
		l.log.Info("edge joined", "node_id", h.Node)
	}
	if h.Kind == beatHello {
		l.announce(beatBeat)
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

// beat announces this edge every heartbeat, notices the layer becoming usable again
// (a reconnect, or a stall's end: it says hello, and calls wait a heartbeat for the
// answers), forgets edges gone silent (only once this edge has heard itself for a
// heartbeat: when it is the one cut off, it cannot tell who left) and counts the
// messages nats.go dropped.
func (l *Layer) beat() {
	defer l.stopped.Done()
	t := time.NewTicker(l.cfg.Heartbeat)
	defer t.Stop()
	wasUsable := l.usable()
	for {
		select {
		case <-t.C:
		case <-l.stop:
			return
		}
		if l.up.Load() {
			l.announce(beatBeat)
		}
		usable := l.usable()
		switch {
		case usable && !wasUsable:
			l.usableSince.Store(time.Now().UnixNano())
			l.announce(beatHello)
			l.log.Info("NATS carries this edge's heartbeats again")
		case !usable && wasUsable && l.up.Load():
			l.log.Warn("NATS does not carry this edge's heartbeats back: the layer counts as down until it does")
		}
		wasUsable = usable
		if usable {
			l.m.Connected.Set(1)
		} else {
			l.m.Connected.Set(0)
		}
		settled := usable && time.Since(time.Unix(0, max(l.upSince.Load(), l.usableSince.Load()))) > l.cfg.Heartbeat
		var gone []string
		l.mu.Lock()
		if settled {
			for node, p := range l.peers {
				// An edge expected back after a reconnect keeps its place for the grace
				// (three heartbeats from the reconnect), however long the outage was.
				waited := l.expect[node] && time.Since(l.reconnectedAt) < 3*l.cfg.Heartbeat
				if time.Since(p.seen) >= 3*l.cfg.Heartbeat && !waited {
					delete(l.peers, node)
					gone = append(gone, node)
				}
			}
		}
		l.guard.sweep(time.Now())
		for node, at := range l.byes {
			if time.Since(at) > time.Minute {
				delete(l.byes, node)
			}
		}
		l.m.Edges.Set(float64(len(l.peers) + 1))
		subs := make([]*nats.Subscription, 0, len(l.subs)+len(l.fixed))
		for _, sub := range l.subs {
			subs = append(subs, sub)
		}
		subs = append(subs, l.fixed...)
		gonedrops := l.droppedGone
		l.mu.Unlock()
		dropped := gonedrops
		for _, sub := range subs {
			if n, err := sub.Dropped(); err == nil {
				dropped += int64(n)
			}
		}
		l.mu.Lock()
		if dropped > l.dropped {
			l.m.Dropped.Add(float64(dropped - l.dropped))
			l.dropped = dropped
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
		wasUsable := l.usable()
		l.closing.Store(true) // from now on: no publishing, no waiting
		if wasUsable {
			done := make(chan error, 1)
			data, _ := json.Marshal(heartbeat{Node: l.cfg.Node, Kind: beatBye})
			l.outbox.push(outgoing{subject: l.subj.heartbeat(), data: data, done: done}, int64(len(data)), true)
			select {
			case <-done:
				_ = l.nc.FlushTimeout(time.Second)
			case <-time.After(time.Second):
			}
		}
		close(l.stop)
		l.endFlush()
		l.stopped.Wait()
		l.nc.Close()
	})
}
