package socket

import (
	"encoding/binary"
	"errors"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/gatehouse/gatehouse/edgesvc/internal/sendq"
)

// Prepared is a message framed once for many connections (a broadcast).
type Prepared = sendq.Frame

// Prepare frames data (binary or text) once, for PushPrepared on many connections.
func Prepare(binary bool, data string) *Prepared { return sendq.Prepare(binary, data) }

// QueuedBytes returns the bytes of messages queued or being written by the writer.
func (c *Conn) QueuedBytes() int64 { return c.w.Bytes() }

// Send queues text to be written. It never blocks: when the send buffer (SendBuffer
// bytes, SendQueue messages) is full the client is not keeping up, so the connection
// is closed with 1013 and Send returns ErrClosed.
func (c *Conn) Send(text string) error { return c.push(sendq.Message{Data: text}) }

// Push is Send for a text (binary false) or binary message; text is not copied.
func (c *Conn) Push(binary bool, data string) error {
	if binary {
		return c.push(sendq.Message{Frame: Prepare(true, data)})
	}
	return c.push(sendq.Message{Data: data})
}

// PushPrepared is Send for a message framed once for many connections.
func (c *Conn) PushPrepared(p *Prepared) error { return c.push(sendq.Message{Frame: p}) }

func (c *Conn) push(m sendq.Message) error {
	if c.isClosing() {
		return ErrClosed
	}
	if c.w.Offer(m, c.rt.cfg.SendQueue, c.rt.cfg.SendBuffer) {
		c.rt.metrics.Queued.Observe(float64(c.w.Bytes()))
		c.startWriter()
		return nil
	}
	c.rt.metrics.SlowCloses.WithLabelValues("push_overflow").Inc()
	c.CloseNow(websocket.CloseTryAgainLater, "send buffer full: client too slow")
	return ErrClosed
}

// Reply queues text like Send, but when the queue is full it waits up to half of
// WriteWait for room, so a client that sends fast but also reads is slowed down (its
// messages are read no faster than it takes the answers) rather than dropped. A client
// that stops reading for that long is closed with 1013; the close frame reaches it if
// it reads again before the write in progress times out, else the connection drops.
//
// When nothing is queued or being written, the reply goes straight to the socket from
// the calling goroutine if the socket takes it at once, sparing the hand-off to the
// writer goroutine; the guarantees above are unchanged.
func (c *Conn) Reply(text string) error {
	if c.isClosing() {
		return ErrClosed
	}
	if c.w.Queued() == 0 && c.w.Take() {
		// Holding the turn, Run has happened: sock is set (nil under TLS).
		err := errWouldBlock
		if c.sock != nil {
			err = c.writeNow(text)
		}
		if c.w.Release(c.done) {
			go c.writeLoop()
		}
		if err != errWouldBlock {
			return err
		}
	}
	// Queue it, waiting for room up to half of WriteWait: meanwhile nothing is read
	// from this client.
	m := sendq.Message{Data: text}
	var t *time.Timer
	for {
		if c.w.Offer(m, c.rt.cfg.SendQueue, c.rt.cfg.SendBuffer) {
			c.startWriter()
			return nil
		}
		if t == nil {
			t = time.NewTimer(c.rt.cfg.WriteWait / 2)
			defer t.Stop()
		}
		select {
		case <-c.w.Room(c.rt.cfg.SendQueue):
		case <-c.done:
			return ErrClosed
		case <-t.C:
			c.rt.metrics.SlowCloses.WithLabelValues("reply_timeout").Inc()
			c.CloseNow(websocket.CloseTryAgainLater, "send buffer full: client too slow")
			return ErrClosed
		}
	}
}

// startWriter starts writeLoop unless someone holds the turn. Call it after queueing
// a message or closing done.
func (c *Conn) startWriter() {
	if c.w.Take() {
		go c.writeLoop()
	}
}

// errWouldBlock: the socket took none of the frame; queue it instead.
var errWouldBlock = errors.New("socket full")

