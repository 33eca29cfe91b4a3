package socket

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/gatehouse/gatehouse/edgesvc/internal/budget"
)

// maxKeptReadBuffer is the largest message buffer a socket keeps for the next message.
const maxKeptReadBuffer = 16 << 10

// readLoop hands messages to the handler until the connection ends (then it finishes
// it), or until the socket has been quiet for ParkAfter with nothing buffered (then it
// parks it and returns; the poller calls wake, which starts readLoop again, on new data).
func (c *Conn) readLoop() {
	for {
		if c.parkable && c.br.Buffered() == 0 {
			wait := c.rt.cfg.ParkAfter
			if c.linger != 0 {
				wait, c.linger = c.linger, 0
			}
			if wait < 0 {
				if c.park() {
					return
				}
				continue
			}
			// Wait for data for up to wait. A timeout here touches neither the
			// buffer nor gorilla's state (which a timeout inside gorilla would break).
			_ = c.ws.NetConn().SetReadDeadline(time.Now().Add(wait))
			_, err := c.br.Peek(1)
			_ = c.ws.NetConn().SetReadDeadline(time.Time{})
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if c.park() {
					return
				}
				continue
			}
		}
		if c.parkable && c.controlFrame() {
			c.linger = -1 // a keepalive is not activity: park again at once
			continue
		}
		if !c.pace() {
			continue // closing: the loop reads what is left
		}
		timer := c.startTimer()
		mt, r, err := c.ws.NextReader()
		timed := timer == timerSet
		if err == nil && timer == timerLater { // a data frame has begun behind a control frame
			_ = c.ws.NetConn().SetReadDeadline(time.Now().Add(c.rt.cfg.ReadTimeout))
			timed = true
		}
		if err != nil {
			c.readFailed(err, timed)
			c.finish()
			return
		}
		c.lastHeard.Store(time.Now().UnixNano())
		c.linger = 0 // a message is activity, even if a keepalive came just before it
		if c.isClosing() {
			// Drop the message (until the client answers our close). Read it to its
			// end, so that the next frame starts at the buffer's head, where the
			// loop's top looks for keepalives.
			if _, err := io.Copy(io.Discard, r); err != nil {
				c.readFailed(err, timed)
				c.finish()
				return
			}
			if timed {
				_ = c.ws.NetConn().SetReadDeadline(time.Time{})
			}
			continue
		}
		data, held, err := c.readMessage(r)
		if timed {
			_ = c.ws.NetConn().SetReadDeadline(time.Time{})
		}
		binary := mt == websocket.BinaryMessage
		valid := err == nil && (binary || utf8.Valid(data))
		if !valid {
			c.readShare.Give(held) // nothing of it reaches the handler
		}
		var over overBudget
		if errors.As(err, &over) {
			// Closed 1013; the rest of the message is dropped as it comes, for up to
			// closeGrace, so that the client sees the close rather than a reset.
			c.closeBudget("read", over.scope)
			_ = c.ws.NetConn().SetReadDeadline(time.Now().Add(closeGrace))
			if _, err := io.Copy(io.Discard, r); err != nil {
				c.finish() // the writer ends the connection once the close frame is out
				return
			}
			_ = c.ws.NetConn().SetReadDeadline(time.Time{})
			continue
		}
		if err != nil {
			c.readFailed(err, timed)
			c.finish()
			return
		}
		if !valid {
			c.Close(websocket.CloseInvalidFramePayloadData, "text message is not valid UTF-8")
			continue
		}
		c.rt.metrics.Received.Inc()
		c.h.Message(binary, data)
		c.readShare.Give(held) // the handler is done with it
	}
}

// overBudget is readMessage's error for a message that would take a read budget
// past its limit.
type overBudget struct{ scope budget.Scope }

func (e overBudget) Error() string { return "read budget of the " + e.scope.String() + " exhausted" }

// readChunk is the least a message buffer grows by.
const readChunk = 4 << 10

