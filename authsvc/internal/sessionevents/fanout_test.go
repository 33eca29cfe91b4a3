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

	b.publish(store.Event{SessionID: "s1"})
	b.publish(store.Event{Marker: "m1"})
	if ev := <-plain.Events(); ev.SessionID != "s1" {
		t.Fatalf("plain got %+v", ev)
	}
	if ev := <-markers.Events(); ev.SessionID != "s1" {
		t.Fatalf("markers got %+v first", ev)
	}
	if ev := <-markers.Events(); ev.Marker != "m1" {
		t.Fatalf("markers got %+v, want the marker", ev)
	}
	if len(plain.Events()) != 0 {
		t.Fatal("a subscriber that did not ask for markers got one")
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
