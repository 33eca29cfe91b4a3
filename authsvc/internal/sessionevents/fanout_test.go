package sessionevents

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/authsvc/internal/store"
)

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestFanout(t *testing.T) {
	b := New()
	waiting := make(chan *Subscription)
	go func() {
		sub, _ := b.Subscribe(context.Background(), false)
		waiting <- sub
	}()
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if sub, err := b.Subscribe(short, false); sub != nil || err != context.DeadlineExceeded {
		t.Fatalf("Subscribe while not listening = %v, %v: want it to wait until its context ends", sub, err)
	}
	b.setLive()
	<-b.Changed()
	if sub := <-waiting; sub == nil {
		t.Fatal("a subscriber waiting for the feed was not subscribed when it went live")
	}
	plain, _ := b.Subscribe(context.Background(), false)
	markers, _ := b.Subscribe(context.Background(), true)
	if plain == nil || markers == nil {
		t.Fatal("Subscribe refused while listening")
	}

	if closed(plain.Ready()) || plain.Take() != nil {
		t.Fatal("ready with nothing published")
	}
	b.publish(store.Event{SessionID: "s1"})
	b.publish(store.Event{Marker: "m1"})
	<-plain.Ready()
	if evs := plain.Take(); len(evs) != 1 || evs[0].SessionID != "s1" {
		t.Fatalf("plain got %+v, want only s1 (no marker)", evs)
	}
	<-markers.Ready()
	if evs := markers.Take(); len(evs) != 2 || evs[0].SessionID != "s1" || evs[1].Marker != "m1" {
		t.Fatalf("markers got %+v, want s1 then the marker", evs)
	}
	if closed(plain.Ready()) || plain.Take() != nil {
		t.Fatal("events left after Take")
	}

	// A subscriber that falls a whole buffer behind is ended, not left to miss events.
	for range subscriptionBuffer {
		b.publish(store.Event{SessionID: "x"})
	}
	if closed(plain.Lost()) {
		t.Fatal("ended with room left")
	}
	b.publish(store.Event{SessionID: "one too many"})
	if !closed(plain.Lost()) || !closed(markers.Lost()) {
		t.Fatal("a full subscriber was not ended")
	}

	// Losing the LISTEN connection ends every subscription, and new ones wait again.
	sub, _ := b.Subscribe(context.Background(), false)
	b.drop()
	<-b.Changed()
	short2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if s2, _ := b.Subscribe(short2, false); !closed(sub.Lost()) || b.Live() || s2 != nil {
		t.Fatal("drop left a subscription or the fanout live")
	}
	b.Unsubscribe(sub) // after a drop: no effect, no panic
	b.drop()           // dropping again (a reconnection that failed) leaves it waiting
	b.setLive()
	if s3, err := b.Subscribe(context.Background(), false); s3 == nil || err != nil {
		t.Fatal("not subscribed once live again")
	}
}

type fakeCounter struct{ n atomic.Int64 }

func (c *fakeCounter) Inc() { c.n.Add(1) }

type fakeObserver struct {
	mu  sync.Mutex
	obs []float64
}

func (o *fakeObserver) Observe(v float64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.obs = append(o.obs, v)
}

