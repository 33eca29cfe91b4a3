package edge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// Close codes the edge sends (see the README's close-code table).
const (
	CloseGoingAway      = websocket.CloseGoingAway       // 1001: edge shutting down
	CloseUnsupported    = websocket.CloseUnsupportedData // 1003: binary frame
	CloseInvalidPayload = websocket.CloseInvalidFramePayloadData
	CloseTooBig         = websocket.CloseMessageTooBig // 1009
	CloseInternal       = websocket.CloseInternalServerErr
	CloseTryAgainLater  = websocket.CloseTryAgainLater // 1013: send queue full
	CloseSessionEnded   = 4401
)

// ErrClosed is returned by Send on a connection that is closing or closed.
var ErrClosed = errors.New("connection closed")

// User is the signed-in user a connection belongs to.
type User struct {
	ID       int64
	Username string
}

// Session is the session a connection was opened with.
type Session struct {
	ID        string
	ExpiresAt time.Time
}

// Conn is one upgraded WebSocket. Its methods are safe for concurrent use.
type Conn struct {
	ws      *websocket.Conn
	srv     *Server
	user    User
	session Session
	token   string      // kept to re-validate the session after the event feed was interrupted
	send    chan string // made by startWriter
	done    chan struct{}
	ctx     context.Context
	cancel  context.CancelFunc

	closeOnce sync.Once
	queue     sync.Once   // makes send
	writing   atomic.Bool // writeLoop runs
	code      int         // the close code sent or received; set once under closeOnce
	closeMsg  []byte      // the close frame to send, when the edge closes
	expiry    *time.Timer
	pinger    *time.Timer
	pingSent  int64        // unix ns of the last ping; only the pinger touches it
	lastHeard atomic.Int64 // unix ns of the last pong or message from the client

	// Reading. One goroutine at a time runs readLoop; a socket quiet for ParkAfter
	// with nothing buffered is parked (readLoop returns) and the poller starts a new
	// readLoop when data arrives, so an idle socket has no goroutine at all.
	consumer   Consumer
	connected  bool            // consumer.Connect succeeded
	registered bool            // added to the hub
	br         *bufio.Reader   // gorilla's read buffer, ours so its fill level can be seen
	sock       syscall.RawConn // the TCP socket; nil under TLS (no parking, no direct writes)
	parkable   bool            // readLoop may park the socket
	pollID     uint64          // the poller's key for c; 0 before the first park
	pollAdded  bool            // registered with the poller's epoll
	parked     atomic.Bool
	linger     time.Duration // the next quiet wait instead of ParkAfter, if not 0; < 0: park at once
	buf        bytes.Buffer  // the message being read, kept across messages up to maxKeptReadBuffer
	finished   sync.Once
}

// User returns the connection's user.
func (c *Conn) User() User { return c.user }

// Session returns the session the connection was opened with.
func (c *Conn) Session() Session { return c.session }

// Context returns a context that ends when the connection closes.
func (c *Conn) Context() context.Context { return c.ctx }

// Send queues text to be written. It never blocks: when the queue is full the client
// is not keeping up, so the connection is closed with 1013 and Send returns ErrClosed.
func (c *Conn) Send(text string) error {
	c.queue.Do(c.makeQueue)
	select {
	case <-c.done:
		return ErrClosed
	default:
	}
	select {
	case c.send <- text:
		c.startWriter()
		return nil
	default:
		c.Close(CloseTryAgainLater, "send queue full: client too slow")
		return ErrClosed
	}
}

