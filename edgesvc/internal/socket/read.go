package socket

import (
	"bytes"
	"errors"
	"io"
	"net"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
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
		mt, r, err := c.ws.NextReader()
		if err != nil {
			c.readFailed(err)
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
				c.readFailed(err)
				c.finish()
				return
			}
			continue
		}
		c.buf.Reset()
		if _, err := c.buf.ReadFrom(r); err != nil {
			c.readFailed(err)
			c.finish()
			return
		}
		data := c.buf.Bytes()
		if c.buf.Cap() > maxKeptReadBuffer {
			c.buf = bytes.Buffer{} // do not keep a large message's buffer for the socket's life
		}
		binary := mt == websocket.BinaryMessage
		if !binary && !utf8.Valid(data) {
			c.Close(websocket.CloseInvalidFramePayloadData, "text message is not valid UTF-8")
			continue
		}
		c.rt.metrics.Received.Inc()
		c.h.Message(binary, data)
	}
}

// park hands the quiet socket to the poller. It reports whether the calling
// goroutine must stop reading: true once parked (or once another goroutine took
// over), false if the socket could not be parked.
func (c *Conn) park() bool {
	c.buf = bytes.Buffer{} // an idle socket keeps no message buffer
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

func (c *Conn) readFailed(err error) {
	var ce *websocket.CloseError
	switch {
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