// readMessage reads the message r into the connection's buffer and returns it, with
// the bytes it took from the read budgets for it (the caller gives them back once
// done with the message, whatever the error). The buffer a socket keeps between
// messages (at most maxKeptReadBuffer) is not counted; every larger one is, from the
// moment it is made.
func (c *Conn) readMessage(r io.Reader) (data []byte, held int64, err error) {
	buf := c.msg[:0]
	for {
		if len(buf) == cap(buf) {
			size := int(min(int64(max(2*cap(buf), readChunk)), c.rt.cfg.ReadLimit+1))
			if size <= len(buf) {
				size = len(buf) + readChunk // past the limit: gorilla will refuse it
			}
			if scope := c.readShare.Take(int64(size)); scope != budget.None {
				c.msg = nil
				return nil, held, overBudget{scope}
			}
			c.readShare.Give(held) // the smaller buffer is let go
			held = int64(size)
			grown := make([]byte, len(buf), size)
			copy(grown, buf)
			buf = grown
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			c.msg = nil
			return nil, held, err
		}
	}
	if cap(buf) <= maxKeptReadBuffer {
		c.msg = buf[:0]
	} else {
		c.msg = nil // do not keep a large message's buffer for the socket's life
	}
	return buf, held, nil
}

// pace waits until the connection's message rates allow the next message (counting
// the pause), and reports whether reading may go on: false if the connection began
// closing meanwhile.
func (c *Conn) pace() bool {
	if len(c.rates) == 0 || c.isClosing() { // closing: what comes is read and dropped
		return true
	}
	now := time.Now()
	var wait time.Duration
	var held [2]*rate.Reservation // this connection's and its user's
	for i, l := range c.rates {
		r := l.ReserveN(now, 1)
		if !r.OK() {
			continue // a burst below 1: not a bound
		}
		held[i] = r
		wait = max(wait, r.DelayFrom(now))
	}
	if wait <= 0 {
		return true
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		c.rt.metrics.ReadPaused.Add(wait.Seconds())
		return true
	case <-c.done:
		// The message will not be read: its places go back to the user's other sockets.
		end := time.Now()
		for _, r := range held {
			if r != nil {
				r.CancelAt(end)
			}
		}
		c.rt.metrics.ReadPaused.Add(end.Sub(now).Seconds())
		return false
	}
}

// What startTimer did.
const (
	timerNone  = iota // no timer: the message is all in the buffer, or no bound is set
	timerSet          // a read deadline bounds the message
	timerLater        // a control frame comes first, not all here yet: set one once NextReader returns
)

// startTimer bounds the message that is beginning by ReadTimeout: only once it has
// begun to arrive (an idle socket waits for its next message as long as pings say it
// lives) and when it is not all in the buffer already (most messages are, and need no
// timer). Whole keepalives at the buffer's head are handled first, so that a ping
// cannot stand in for the data frame behind it.
func (c *Conn) startTimer() int {
	if c.rt.cfg.ReadTimeout <= 0 {
		return timerNone
	}
	if c.br.Buffered() == 0 {
		if _, err := c.br.Peek(1); err != nil {
			return timerNone // NextReader meets the error
		}
	}
	for c.controlFrame() {
	}
	if h, err := c.br.Peek(1); err != nil {
		return timerNone
	} else if h[0]&0x08 != 0 { // a control frame not all here: no data message has begun
		return timerLater
	}
	if wholeFrame(c.br) {
		return timerNone
	}
	_ = c.ws.NetConn().SetReadDeadline(time.Now().Add(c.rt.cfg.ReadTimeout))
	return timerSet
}

// wholeFrame reports whether the buffer starts with a whole final frame (a data
// message in one frame, or a control frame).
func wholeFrame(br peeker) bool {
	h, err := br.Peek(min(br.Buffered(), 14))
	if err != nil || len(h) < 2 || h[0]&0x80 == 0 {
		return false
	}
	n, at := uint64(h[1]&0x7f), 2
	switch n {
	case 126:
		if len(h) < 4 {
			return false
		}
		n, at = uint64(binary.BigEndian.Uint16(h[2:4])), 4
	case 127:
		if len(h) < 10 {
			return false
		}
		n, at = binary.BigEndian.Uint64(h[2:10]), 10
	}
	if h[1]&0x80 != 0 {
		at += 4 // the mask
	}
	return n <= uint64(br.Buffered()) && uint64(at)+n <= uint64(br.Buffered())
}