// Reply queues text like Send, but when the queue is full it waits up to half of
// WriteWait for room, so a client that sends fast but also reads is slowed down (its
// messages are read no faster than it takes the answers) rather than dropped. A client
// that stops reading for that long is closed with 1013; the close frame reaches it if
// it reads again before the write in progress times out, else the connection drops.
//
// Consumers answering a received message use Reply; pushes from elsewhere use Send.
// When nothing is queued or being written, the reply goes straight to the socket from
// the calling goroutine if the socket takes it at once, sparing the hand-off to the
// writer goroutine; the guarantees above are unchanged.
func (c *Conn) Reply(text string) error {
	c.queue.Do(c.makeQueue)
	if c.sock != nil && len(c.send) == 0 && !c.isClosing() && c.writing.CompareAndSwap(false, true) {
		err := c.writeNow(text)
		c.releaseWriting()
		if err != errWouldBlock {
			return err
		}
	}
	select {
	case c.send <- text:
		c.startWriter()
		return nil
	case <-c.done:
		return ErrClosed
	default:
	}
	t := time.NewTimer(c.srv.cfg.WriteWait / 2)
	defer t.Stop()
	select {
	case c.send <- text:
		c.startWriter()
		return nil
	case <-c.done:
		return ErrClosed
	case <-t.C:
		c.Close(CloseTryAgainLater, "send queue full: client too slow")
		return ErrClosed
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
// and dropping the connection if it takes all of WriteWait. The caller holds writing.
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
					_ = c.ws.NetConn().SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteWait))
					slowing = time.AfterFunc(c.srv.cfg.WriteWait/2, func() {
						c.Close(CloseTryAgainLater, "send queue full: client too slow")
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
		_ = c.ws.NetConn().SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteWait))
		err = c.sock.Write(write)
	}
	if slowing != nil {
		slowing.Stop()
	}
	switch {
	case err == nil && werr == nil && off == 0:
		return errWouldBlock
	case err == nil && werr == nil:
		c.srv.metrics.sent.Inc()
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

// Close closes the connection with code and reason (cut to 123 bytes). The writer
// goroutine sends the close frame as soon as any write in progress ends (allowing it
// closeGrace), then gives the client closeGrace to answer before dropping the
// connection. Only the first Close (or end of the connection) has an effect.
func (c *Conn) Close(code int, reason string) {
	c.closeOnce.Do(func() {
		reason = truncateUTF8(reason, 123)
		c.code = code
		c.closeMsg = websocket.FormatCloseMessage(code, reason)
		close(c.done)
		c.cancel()
		c.srv.metrics.closes.WithLabelValues(codeLabel(code), "edge").Inc()
	})
	c.queue.Do(c.makeQueue)
	c.startWriter() // it sends the close frame
}

// makeQueue makes the send queue, on the first Send, Reply or Close: a socket that
// only idles has none.
func (c *Conn) makeQueue() { c.send = make(chan string, c.srv.cfg.SendQueue) }

// startWriter starts writeLoop unless something holds writing. Call it after
// queueing a message or closing done.
func (c *Conn) startWriter() {
	if c.writing.CompareAndSwap(false, true) {
		go c.writeLoop()
	}
}

// releaseWriting gives up writing, taken by a write outside writeLoop, and starts
// writeLoop if something was queued or the connection began closing meanwhile. The
// queue must exist (c.queue done).
func (c *Conn) releaseWriting() {
	c.writing.Store(false)
	if len(c.send) > 0 || c.isClosing() {
		c.startWriter()
	}
}

// closed records that the peer or the network ended the connection without a close
// from us.
func (c *Conn) closed(code int) {
	c.closeOnce.Do(func() {
		c.code = code
		close(c.done)
		c.cancel()
		c.srv.metrics.closes.WithLabelValues(codeLabel(code), "client").Inc()
	})
}

const closeGrace = time.Second

// maxKeptReadBuffer is the largest message buffer a socket keeps for the next message.
const maxKeptReadBuffer = 16 << 10

// writeText writes one text message without copying it to a []byte first.
func (c *Conn) writeText(msg string) error {
	w, err := c.ws.NextWriter(websocket.TextMessage)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, msg); err != nil {
		_ = w.Close()
		return err
	}
	return w.Close()
}

// ping drops the connection if the client has not answered the previous ping (nor
// sent anything since), else sends a ping and re-arms its timer. WriteControl may run
// alongside writeLoop.
func (c *Conn) ping() {
	if c.isClosing() {
		return
	}
	if c.pingSent != 0 && c.lastHeard.Load() < c.pingSent {
		c.closed(websocket.CloseAbnormalClosure)
		c.closeNet()
		return
	}
	c.pingSent = time.Now().UnixNano()
	if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.srv.cfg.WriteWait)); err != nil {
		c.closed(websocket.CloseAbnormalClosure)
		c.closeNet()
		return
	}
	c.pinger.Reset(c.srv.cfg.PingPeriod)
}

// closeNet closes the network connection. A parked socket has no reader to notice,
// so one is started: it reads the error and finishes the connection.
func (c *Conn) closeNet() {
	_ = c.ws.Close()
	c.wake()
}

// wake starts a reading goroutine for a parked socket; it does nothing otherwise.
func (c *Conn) wake() {
	if c.parked.CompareAndSwap(true, false) {
		go c.readLoop()
	}
}

// truncateUTF8 cuts s to at most n bytes without splitting a character (a close
// reason that is not valid UTF-8 makes browsers fail the connection).
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// writeLoop writes queued messages, and the close frame when the edge closes the
// connection, then ends as soon as the queue is empty: a quiet socket has no writing
// goroutine, and replies usually go out directly (Reply). Whoever holds writing is the
// only writer of data frames, which keeps them in order; every frame, ours or
// gorilla's (pings, pongs, closes), is written whole under the socket's write lock.
func (c *Conn) writeLoop() {
	for {
		if c.isClosing() {
			if c.closeMsg != nil {
				_ = c.ws.WriteControl(websocket.CloseMessage, c.closeMsg, time.Now().Add(closeGrace))
				// The read loop ends when the client answers; stop waiting after closeGrace.
				time.AfterFunc(closeGrace, c.closeNet)
			}
			return // writing stays taken: nothing is written after the close frame
		}
		select {
		case msg := <-c.send:
			_ = c.ws.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteWait))
			if err := c.writeText(msg); err != nil {
				c.closed(websocket.CloseAbnormalClosure)
				c.closeNet()
				return
			}
			c.srv.metrics.sent.Inc()
		default:
			if c.stopWriting() {
				return
			}
		}
	}
}