var framePool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// writeNow writes text as one frame with non-blocking write calls, holding the
// socket's write lock throughout, so no other frame can come between its parts. If the
// socket takes nothing, it returns errWouldBlock. If it takes part, the rest must follow
// before anything else: it waits for room, as the writer goroutine would, closing with
// 1013 if that takes half of WriteWait (the close frame follows the finished frame),
// and dropping the connection if it takes all of WriteWait. The caller holds the turn.
func (c *Conn) writeNow(text string) error {
	bp := framePool.Get().(*[]byte)
	frame := appendTextFrame((*bp)[:0], text)
	defer func() {
		if cap(frame) <= 64<<10 {
			*bp = frame[:0]
			framePool.Put(bp)
		}
	}()
	var (
		off     int
		called  bool
		werr    error
		slowing *time.Timer
	)
	wait := c.rt.cfg.WriteWait
	write := func(fd uintptr) bool {
		called = true
		for off < len(frame) {
			n, err := syscall.Write(int(fd), frame[off:])
			switch {
			case n > 0:
				off += n
			case err == syscall.EINTR:
			case err == syscall.EAGAIN && off == 0:
				return true // nothing written: queue it
			case err == syscall.EAGAIN:
				if slowing == nil {
					_ = c.ws.NetConn().SetWriteDeadline(time.Now().Add(wait))
					slowing = time.AfterFunc(wait/2, func() {
						c.rt.metrics.SlowCloses.WithLabelValues("write_stalled").Inc()
						c.CloseNow(websocket.CloseTryAgainLater, "client too slow: a message could not be written")
					})
				}
				return false // wait for room, still holding the write lock
			case err != nil:
				werr = err
				return true
			default:
				werr = io.ErrShortWrite
				return true
			}
		}
		return true
	}
	err := c.sock.Write(write)
	if !called && errors.Is(err, os.ErrDeadlineExceeded) {
		// A deadline left by an earlier write has passed; give this one its own.
		_ = c.ws.NetConn().SetWriteDeadline(time.Now().Add(wait))
		err = c.sock.Write(write)
	}
	if slowing != nil {
		slowing.Stop()
	}
	switch {
	case err == nil && werr == nil && off == 0:
		return errWouldBlock
	case err == nil && werr == nil:
		c.rt.metrics.Sent.Inc()
		return nil
	}
	// The socket failed, or the frame could not be finished within WriteWait: the
	// stream is cut mid-frame, so nothing more can be said on it.
	c.closed(websocket.CloseAbnormalClosure)
	c.closeNet()
	return ErrClosed
}

// appendTextFrame appends an unmasked, final text frame carrying text (RFC 6455 5.2).
func appendTextFrame(b []byte, text string) []byte {
	switch n := len(text); {
	case n <= 125:
		b = append(b, 0x81, byte(n))
	case n <= 0xffff:
		b = append(b, 0x81, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x81, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, text...)
}

// writeLoop writes queued messages, and the close frame when the edge closes the
// connection, then ends as soon as the queue is empty: a quiet socket has no writing
// goroutine, and replies usually go out directly (Reply). It runs holding the turn.
func (c *Conn) writeLoop() {
	for {
		if c.isClosing() {
			if c.closeMsg != nil {
				// Unless the close drops them, what was queued goes first, then the
				// close frame, all within closeGrace: a client that does not take them
				// by then is dropped.
				deadline := time.Now().Add(closeGrace)
				_ = c.ws.SetWriteDeadline(deadline)
				if !c.dropQueued {
					c.flush()
				}
				_ = c.ws.WriteControl(websocket.CloseMessage, c.closeMsg, deadline)
				// The read loop ends when the client answers; stop waiting after closeGrace.
				time.AfterFunc(closeGrace, c.closeNet)
			}
			return // the turn stays taken: nothing is written after the close frame
		}
		if msg, ok := c.w.Next(); ok {
			_ = c.ws.SetWriteDeadline(time.Now().Add(c.rt.cfg.WriteWait))
			err := c.writeMessage(msg)
			c.w.Written(msg)
			if err != nil {
				c.closed(websocket.CloseAbnormalClosure)
				c.closeNet()
				return
			}
			c.rt.metrics.Sent.Inc()
		} else if !c.w.Release(c.done) {
			return
		}
	}
}

// flush writes the messages queued, until the queue is empty or a write fails.
func (c *Conn) flush() {
	for {
		msg, ok := c.w.Next()
		if !ok {
			return
		}
		err := c.writeMessage(msg)
		c.w.Written(msg)
		if err != nil {
			return
		}
		c.rt.metrics.Sent.Inc()
	}
}

// writeMessage writes one message without copying it to a []byte first.
func (c *Conn) writeMessage(msg sendq.Message) error {
	if msg.Frame != nil {
		return c.ws.WritePreparedMessage(msg.Frame.PM)
	}
	w, err := c.ws.NextWriter(websocket.TextMessage)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, msg.Data); err != nil {
		_ = w.Close()
		return err
	}
	return w.Close()
}
