package sendq

import (
	"strings"
	"testing"
)

func TestOfferBounds(t *testing.T) {
	var w Writer
	big := Message{Data: strings.Repeat("x", 300)}
	if !w.Offer(big, 4, 100) {
		t.Fatal("one message over the byte limit was refused by an empty queue")
	}
	if w.Offer(Message{Data: "y"}, 4, 100) {
		t.Fatal("a message was taken past the byte limit")
	}
	m, ok := w.Next()
	if !ok || m.Data != big.Data {
		t.Fatalf("Next = %q, %v", m.Data, ok)
	}
	if w.Bytes() != 300 {
		t.Fatalf("%d bytes counted while being written, want 300", w.Bytes())
	}
	w.Written(m)
	select {
	case <-w.Room(4):
	default:
		t.Fatal("no room signal after a write")
	}
	for i := range 4 {
		if !w.Offer(Message{Data: "z"}, 4, 100) {
			t.Fatalf("message %d of 4 refused", i+1)
		}
	}
	if w.Offer(Message{Data: "z"}, 4, 100) {
		t.Fatal("a fifth message was taken by a queue of 4")
	}
	if w.Bytes() != 4 || w.Queued() != 4 {
		t.Fatalf("bytes %d, queued %d after a refused offer; want 4, 4", w.Bytes(), w.Queued())
	}
	f := Prepare(true, "\x00\x01")
	if (Message{Frame: f}).Size() != 2 {
		t.Fatal("a frame's size is its payload")
	}
}

func TestTurn(t *testing.T) {
	var w Writer
	done := make(chan struct{})
	w.Hold()
	if w.Take() {
		t.Fatal("took a held turn")
	}
	if w.Release(done) {
		t.Fatal("kept the turn with nothing to do")
	}
	if !w.Take() {
		t.Fatal("could not take a released turn")
	}
	w.Offer(Message{Data: "m"}, 4, 100)
	if !w.Release(done) {
		t.Fatal("released the turn with a message waiting")
	}
	w.Next()
	close(done)
	if !w.Release(done) {
		t.Fatal("released the turn with the connection closing")
	}
}