// stopWriting lets writeLoop end, unless a message or a close arrived meanwhile; it
// reports whether the loop must end.
func (c *Conn) stopWriting() bool {
	c.writing.Store(false)
	if len(c.send) == 0 && !c.isClosing() {
		return true
	}
	// Whoever queued that may have seen writing still true and not started a writer.
	return !c.writing.CompareAndSwap(false, true)
}

// readLoop feeds text messages to the consumer until the connection ends (then it
// finishes it), or until the socket has been quiet for ParkAfter with nothing
// buffered (then it parks it and returns; the poller calls it again on new data).
func (c *Conn) readLoop() {
	for {
		if c.parkable && c.br.Buffered() == 0 {
			wait := c.srv.cfg.ParkAfter
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
		if c.isClosing() || mt != websocket.TextMessage {
			if mt != websocket.TextMessage {
				c.Close(CloseUnsupported, "binary frames are not supported: send text")
			}
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
		if !utf8.Valid(data) {
			c.Close(CloseInvalidPayload, "text message is not valid UTF-8")
			continue
		}
		c.srv.metrics.received.Inc()
		if err := c.consumer.Receive(c.ctx, c, string(data)); err != nil && !errors.Is(err, ErrClosed) {
			c.srv.log.ErrorContext(c.ctx, "consumer failed", "session_id", c.session.ID, "err", err)
			c.Close(CloseInternal, "internal error")
		}
	}
}

// park hands the quiet socket to the poller. It reports whether the calling
// goroutine must stop reading: true once parked (or once another goroutine took
// over), false if the socket could not be parked.
func (c *Conn) park() bool {
	c.buf = bytes.Buffer{} // an idle socket keeps no message buffer
	if c.pollID == 0 {
		c.pollID = c.srv.poller.register(c)
	}
	// Everything the next reader needs is set before parked: it may start as soon as
	// the socket is armed.
	id, add := c.pollID, !c.pollAdded
	c.pollAdded = true
	c.parked.Store(true)
	if err := c.srv.poller.arm(id, c.sock, add); err != nil {
		if c.parked.CompareAndSwap(true, false) {
			c.parkable = false // read on this goroutine from now on
			return false
		}
	}
	return true
}

// controlFrame handles a ping or pong that is wholly in the read buffer at a message
// boundary, as gorilla would, and reports whether it did. Gorilla's NextReader would
// handle it too, but then go on waiting for a data message, keeping its goroutine:
// handled here, an idle socket can park again after each keepalive. Anything else
// (data, close, a frame not yet complete, a malformed frame) is left to gorilla.
func (c *Conn) controlFrame() bool {
	h, err := c.br.Peek(2)
	if err != nil {
		return false
	}
	op, n := int(h[0]&0x0f), int(h[1]&0x7f)
	if h[0]&0xf0 != 0x80 || h[1]&0x80 == 0 || n > 125 || (op != websocket.PingMessage && op != websocket.PongMessage) {
		return false // fragmented, reserved bits, unmasked, too long, or not ping/pong
	}
	if c.br.Buffered() < 6+n {
		return false
	}
	f, _ := c.br.Peek(6 + n)
	payload := make([]byte, n)
	for i := range n {
		payload[i] = f[6+i] ^ f[2+i%4]
	}
	_, _ = c.br.Discard(6 + n)
	c.lastHeard.Store(time.Now().UnixNano())
	if op == websocket.PingMessage {
		_ = c.ws.WriteControl(websocket.PongMessage, payload, time.Now().Add(c.srv.cfg.WriteWait))
	}
	return true
}

func (c *Conn) isClosing() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func (c *Conn) readFailed(err error) {
	var ce *websocket.CloseError
	switch {
	case errors.Is(err, websocket.ErrReadLimit):
		// gorilla has already sent close 1009. Read and drop the rest of the oversized
		// message until the client answers, for up to closeGrace: closing with unread
		// data would make the kernel reset the connection, and the client would see
		// 1006 instead of 1009.
		c.closed(CloseTooBig)
		nc := c.ws.NetConn()
		_ = nc.SetReadDeadline(time.Now().Add(closeGrace))
		_, _ = io.Copy(io.Discard, c.br) // what is buffered, then the socket
		_ = nc.SetReadDeadline(time.Time{})
	case errors.As(err, &ce):
		c.closed(ce.Code)
	default:
		c.closed(websocket.CloseAbnormalClosure)
	}
	_ = c.ws.Close()
}
