package socket

import (
	"errors"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/gorilla/websocket"

	"github.com/gatehouse/gatehouse/edgesvc/internal/budget"
	"github.com/gatehouse/gatehouse/edgesvc/internal/sendq"
)

// Every byte a connection sends goes through its writer turn (sendq.Writer): data
// messages, pings, pongs and the close frame. Whoever holds the turn writes: the
// goroutine that queued the work, without blocking (Flush), or, when the socket is
// full or under TLS, a writer goroutine that waits for it (writeLoop). Because no one
// else writes, a frame the socket took only part of can be finished later by another
// holder, and a broadcast can write to thousands of sockets from one goroutine. The
// one exception is gorilla's close frame after a protocol error (1002, 1009), sent as
// the connection fails.

// Prepared is a message framed once for many connections (a broadcast).
type Prepared = sendq.Frame

// Prepare frames data (binary or text) once, for Enqueue on many connections: it counts
// against each one's own send bounds, not against the budgets they share.
func Prepare(binary bool, data string) *Prepared { return sendq.PrepareShared(binary, data) }

// QueuedBytes returns the bytes of messages queued or being written.
func (c *Conn) QueuedBytes() int64 { return c.w.Bytes() }

// A batch is at most batchMsgs messages and, past its first, about batchBytes: one
// writev.
const (
	batchMsgs  = 64
	batchBytes = 64 << 10
)

// wbuf is a writer's scratch space, pooled: a batch and its iovecs.
type wbuf struct {
	b   sendq.Batch
	iov []syscall.Iovec
}

var wbufPool = sync.Pool{New: func() any { return &wbuf{iov: make([]syscall.Iovec, 0, 2*batchMsgs+4)} }}

// Send queues text to be written. It never blocks: when the send buffer (SendBuffer
// bytes, SendQueue messages) is full the client is not keeping up, so the connection
// is closed with 1013 and Send returns ErrClosed.
func (c *Conn) Send(text string) error { return c.push(sendq.Message{Data: text}) }

// Push is Send for a text (binary false) or binary message; text is not copied.
func (c *Conn) Push(binary bool, data string) error {
	if binary {
		return c.push(sendq.Message{Frame: sendq.Prepare(true, data)}) // this connection's alone
	}
	return c.push(sendq.Message{Data: data})
}

func (c *Conn) push(m sendq.Message) error {
	mine, err := c.enqueue(m)
	if mine {
		c.Flush()
	}
	return err
}

// Enqueue queues p, a message framed once for many connections, like Push, but does
// not write it. When it reports true, no one was writing to the connection: the
// caller now holds its turn and must call Flush soon. A broadcast queues to every
// member first, then writes to each.
func (c *Conn) Enqueue(p *Prepared) (bool, error) { return c.enqueue(sendq.Message{Frame: p}) }

func (c *Conn) enqueue(m sendq.Message) (bool, error) {
	if c.isClosing() {
		return false, ErrClosed
	}
	if ok, over := c.w.Put(m, c.rt.cfg.SendQueue, c.rt.cfg.SendBuffer); over != budget.None {
		c.closeBudget("send", over)
		return false, ErrClosed
	} else if !ok {
		c.closeSlow("push_overflow", "send buffer full: client too slow")
		return false, ErrClosed
	}
	c.rt.metrics.Queued.Observe(float64(c.w.Bytes()))
	return c.w.Take(), nil
}

// Flush writes what waits for as long as the socket takes it at once, then gives the
// turn up; what the socket does not take is left to a writer goroutine, which the
// turn passes to. The caller holds the turn. It never blocks.
func (c *Conn) Flush() { c.flush(nil) }

// flush is Flush writing first (a reply not queued) before anything queued. It
// reports false if first could not be written: the connection is closing, or the
// socket failed.
func (c *Conn) flush(first *sendq.Message) bool {
	if c.sock == nil { // TLS: only a writer goroutine may write, as it may block
		go c.writeLoop()
		return first == nil
	}
	for {
		if c.isClosing() {
			go c.writeLoop() // the close frame, and what goes before it
			return first == nil
		}
		st := c.writeBatch(first, false, time.Time{}, batchMsgs)
		wasFirst := first != nil
		first = nil
		switch st {
		case wroteNothing:
			if !c.w.Release(c.done) {
				return true
			}
		case wroteRest:
			go c.writeLoop()
			return true
		case writeFailed: // the connection was dropped: a reply in this batch is lost
			return !wasFirst
		}
	}
}