// park hands the quiet socket to the poller. It reports whether the calling
// goroutine must stop reading: true once parked (or once another goroutine took
// over), false if the socket could not be parked.
func (c *Conn) park() bool {
	c.msg = nil // an idle socket keeps no message buffer
	if c.pollID == 0 {
		c.pollID = c.rt.poller.Register((*sleeper)(c))
	}
	// Everything the next reader needs is set before parked: it may start as soon as
	// the socket is armed.
	id, add := c.pollID, !c.pollAdded
	c.pollAdded = true
	c.parked.Store(true)
	if err := c.rt.poller.Arm(id, c.sock, add); err != nil {
		if c.parked.CompareAndSwap(true, false) {
			c.parkable = false // read on this goroutine from now on
			return false
		}
	}
	return true
}

// sleeper is a Conn as the poller sees it.
type sleeper Conn

// Wake starts a reading goroutine for a parked socket; it does nothing otherwise.
func (s *sleeper) Wake() { (*Conn)(s).wake() }

// wake starts a reading goroutine for a parked socket; it does nothing otherwise.
func (c *Conn) wake() {
	if c.parked.CompareAndSwap(true, false) {
		go c.readLoop()
	}
}

// controlFrame handles a ping or pong that is wholly in the read buffer at a message
// boundary, as gorilla would, and reports whether it did. Gorilla's NextReader would
// handle it too, but then go on waiting for a data message, keeping its goroutine:
// handled here, an idle socket can park again after each keepalive. Anything else
// (data, close, a frame not yet complete, a malformed frame) is left to gorilla.
func (c *Conn) controlFrame() bool {
	n, ok := parseControlFrame(c.br)
	if !ok {
		return false
	}
	f, _ := c.br.Peek(n)
	op, payload := int(f[0]&0x0f), unmask(f)
	_, _ = c.br.Discard(n)
	c.lastHeard.Store(time.Now().UnixNano())
	if op == websocket.PingMessage {
		c.pong(payload)
	}
	return true
}

// peeker is the part of bufio.Reader that parseControlFrame reads.
type peeker interface {
	Peek(n int) ([]byte, error)
	Buffered() int
}

// parseControlFrame reports whether the buffer starts with a whole, well-formed
// client ping or pong (final, no reserved bits, masked, payload ≤ 125 bytes), and
// its length in bytes. It reads nothing: the frame stays buffered.
func parseControlFrame(br peeker) (int, bool) {
	h, err := br.Peek(2)
	if err != nil {
		return 0, false
	}
	op, n := int(h[0]&0x0f), int(h[1]&0x7f)
	if h[0]&0xf0 != 0x80 || h[1]&0x80 == 0 || n > 125 || (op != websocket.PingMessage && op != websocket.PongMessage) {
		return 0, false // fragmented, reserved bits, unmasked, too long, or not ping/pong
	}
	if br.Buffered() < 6+n {
		return 0, false
	}
	return 6 + n, true
}

// unmask returns the payload of a whole masked control frame f (2 header bytes, 4
// mask bytes, the payload).
func unmask(f []byte) []byte {
	n := len(f) - 6
	payload := make([]byte, n)
	for i := range n {
		payload[i] = f[6+i] ^ f[2+i%4]
	}
	return payload
}

// readFailed ends reading after err; timed says a read deadline bounded the message.
func (c *Conn) readFailed(err error, timed bool) {
	var ce *websocket.CloseError
	var ne net.Error
	switch {
	case timed && errors.As(err, &ne) && ne.Timeout():
		// The message did not complete within ReadTimeout. Nothing more can be read
		// (gorilla's state is broken): the writer sends the close frame, then ends
		// the connection.
		if c.close(websocket.ClosePolicyViolation, "message not completed in time", true) {
			c.rt.metrics.ReadTimeouts.Inc()
		}
		return
	case errors.Is(err, websocket.ErrReadLimit):
		// gorilla has already sent close 1009. Read and drop the rest of the oversized
		// message until the client answers, for up to closeGrace: closing with unread
		// data would make the kernel reset the connection, and the client would see
		// 1006 instead of 1009.
		c.closed(websocket.CloseMessageTooBig)
		nc := c.ws.NetConn()
		_ = nc.SetReadDeadline(time.Now().Add(closeGrace))
		_, _ = io.Copy(io.Discard, c.br) // what is buffered, then the socket
		_ = nc.SetReadDeadline(time.Time{})
	case errors.As(err, &ce):
		c.closed(ce.Code)
		if c.echo {
			return // the writer answers the close, then ends the connection
		}
	default:
		c.closed(websocket.CloseAbnormalClosure)
	}
	_ = c.ws.Close()
}