// TestFanoutMetrics: subscribers and waiting callers are counted as they come and go,
// session-ended events by reason (markers not), their lag from ended_at, and a
// subscriber dropped for falling behind.
func TestFanoutMetrics(t *testing.T) {
	b := New()
	dropped, lag := &fakeCounter{}, &fakeObserver{}
	ended := map[store.EndReason]*fakeCounter{}
	b.SetMetrics(Metrics{Dropped: dropped, Lag: lag, Ended: func(r store.EndReason) Counter {
		if ended[r] == nil { // only the fanout's one goroutine publishes
			ended[r] = &fakeCounter{}
		}
		return ended[r]
	}})

	waiting := make(chan *Subscription)
	go func() {
		sub, _ := b.Subscribe(t.Context(), false)
		waiting <- sub
	}()
	for b.Waiting() != 1 {
		runtime.Gosched()
	}
	if b.Subscribers() != 0 {
		t.Fatalf("subscribers = %d while not listening", b.Subscribers())
	}
	b.setLive()
	first := <-waiting
	if b.Waiting() != 0 || b.Subscribers() != 1 {
		t.Fatalf("once live: waiting %d, subscribers %d; want 0, 1", b.Waiting(), b.Subscribers())
	}
	second, _ := b.Subscribe(t.Context(), true)
	if b.Subscribers() != 2 {
		t.Fatalf("subscribers = %d, want 2", b.Subscribers())
	}
	b.Unsubscribe(second)
	if b.Subscribers() != 1 {
		t.Fatalf("subscribers = %d after Unsubscribe, want 1", b.Subscribers())
	}

	now := time.Now()
	b.publish(store.Event{SessionID: "a", Reason: store.EndLogout, EndedAt: now.Add(-2 * time.Second)})
	b.publish(store.Event{SessionID: "b", Reason: store.EndLogout, EndedAt: now.Add(time.Hour)}) // database clock ahead
	b.publish(store.Event{SessionID: "c", Reason: store.EndRevoked, EndedAt: now})
	b.publish(store.Event{Marker: "m"})
	if len(ended) != 2 || ended[store.EndLogout].n.Load() != 2 || ended[store.EndRevoked].n.Load() != 1 {
		t.Errorf("events by reason: %d reasons, logout %d, revoked %d; want 2 reasons, logout 2, revoked 1 (markers not counted)",
			len(ended), ended[store.EndLogout].n.Load(), ended[store.EndRevoked].n.Load())
	}
	lag.mu.Lock()
	if len(lag.obs) != 3 || lag.obs[0] < 2 || lag.obs[0] > 60 || lag.obs[1] != 0 || lag.obs[2] < 0 || lag.obs[2] > 60 {
		t.Errorf("lag observations %v: want about 2 s, 0 (clamped), and a little", lag.obs)
	}
	lag.mu.Unlock()

	if dropped.n.Load() != 0 {
		t.Fatal("dropped counted before anyone fell behind")
	}
	for range subscriptionBuffer { // first holds 3 already: it overflows here
		b.publish(store.Event{SessionID: "x", Reason: store.EndRevoked, EndedAt: now})
	}
	if !closed(first.Lost()) || dropped.n.Load() != 1 || b.Subscribers() != 0 {
		t.Fatalf("after overflowing: lost %v, dropped %d, subscribers %d; want true, 1, 0", closed(first.Lost()), dropped.n.Load(), b.Subscribers())
	}
}

// TestFanoutNoMetrics: a fanout without metrics (as New returns it) counts nothing and
// does not fail.
func TestFanoutNoMetrics(t *testing.T) {
	b := New()
	b.setLive()
	sub, _ := b.Subscribe(t.Context(), false)
	for range subscriptionBuffer + 1 {
		b.publish(store.Event{SessionID: "x", Reason: store.EndRevoked, EndedAt: time.Now()})
	}
	if !closed(sub.Lost()) {
		t.Fatal("a full subscriber was not ended")
	}
	if !b.drop() || b.drop() {
		t.Fatal("drop does not report whether the fanout was live")
	}
}

// TestSubscribeAfterStop: a subscriber waiting for the feed is told when the fanout
// stops (authsvc shutting down) instead of holding up the graceful stop.
func TestSubscribeAfterStop(t *testing.T) {
	b := New()
	waiting := make(chan error, 1)
	go func() {
		_, err := b.Subscribe(context.Background(), false)
		waiting <- err
	}()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b.Run(ctx, nil, nil) // stopped before it listened
	select {
	case err := <-waiting:
		if err != ErrStopped {
			t.Fatalf("Subscribe = %v, want ErrStopped", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a subscriber still waits after the fanout stopped")
	}
}