// Reply queues text like Send, but when the queue is full it waits up to half of
// WriteWait for room, so a client that sends fast but also reads is slowed down (its
// messages are read no faster than it takes the answers) rather than dropped. A client
// that stops reading for that long is closed with 1013; the close frame reaches it if
// it reads again before the write in progress times out, else the connection drops.
//
// When nothing is queued or being written, the reply goes straight to the socket from
// the calling goroutine, sparing the queue and the hand-off to a writer goroutine;
// the guarantees above are unchanged.
func (c *Conn) Reply(text string) error { return c.reply(sendq.Message{Data: text}) }

// ReplyBinary is Reply for a binary message.
func (c *Conn) ReplyBinary(data string) error {
	return c.reply(sendq.Message{Frame: sendq.Prepare(true, data)})
}

func (c *Conn) reply(m sendq.Message) error {
	if c.isClosing() {
		return ErrClosed
	}
	if c.w.Queued() == 0 && c.w.Take() {
		// Holding the turn, Run has happened: sock is set (nil under TLS).
		if c.sock != nil {
			if !c.flush(&m) {
				return ErrClosed
			}
			return nil
		}
		if c.w.Release(c.done) {
			go c.writeLoop()
		}
	}
	// Queue it, waiting for room up to half of WriteWait: meanwhile nothing is read
	// from this client.
	var t *time.Timer
	for {
		room := c.w.Room() // before Offer: a write after a refusal signals it
		ok, over := c.w.Put(m, c.rt.cfg.SendQueue, c.rt.cfg.SendBuffer)
		if ok {
			if c.w.Take() {
				c.Flush()
			}
			return nil
		}
		if over != budget.None {
			c.closeBudget("send", over)
			return ErrClosed
		}
		if t == nil {
			t = time.NewTimer(c.rt.cfg.WriteWait / 2)
			defer t.Stop()
		}
		select {
		case <-room:
		case <-c.done:
			return ErrClosed
		case <-t.C:
			c.closeSlow("reply_timeout", "send buffer full: client too slow")
			return ErrClosed
		}
	}
}

// startWriter starts writeLoop unless someone holds the turn. Call it after closing
// done.
func (c *Conn) startWriter() {
	if c.w.Take() {
		go c.writeLoop()
	}
}

// What writeBatch did.
type writeStatus int

const (
	wroteNothing writeStatus = iota // nothing waited
	wroteAll                        // a batch, all of it
	wroteRest                       // a batch, not all of it: the rest waits (Rest)
	writeFailed                     // the connection has been dropped
)

// writeBatch writes, in one writev, the rest of the last batch, the control frames
// waiting, first, then up to msgs queued messages. With wait, it waits for the socket
// to take all of it (until deadline; if zero, as write says), else it writes what the
// socket takes at once. The caller holds the turn.
func (c *Conn) writeBatch(first *sendq.Message, wait bool, deadline time.Time, msgs int) writeStatus {
	wb := wbufPool.Get().(*wbuf)
	defer func() {
		clear(wb.b.Bufs) // do not keep payloads alive in the pool
		wbufPool.Put(wb)
	}()
	if !c.w.Fill(&wb.b, first, msgs, batchBytes) {
		return wroteNothing
	}
	n, err := c.write(wb, wait, deadline)
	all := c.w.Done(&wb.b, n)
	if err != nil {
		// The socket failed, or it took nothing for WriteWait: the stream may be
		// cut mid-frame, so nothing more can be said on it.
		c.closed(websocket.CloseAbnormalClosure)
		c.closeNet()
		return writeFailed
	}
	c.rt.metrics.Sent.Add(float64(wb.b.Msgs))
	if !all {
		return wroteRest
	}
	return wroteAll
}

