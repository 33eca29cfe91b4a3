// Package sendq is a connection's outgoing side: its queue of messages, bounded in
// number and in bytes, the control frames waiting to go out, and the writer rule, a
// turn that lets one writer at a time put bytes on the socket. Whoever holds the turn
// gathers what waits into a Batch (frames in wire form, ready for one writev) and
// reports what the socket took; the unwritten end of a batch is kept and goes first
// next time, so a frame begun is always finished before any other.
package sendq

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/gatehouse/gatehouse/edgesvc/internal/budget"
)

// Writer is the writer rule, the queue and the pending control frames. Frames are
// written only by whoever holds the turn (Take until Release), so they go out whole
// and in the order they were queued. Its methods are safe for concurrent use, except
// Fill, Done and Rest, which belong to the turn's holder.
type Writer struct {
	q     atomic.Pointer[queue] // made on first use: a socket that only idles has none
	n     atomic.Int32          // messages queued
	turn  atomic.Bool
	ping  atomic.Bool            // a keepalive ping waits
	bytes atomic.Int64           // bytes queued or being written
	pong  atomic.Pointer[[]byte] // the payload of the pong that waits (the latest ping's)
	rest  []byte                 // the unwritten end of the last batch; the holder's
	share *shared                // budgets shared with other writers, if any (Share)
}

// shared is what a writer holds of budgets it shares with others (its user's sockets,
// its edge's): every byte it counts counts there too, until it settles.
type shared struct {
	mu      sync.Mutex
	p       budget.Pair
	held    int64
	settled bool
}

// Share makes the writer's bytes count against p as well: a message that would take
// one of them past its limit is refused (Put). Call it before anything is queued.
func (w *Writer) Share(p budget.Pair) { w.share = &shared{p: p} }

// Settle gives back what the writer holds of its shared budgets, for a connection
// that has ended; what it counts later counts against them no more.
func (w *Writer) Settle() {
	if s := w.share; s != nil {
		s.mu.Lock()
		s.p.Give(s.held)
		s.held, s.settled = 0, true
		s.mu.Unlock()
	}
}

// count adds n bytes (which may be negative) to the writer's count, and charged bytes
// to its shared budgets, whatever their limits (bytes already on their way).
func (w *Writer) count(n, charged int64) {
	w.bytes.Add(n)
	if s := w.share; s != nil && charged != 0 {
		s.mu.Lock()
		if !s.settled {
			charged = max(charged, -s.held) // never give back more than is held
			s.held += charged
			s.p.Give(-charged)
		}
		s.mu.Unlock()
	}
}

// queue is the messages, in a slice that grows as they wait and is let go when a
// write empties it having grown past keptSlots, so a socket that once fell behind
// does not keep room for SendQueue messages for its whole life.
type queue struct {
	mu   sync.Mutex
	msgs []Message
	room chan struct{} // made when someone waits for room; signalled (coalesced) by writes
}

// keptSlots is the most message slots an empty queue keeps.
const keptSlots = 4

// Message is one queued data message: text in Data (a string, so connections can
// share it), or, when Frame is set, a message framed once (a broadcast, or binary).
// It is kept small: a queue holds many of them.
type Message struct {
	Data  string
	Frame *Frame
}

// Size is the message's payload in bytes, as the byte bound counts them.
func (m Message) Size() int64 {
	if m.Frame != nil {
		return m.Frame.size
	}
	return int64(len(m.Data))
}

// Frame is a message framed once for many connections: each writes the same bytes.
type Frame struct {
	wire   []byte // header and payload
	size   int64  // payload bytes
	shared bool   // queued on many connections: its bytes are not charged to the shared budgets
}

// PrepareShared is Prepare for a frame queued on many connections (a broadcast): its
// memory is one frame's however many queue it, so it counts against each writer's
// own bounds but not against the budgets writers share (Share), which it would
// overstate a thousandfold.
func PrepareShared(binary bool, data string) *Frame {
	f := Prepare(binary, data)
	f.shared = true
	return f
}

// charge is what m counts against the shared budgets.
func (m Message) charge() int64 {
	if m.Frame != nil && m.Frame.shared {
		return 0
	}
	return m.Size()
}

// Prepare frames data, binary or text, once.
func Prepare(binary bool, data string) *Frame {
	op := byte(opText)
	if binary {
		op = opBinary
	}
	wire := make([]byte, 0, maxHeader+len(data))
	wire = append(AppendHeader(wire, op, len(data)), data...)
	return &Frame{wire: wire, size: int64(len(data))}
}

