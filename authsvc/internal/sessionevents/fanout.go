// Package sessionevents fans the store's session-ended notifications (PostgreSQL
// LISTEN) out to every WatchSessionEvents stream of the process.
package sessionevents

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gatehouse/gatehouse/authsvc/internal/store"
)

// Fanout fans the store's session-ended notifications out to subscribers. While its
// LISTEN connection is down new subscribers wait for it, and when the connection drops
// it ends every subscription, so no subscriber believes it saw everything when it did
// not.
type Fanout struct {
	mu      sync.Mutex
	live    bool
	up      chan struct{} // closed while live; a new one once it drops
	subs    map[*Subscription]struct{}
	changed chan struct{} // signalled when live changes
	waiting atomic.Int64  // Subscribe calls waiting for the feed
	done    chan struct{} // closed when Run returns: nobody waits for the feed any more
	m       Metrics
}

// ErrStopped is Subscribe's error once the fanout has stopped (the process is
// shutting down): the feed will not come back here.
var ErrStopped = errors.New("the session event feed has stopped")

// Metrics are what the fanout counts; package metrics defines and registers them
// (the gauges read Live, Subscribers and Waiting instead). A nil field is not
// counted. Counter and Observer are the parts of prometheus.Counter and
// prometheus.Observer used here, so this package needs no Prometheus.
type Metrics struct {
	Reconnects Counter // LISTEN connections lost after they were listening
	Dropped    Counter // subscriptions ended because they fell a whole buffer behind
	// Lag observes, per session-ended event, the seconds from its ended_at (stamped
	// by PostgreSQL in the transaction that ended the session) to its publication.
	Lag Observer
	// Ended returns the counter of session-ended events received with reason;
	// markers are not counted.
	Ended func(reason store.EndReason) Counter
}

// Counter is a monotonic count.
type Counter interface{ Inc() }

// Observer takes one observation, such as a latency in seconds.
type Observer interface{ Observe(float64) }

// SetMetrics makes b count into m. Call it before Run and before any Subscribe.
func (b *Fanout) SetMetrics(m Metrics) { b.m = m }

// Subscription is one subscriber's feed. Its queue holds only the events the
// subscriber has not taken yet, so an idle subscriber that keeps up holds no buffer.
type Subscription struct {
	markers bool // deliver SyncSessionEvents markers too
	mu      sync.Mutex
	queue   []store.Event
	ready   chan struct{} // one slot: signalled when the queue stops being empty
	lost    chan struct{}
}

// Ready is signalled when events are waiting: call Take.
func (s *Subscription) Ready() <-chan struct{} { return s.ready }

// Take returns the events waiting, in commit order, and empties the queue.
func (s *Subscription) Take() []store.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queue
	s.queue = nil
	return q
}

// offer queues ev, or reports that the subscriber is a whole buffer behind.
func (s *Subscription) offer(ev store.Event) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) >= subscriptionBuffer {
		return false
	}
	s.queue = append(s.queue, ev)
	if len(s.queue) == 1 {
		select {
		case s.ready <- struct{}{}:
		default:
		}
	}
	return true
}

// Lost is closed when the subscription has ended: events may have been missed from
// then on (the subscriber fell behind, the LISTEN connection dropped, or it
// unsubscribed).
func (s *Subscription) Lost() <-chan struct{} { return s.lost }

// subscriptionBuffer is how many events a slow stream may lag behind before it is
// dropped (and told to resubscribe).
const subscriptionBuffer = 4096

// New returns a Fanout that is not yet listening; call Run.
func New() *Fanout {
	return &Fanout{subs: map[*Subscription]struct{}{}, up: make(chan struct{}), changed: make(chan struct{}, 1), done: make(chan struct{})}
}

// maxBackoff bounds the wait between attempts to listen again: the database coming
// back is noticed within it, and sessions ended meanwhile are closed right after.
const maxBackoff = 500 * time.Millisecond

