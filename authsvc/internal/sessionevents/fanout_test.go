package sessionevents

import (
	"testing"

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
	if b.Subscribe(false) != nil {
		t.Fatal("subscribed while not listening")
	}
	b.setLive()
	<-b.Changed()
	plain, markers := b.Subscribe(false), b.Subscribe(true)
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

	// Losing the LISTEN connection ends every subscription and refuses new ones.
	sub := b.Subscribe(false)
	b.drop()
	<-b.Changed()
	if !closed(sub.Lost()) || b.Live() || b.Subscribe(false) != nil {
		t.Fatal("drop left a subscription or the fanout live")
	}
	b.Unsubscribe(sub) // after a drop: no effect, no panic
}