// Wire returns the frame as it goes on the socket.
func (f *Frame) Wire() []byte { return f.wire }

// Opcodes of RFC 6455 section 5.2.
const (
	opText   = 0x1
	opBinary = 0x2
	OpClose  = 0x8
	OpPing   = 0x9
	OpPong   = 0xa
)

// maxHeader is the longest header of a server frame (unmasked).
const maxHeader = 10

// AppendHeader appends the header of a final, unmasked frame with opcode op and an
// n-byte payload (RFC 6455 5.2).
func AppendHeader(b []byte, op byte, n int) []byte {
	switch {
	case n <= 125:
		return append(b, 0x80|op, byte(n))
	case n <= 0xffff:
		return append(b, 0x80|op, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|op, 127)
		return binary.BigEndian.AppendUint64(b, uint64(n))
	}
}

// queue returns the queue, making it on first use.
func (w *Writer) queue() *queue {
	if p := w.q.Load(); p != nil {
		return p
	}
	w.q.CompareAndSwap(nil, &queue{})
	return w.q.Load()
}

// Hold takes the turn unconditionally: for a connection not yet writable.
func (w *Writer) Hold() { w.turn.Store(true) }

// Take reports whether the caller got the turn.
func (w *Writer) Take() bool { return w.turn.CompareAndSwap(false, true) }

// Release gives the turn up, unless work arrived meanwhile (a message or a control
// frame queued, or done closed). Whoever brought that work may have seen the turn
// held and left the write to its holder, so the holder takes the turn back. It
// reports whether the caller holds the turn again and must write on. A holder with a
// Rest must not release: the rest goes before anything else.
func (w *Writer) Release(done <-chan struct{}) bool {
	w.turn.Store(false)
	if !w.pending() {
		select {
		case <-done:
		default:
			return false
		}
	}
	return w.Take()
}

// pending reports whether a message or a control frame waits.
func (w *Writer) pending() bool {
	return w.Queued() > 0 || w.ping.Load() || w.pong.Load() != nil
}

// Ping asks for a keepalive ping; the caller then takes the turn if it can and writes.
func (w *Writer) Ping() { w.ping.Store(true) }

// Pong asks for a pong answering a ping with payload (at most 125 bytes); a pong not
// yet written is replaced, as RFC 6455 5.5.3 allows.
func (w *Writer) Pong(payload []byte) { w.pong.Store(&payload) }

// Queued returns how many messages wait.
func (w *Writer) Queued() int { return int(w.n.Load()) }

// Bytes returns the bytes of messages queued or being written.
func (w *Writer) Bytes() int64 { return w.bytes.Load() }

// Offer queues m if it fits: at most slots messages and limit bytes, though one
// message always fits when nothing waits, and within the shared budgets. It never
// blocks.
func (w *Writer) Offer(m Message, slots int, limit int64) bool {
	ok, _ := w.Put(m, slots, limit)
	return ok
}

// Put is Offer, also saying, when m does not fit, whether a shared budget refused it
// (its scope) rather than the writer's own bounds (budget.None).
func (w *Writer) Put(m Message, slots int, limit int64) (bool, budget.Scope) {
	q, size := w.queue(), m.Size()
	q.mu.Lock()
	defer q.mu.Unlock()
	if cur := w.bytes.Load(); (cur > 0 && cur+size > limit) || len(q.msgs) >= slots {
		return false, budget.None
	}
	if s, charge := w.share, m.charge(); s != nil && charge > 0 {
		s.mu.Lock()
		if !s.settled {
			if scope := s.p.Take(charge); scope != budget.None {
				s.mu.Unlock()
				return false, scope
			}
			s.held += charge
		}
		s.mu.Unlock()
	}
	w.bytes.Add(size)
	q.msgs = append(q.msgs, m)
	w.n.Add(1)
	return true, budget.None
}

// Room returns a channel signalled when messages have been written, for a caller
// waiting for Offer to succeed: get it before the Offer that may fail.
func (w *Writer) Room() <-chan struct{} {
	q := w.queue()
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.room == nil {
		q.room = make(chan struct{}, 1)
	}
	return q.room
}