// Run listens for events until ctx ends, reconnecting with backoff (100 ms doubling to
// maxBackoff) after a failure.
func (b *Fanout) Run(ctx context.Context, st *store.Store, log *slog.Logger) {
	defer close(b.done)
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		start := time.Now()
		err := st.Listen(ctx, b.setLive, b.publish)
		wasLive := b.drop()
		if ctx.Err() != nil {
			return
		}
		if wasLive && b.m.Reconnects != nil { // a failed attempt to reconnect lost nothing
			b.m.Reconnects.Inc()
		}
		log.WarnContext(ctx, "session event listener stopped; reconnecting", "err", err, "backoff", backoff)
		if time.Since(start) > time.Minute {
			backoff = 100 * time.Millisecond
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

func (b *Fanout) setLive() {
	b.mu.Lock()
	if !b.live {
		b.live = true
		close(b.up)
	}
	b.mu.Unlock()
	b.signal()
}

func (b *Fanout) signal() {
	select {
	case b.changed <- struct{}{}:
	default:
	}
}

// Changed is signalled (coalesced) whenever the fanout starts or stops listening.
func (b *Fanout) Changed() <-chan struct{} { return b.changed }

// drop marks the fanout not live and ends every subscription. It reports whether the
// fanout was live.
func (b *Fanout) drop() (wasLive bool) {
	defer b.signal()
	b.mu.Lock()
	defer b.mu.Unlock()
	wasLive = b.live
	if b.live {
		b.live = false
		b.up = make(chan struct{})
	}
	for sub := range b.subs {
		close(sub.lost)
		delete(b.subs, sub)
	}
	return wasLive
}

func (b *Fanout) publish(ev store.Event) {
	if ev.Marker == "" {
		b.count(ev)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for sub := range b.subs {
		if ev.Marker != "" && !sub.markers {
			continue
		}
		if !sub.offer(ev) { // too slow: end it rather than let it miss events silently
			close(sub.lost)
			delete(b.subs, sub)
			if b.m.Dropped != nil {
				b.m.Dropped.Inc()
			}
		}
	}
}

// count counts a session-ended event and how long it took to get here.
func (b *Fanout) count(ev store.Event) {
	if b.m.Ended != nil {
		b.m.Ended(ev.Reason).Inc()
	}
	if b.m.Lag != nil && !ev.EndedAt.IsZero() {
		// Clocks of two hosts: a database clock ahead of ours must not make it negative.
		b.m.Lag.Observe(max(time.Since(ev.EndedAt).Seconds(), 0))
	}
}

// Live reports whether the fanout is listening.
func (b *Fanout) Live() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.live
}

// Subscribers returns how many subscriptions are open now.
func (b *Fanout) Subscribers() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}

// Waiting returns how many Subscribe calls are waiting for the fanout to listen.
func (b *Fanout) Waiting() int { return int(b.waiting.Load()) }

// Subscribe returns a new subscription once the fanout is listening, waiting for it
// until ctx ends (then it returns ctx's error) or Run returns (ErrStopped). markers
// says whether it also receives the markers of SyncSessionEvents.
func (b *Fanout) Subscribe(ctx context.Context, markers bool) (*Subscription, error) {
	for {
		b.mu.Lock()
		if b.live {
			sub := &Subscription{markers: markers, ready: make(chan struct{}, 1), lost: make(chan struct{})}
			b.subs[sub] = struct{}{}
			b.mu.Unlock()
			return sub, nil
		}
		up := b.up
		b.mu.Unlock()
		if err := b.wait(ctx, up); err != nil {
			return nil, err
		}
	}
}

// wait waits, counted in Waiting, until up is closed or ctx ends.
func (b *Fanout) wait(ctx context.Context, up <-chan struct{}) error {
	b.waiting.Add(1)
	defer b.waiting.Add(-1)
	select {
	case <-up:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-b.done:
		return ErrStopped
	}
}

// Unsubscribe ends sub; it is safe after the fanout has dropped it.
func (b *Fanout) Unsubscribe(sub *Subscription) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.subs[sub]; ok {
		delete(b.subs, sub)
		close(sub.lost)
	}
}