// write writes wb's batch and returns how many bytes the socket took. Without wait it
// takes what the socket takes at once. With wait it waits for the socket until
// deadline; a zero deadline means WriteWait from when the socket is first found full
// (closeGrace after CloseSoon), and if the socket has not taken it all by half of
// that, the connection is closed with 1013 (the close frame follows this batch).
func (c *Conn) write(wb *wbuf, wait bool, deadline time.Time) (int, error) {
	nc := c.ws.NetConn()
	bufs, total := wb.b.Bufs, wb.b.Total
	if c.sock == nil { // TLS: blocking writes
		if deadline.IsZero() {
			deadline = time.Now().Add(c.rt.cfg.WriteWait)
		}
		_ = nc.SetWriteDeadline(deadline)
		n := 0
		for _, p := range bufs {
			m, err := nc.Write(p)
			n += m
			if err != nil {
				return n, err
			}
		}
		return n, nil
	}
	if !deadline.IsZero() {
		_ = nc.SetWriteDeadline(deadline)
	}
	var (
		n      int
		werr   error
		called bool
		stall  *time.Timer
	)
	fn := func(fd uintptr) bool {
		called = true
		for n < total {
			m, err := writev(fd, iovecs(wb.iov, bufs, n))
			switch {
			case m > 0:
				n += m
			case err == syscall.EINTR:
			case err == syscall.EAGAIN:
				if !wait {
					return true
				}
				if deadline.IsZero() && stall == nil {
					wait := c.rt.cfg.WriteWait
					if c.soon.Load() {
						wait = closeGrace
					}
					_ = nc.SetWriteDeadline(time.Now().Add(wait))
					stall = time.AfterFunc(wait/2, func() {
						c.closeSlow("write_stalled", "client too slow: a message could not be written")
					})
				}
				return false // the runtime waits until the socket takes more
			case err != nil:
				werr = err
				return true
			default:
				werr = errors.New("writev wrote nothing")
				return true
			}
		}
		return true
	}
	err := c.sock.Write(fn)
	if !called && deadline.IsZero() && errors.Is(err, os.ErrDeadlineExceeded) {
		// A deadline left by an earlier close has passed; this write has its own.
		_ = nc.SetWriteDeadline(time.Time{})
		err = c.sock.Write(fn)
	}
	if stall != nil {
		stall.Stop()
		if err == nil {
			_ = nc.SetWriteDeadline(time.Time{})
		}
	}
	if err == nil {
		err = werr
	}
	return n, err
}

// iovecs points iov at bufs, skipping their first skip bytes.
func iovecs(iov []syscall.Iovec, bufs [][]byte, skip int) []syscall.Iovec {
	iov = iov[:0]
	for _, p := range bufs {
		if skip >= len(p) {
			skip -= len(p)
			continue
		}
		p, skip = p[skip:], 0
		v := syscall.Iovec{Base: &p[0]}
		v.SetLen(len(p))
		iov = append(iov, v)
	}
	return iov
}

func writev(fd uintptr, iov []syscall.Iovec) (int, error) {
	n, _, errno := syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// writeLoop writes what waits, waiting for the socket as long as it must, and the
// close frame when the edge closes the connection, then ends as soon as nothing
// waits: a quiet socket has no writing goroutine. It runs holding the turn.
func (c *Conn) writeLoop() {
	for {
		if c.isClosing() {
			c.writeClose()
			return // the turn stays taken: nothing is written after the close frame
		}
		switch c.writeBatch(nil, true, time.Time{}, batchMsgs) {
		case writeFailed:
			return
		case wroteNothing:
			if !c.w.Release(c.done) {
				return
			}
		}
	}
}

// writeClose writes the close frame, when there is one to send: first the end of a
// frame begun (within WriteWait, as any write), then (unless the close drops them)
// what was queued and the close frame, within closeGrace; a client that does not take
// them by then is dropped. Then the client has
// closeGrace to answer; a close that answers the client's is followed by the end of
// the connection at once.
func (c *Conn) writeClose() {
	if c.closeMsg == nil {
		return // the client or the network ended the connection
	}
	// A frame begun is finished first, in the time any write has: a client that
	// reads again by then (one closed for being slow, say) gets the close frame.
	for c.w.Rest() {
		if c.writeBatch(nil, true, time.Time{}, 0) == writeFailed {
			return
		}
	}
	deadline := time.Now().Add(closeGrace)
	msgs := batchMsgs
	if c.dropQueued {
		msgs = 0
	}
	for {
		switch c.writeBatch(nil, true, deadline, msgs) {
		case writeFailed:
			return
		case wroteNothing:
			wb := wbufPool.Get().(*wbuf)
			frame := append(sendq.AppendHeader(nil, sendq.OpClose, len(c.closeMsg)), c.closeMsg...)
			wb.b.Bufs, wb.b.Total = append(wb.b.Bufs[:0], frame), len(frame)
			_, err := c.write(wb, true, deadline)
			clear(wb.b.Bufs)
			wbufPool.Put(wb)
			if err != nil || c.echo {
				c.closeNet()
				return
			}
			// The read loop ends when the client answers; stop waiting after closeGrace.
			time.AfterFunc(closeGrace, c.closeNet)
			return
		}
	}
}