// take removes up to max queued messages, while keep (if not nil) says so, and hands
// each to add, in order.
func (w *Writer) take(max int, keep func() bool, add func(Message)) {
	q := w.q.Load()
	if q == nil || max <= 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	k := 0
	for k < len(q.msgs) && k < max && (keep == nil || keep()) {
		add(q.msgs[k])
		k++
	}
	left := copy(q.msgs, q.msgs[k:])
	clear(q.msgs[left:]) // drop the references to what was taken
	q.msgs = q.msgs[:left]
	if left == 0 && cap(q.msgs) > keptSlots {
		q.msgs = nil
	}
	w.n.Add(int32(-k))
}

// Rest reports whether the holder has the end of a batch still to write.
func (w *Writer) Rest() bool { return len(w.rest) > 0 }

// Batch is frames gathered for one write. Reuse one (Reset by Fill) to spare its
// allocations; it must not be shared.
type Batch struct {
	Bufs  [][]byte // the frames' parts in order
	Total int      // bytes in Bufs
	Msgs  int      // data messages in it
	size  int64    // bytes the byte bound counted for it
	free  int64    // of those, shared frames' (not charged to shared budgets)
	hdrs  []byte   // headers (and control frames) that Bufs point into
}

// batchHdrs is a Batch's header space: two control frames and a header per message.
func batchHdrs(msgs int) int { return 2*(2+125) + 2 + msgs*maxHeader }

func (b *Batch) reset(msgs int) {
	if cap(b.hdrs) < batchHdrs(msgs) {
		b.hdrs = make([]byte, 0, batchHdrs(msgs))
	}
	b.Bufs, b.hdrs = b.Bufs[:0], b.hdrs[:0]
	b.Total, b.Msgs, b.size, b.free = 0, 0, 0, 0
}

func (b *Batch) add(p []byte) {
	if len(p) > 0 {
		b.Bufs = append(b.Bufs, p)
		b.Total += len(p)
	}
}

// addHeader appends a header to hdrs (whose capacity never grows, so earlier Bufs
// stay valid) and to Bufs.
func (b *Batch) addHeader(op byte, n int) {
	start := len(b.hdrs)
	b.hdrs = AppendHeader(b.hdrs, op, n)
	b.add(b.hdrs[start:])
}

func (b *Batch) addMessage(m Message) {
	if m.Frame != nil {
		b.add(m.Frame.wire)
	} else {
		b.addHeader(opText, len(m.Data))
		b.add(unsafe.Slice(unsafe.StringData(m.Data), len(m.Data))) // only read
	}
	b.Msgs++
	b.size += m.Size()
	b.free += m.Size() - m.charge()
}

// Fill gathers, in order, the rest of the last batch, the control frames waiting,
// first (if not nil), then queued messages up to msgs of them and about maxBytes
// (one message always fits). It reports whether the batch holds anything. The
// caller holds the turn.
func (w *Writer) Fill(b *Batch, first *Message, msgs int, maxBytes int) bool {
	b.reset(msgs + 1)
	if len(w.rest) > 0 {
		b.add(w.rest)
		b.size += int64(len(w.rest))
	}
	if p := w.pong.Swap(nil); p != nil {
		b.addHeader(OpPong, len(*p))
		start := len(b.hdrs)
		b.hdrs = append(b.hdrs, *p...)
		b.add(b.hdrs[start:])
	}
	if w.ping.Swap(false) {
		b.addHeader(OpPing, 0)
	}
	if first != nil {
		w.count(first.Size(), first.charge()) // counted while being written, like a queued one
		b.addMessage(*first)
	}
	w.take(msgs-b.Msgs, func() bool { return b.Msgs == 0 || b.Total < maxBytes }, b.addMessage)
	return b.Total > 0
}

// Done records that n bytes of b reached the socket: what was not written becomes
// the rest (copied: b's buffers are reused), still counted against the byte bound
// until written, and room made is signalled. It reports whether all of b was written.
func (w *Writer) Done(b *Batch, n int) bool {
	var rest []byte
	if n < b.Total {
		rest = make([]byte, 0, b.Total-n)
		skip := n
		for _, p := range b.Bufs {
			if skip >= len(p) {
				skip -= len(p)
				continue
			}
			rest = append(rest, p[skip:]...)
			skip = 0
		}
	}
	w.rest = rest
	w.count(int64(len(rest))-b.size, int64(len(rest))-(b.size-b.free)) // the rest is a copy: charged
	if q := w.q.Load(); q != nil && b.Msgs > 0 {
		q.mu.Lock()
		room := q.room
		q.mu.Unlock()
		if room != nil {
			select {
			case room <- struct{}{}:
			default:
			}
		}
	}
	return rest == nil
}
