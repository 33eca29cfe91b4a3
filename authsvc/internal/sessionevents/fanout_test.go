package sessionevents

import (
	"context"
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
