// Package sendq is a connection's outgoing side: its queue of messages, bounded in
// number and in bytes, and the writer rule, a turn that lets one writer at a time
// write data frames.
package sendq

import (
	"sync/atomic"

	"github.com/gorilla/websocket"
)

// Writer is the writer rule and the queue. Data frames are written only by whoever
// holds the turn (Take until Release), so they go out whole and in the order they
// were queued. Its methods are safe for concurrent use.
type Writer struct {
	q     atomic.Pointer[queue] // made on first use: a socket that only idles has none
	bytes atomic.Int64          // bytes queued or being written
	turn  atomic.Bool
}

// queue is the messages, and a signal of room made among them.
type queue struct {
	msgs chan Message
	room chan struct{} // signalled (coalesced) when a message has been written
}

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
	PM   *websocket.PreparedMessage
	size int64
}

// Prepare frames data, binary or text, once.
func Prepare(binary bool, data string) *Frame {
	mt := websocket.TextMessage
	if binary {
		mt = websocket.BinaryMessage
	}
	pm, err := websocket.NewPreparedMessage(mt, []byte(data))
	if err != nil { // cannot happen: framing without compression does not fail
		panic(err)
	}
	return &Frame{PM: pm, size: int64(len(data))}
}

// queue returns the queue, making it (with slots messages) on first use.
func (w *Writer) queue(slots int) *queue {
	if p := w.q.Load(); p != nil {
		return p
	}
	w.q.CompareAndSwap(nil, &queue{msgs: make(chan Message, slots), room: make(chan struct{}, 1)})
	return w.q.Load()
}

// Hold takes the turn unconditionally: for a connection not yet writable.
func (w *Writer) Hold() { w.turn.Store(true) }

// Take reports whether the caller got the turn.
func (w *Writer) Take() bool { return w.turn.CompareAndSwap(false, true) }

// Release gives the turn up, unless work arrived meanwhile (a message queued, or done
// closed). Whoever brought that work may have seen the turn held and left the write to
// its holder, so the holder takes the turn back. It reports whether the caller holds
// the turn again and must write on.
func (w *Writer) Release(done <-chan struct{}) bool {
	w.turn.Store(false)
	if w.Queued() == 0 {
		select {
		case <-done:
		default:
			return false
		}
	}
	return w.Take()
}

// Queued returns how many messages wait.
func (w *Writer) Queued() int {
	if p := w.q.Load(); p != nil {
		return len(p.msgs)
	}
	return 0
}

// Bytes returns the bytes of messages queued or being written.
func (w *Writer) Bytes() int64 { return w.bytes.Load() }

// Offer queues m if it fits: at most slots messages and limit bytes, though one
// message always fits when nothing waits. It never blocks.
func (w *Writer) Offer(m Message, slots int, limit int64) bool {
	q, size := w.queue(slots), m.Size()
	for {
		cur := w.bytes.Load()
		if cur > 0 && cur+size > limit {
			return false
		}
		if w.bytes.CompareAndSwap(cur, cur+size) {
			break
		}
	}
	select {
	case q.msgs <- m:
		return true
	default:
		w.bytes.Add(-size)
		return false
	}
}

// Room returns a channel signalled when a message has been written, for a caller
// waiting for Offer to succeed.
func (w *Writer) Room(slots int) <-chan struct{} { return w.queue(slots).room }

// Next returns a queued message, if there is one; the caller holds the turn and
// calls Written once it has written it.
func (w *Writer) Next() (Message, bool) {
	if p := w.q.Load(); p != nil {
		select {
		case m := <-p.msgs:
			return m, true
		default:
		}
	}
	return Message{}, false
}

// Written uncounts a written message and signals the room made.
func (w *Writer) Written(m Message) {
	w.bytes.Add(-m.Size())
	if p := w.q.Load(); p != nil {
		select {
		case p.room <- struct{}{}:
		default:
		}
	}
}
