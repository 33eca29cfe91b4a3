package sendq

import (
	"bytes"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/edgesvc/internal/budget"
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
	room := w.Room()
	var b Batch
	if !w.Fill(&b, nil, 64, 1<<10) || b.Msgs != 1 {
		t.Fatalf("Fill took %d messages, want 1", b.Msgs)
	}
	if w.Bytes() != 300 {
		t.Fatalf("%d bytes counted while being written, want 300", w.Bytes())
	}
	if !w.Done(&b, b.Total) {
		t.Fatal("a batch written whole left a rest")
	}
	select {
	case <-room:
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
	var one Batch
	if w.Fill(&one, nil, 1, 1<<10); !w.Done(&one, one.Total) || w.Bytes() != 3 {
		t.Fatalf("bytes %d after writing one of 4, want 3", w.Bytes())
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
	var b0 Batch
	w.Fill(&b0, nil, 4, 100)
	w.Ping()
	if !w.Release(done) {
		t.Fatal("released the turn with a ping waiting")
	}
	var b Batch
	w.Fill(&b, nil, 4, 100)
	close(done)
	if !w.Release(done) {
		t.Fatal("released the turn with the connection closing")
	}
}

// wire returns what b would put on the socket.
func wire(b *Batch) []byte { return bytes.Join(b.Bufs, nil) }

// TestFillOrderAndRest: a batch is the rest of the last one, then the control frames,
// then the messages; the part a socket did not take goes first next time, counted
// against the bound until written.
func TestFillOrderAndRest(t *testing.T) {
	var w Writer
	long := strings.Repeat("a", 200)
	w.Offer(Message{Data: "hi"}, 8, 1<<20)
	w.Offer(Message{Frame: Prepare(true, long)}, 8, 1<<20)
	w.Pong([]byte("p1"))
	w.Pong([]byte("p2")) // replaces p1
	w.Ping()
	first := Message{Data: "first"}
	var b Batch
	if !w.Fill(&b, &first, 8, 1<<10) {
		t.Fatal("nothing gathered")
	}
	want := "\x8a\x02p2" + "\x89\x00" + "\x81\x05first" + "\x81\x02hi" + "\x82\x7e\x00\xc8" + long
	if got := string(wire(&b)); got != want {
		t.Fatalf("batch\n%q\nwant\n%q", got, want)
	}
	if b.Msgs != 3 || w.Bytes() != int64(5+2+200) {
		t.Fatalf("msgs %d bytes %d", b.Msgs, w.Bytes())
	}
	if w.Done(&b, 10) || !w.Rest() {
		t.Fatal("a batch written in part left no rest")
	}
	if w.Bytes() != int64(len(want)-10) {
		t.Fatalf("%d bytes counted with a rest of %d", w.Bytes(), len(want)-10)
	}
	w.Ping()
	w.Offer(Message{Data: "next"}, 8, 1<<20)
	w.Fill(&b, nil, 8, 1<<10)
	if got, want := string(wire(&b)), want[10:]+"\x89\x00"+"\x81\x04next"; got != want {
		t.Fatalf("after a rest\n%q\nwant\n%q", got, want)
	}
	if !w.Done(&b, b.Total) || w.Rest() || w.Bytes() != 0 {
		t.Fatalf("rest %v, %d bytes after all was written", w.Rest(), w.Bytes())
	}
}

// TestFillLimits: a batch stops at its message count, and past its first message at
// about its byte size.
func TestFillLimits(t *testing.T) {
	var w Writer
	for range 10 {
		w.Offer(Message{Data: strings.Repeat("x", 100)}, 16, 1<<20)
	}
	var b Batch
	w.Fill(&b, nil, 4, 1<<20)
	if b.Msgs != 4 {
		t.Fatalf("%d messages with a limit of 4", b.Msgs)
	}
	w.Done(&b, b.Total)
	w.Fill(&b, nil, 16, 150)
	if b.Msgs != 2 {
		t.Fatalf("%d messages of 100 bytes with a limit of 150, want 2", b.Msgs)
	}
}

func TestAppendHeader(t *testing.T) {
	for _, c := range []struct {
		n    int
		want string
	}{{0, "\x81\x00"}, {125, "\x81\x7d"}, {126, "\x81\x7e\x00\x7e"}, {65535, "\x81\x7e\xff\xff"}, {65536, "\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"}} {
		if got := string(AppendHeader(nil, opText, c.n)); got != c.want {
			t.Errorf("header for %d bytes: %q, want %q", c.n, got, c.want)
		}
	}
}

// TestQueueLetsGo: a queue that grew while its client fell behind does not keep that
// room once written out; a small one keeps its few slots.
func TestQueueLetsGo(t *testing.T) {
	var w Writer
	var b Batch
	for range 3 {
		w.Offer(Message{Data: "s"}, 64, 1<<20)
	}
	w.Fill(&b, nil, 64, 1<<20)
	if q := w.q.Load(); q.msgs == nil || cap(q.msgs) > keptSlots {
		t.Fatalf("a queue of 3 emptied kept %d slots (nil %v), want its own few", cap(q.msgs), q.msgs == nil)
	}
	for range 40 {
		w.Offer(Message{Data: "b"}, 64, 1<<20)
	}
	w.Fill(&b, nil, 16, 1<<20)
	if q := w.q.Load(); len(q.msgs) != 24 || w.Queued() != 24 {
		t.Fatalf("%d left (Queued %d) after taking 16 of 40", len(q.msgs), w.Queued())
	}
	w.Fill(&b, nil, 64, 1<<20)
	if q := w.q.Load(); q.msgs != nil || w.Queued() != 0 {
		t.Fatalf("a queue that grew to 40 kept %d slots once empty", cap(q.msgs))
	}
}

// TestSharedBudgets: a writer's bytes count against the budgets it shares while they
// wait or are written (a partly written frame's rest too), a message that would pass
// one is refused with its scope, a broadcast frame counts against none (its memory
// is one frame's however many queue it), and Settle gives back what is still held.
func TestSharedBudgets(t *testing.T) {
	user, edge := budget.New(1000), budget.New(1500)
	var w Writer
	w.Share(budget.Pair{User: user, Edge: edge})
	if ok, _ := w.Put(Message{Data: strings.Repeat("a", 600)}, 64, 1<<20); !ok || user.Used() != 600 || edge.Used() != 600 {
		t.Fatalf("queued 600: user %d edge %d", user.Used(), edge.Used())
	}
	if ok, scope := w.Put(Message{Data: strings.Repeat("b", 500)}, 64, 1<<20); ok || scope != budget.User {
		t.Fatalf("600+500 against a user budget of 1000: %v %v", ok, scope)
	}
	if ok, _ := w.Put(Message{Frame: PrepareShared(false, strings.Repeat("c", 5000))}, 64, 1<<20); !ok || user.Used() != 600 {
		t.Fatalf("a shared frame: %v, user %d", ok, user.Used())
	}
	var other Writer
	other.Share(budget.Pair{User: budget.New(0), Edge: edge})
	if ok, scope := other.Put(Message{Data: strings.Repeat("d", 1000)}, 64, 1<<20); ok || scope != budget.Edge {
		t.Fatalf("600+1000 against an edge budget of 1500: %v %v", ok, scope)
	}
	var b Batch
	w.Fill(&b, nil, 64, 1<<20)
	w.Done(&b, 100) // 100 bytes of the first frame out: the rest of both frames stays, copied
	if want := int64(b.Total - 100); user.Used() != want || w.Bytes() != want {
		t.Fatalf("after a partial write: user %d, writer %d, want %d", user.Used(), w.Bytes(), want)
	}
	w.Settle()
	if user.Used() != 0 || edge.Used() != 0 {
		t.Fatalf("after Settle: user %d edge %d", user.Used(), edge.Used())
	}
	if ok, _ := w.Put(Message{Data: "late"}, 64, 1<<20); !ok || user.Used() != 0 {
		t.Fatal("a settled writer still charges its budgets")
	}
}
