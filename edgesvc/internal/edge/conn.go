package edge

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
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
	writer    sync.Once // starts writeLoop
	code      int       // the close code sent or received; set once under closeOnce
	closeMsg  []byte    // the close frame to send, when the edge closes
	expiry    *time.Timer
	pinger    *time.Timer
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
	c.writer.Do(c.startWriter)
	select {
	case <-c.done:
		return ErrClosed
	default:
	}
	select {
	case c.send <- text:
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
// Consumers answering a received message use Reply; pushes from elsewhere use Send.
func (c *Conn) Reply(text string) error {
	c.writer.Do(c.startWriter)
	select {
	case c.send <- text:
		return nil
	case <-c.done:
		return ErrClosed
	default:
	}
	t := time.NewTimer(c.srv.cfg.WriteWait / 2)
	defer t.Stop()
	select {
	case c.send <- text:
		return nil
	case <-c.done:
		return ErrClosed
	case <-t.C:
		c.Close(CloseTryAgainLater, "send queue full: client too slow")
		return ErrClosed
	}
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
	c.writer.Do(c.startWriter) // it sends the close frame
}

// startWriter makes the send queue and starts writeLoop. It runs on the first Send,
// Reply or Close, so a socket that only idles has neither (about 4 KiB together).
func (c *Conn) startWriter() {
	c.send = make(chan string, c.srv.cfg.SendQueue)
	go c.writeLoop()
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

// ping sends a ping and re-arms its timer; WriteControl may run alongside writeLoop.
func (c *Conn) ping() {
	if c.isClosing() {
		return
	}
	if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(c.srv.cfg.WriteWait)); err != nil {
		c.closed(websocket.CloseAbnormalClosure)
		_ = c.ws.Close()
		return
	}
	c.pinger.Reset(c.srv.cfg.PingPeriod)
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

// writeLoop is the connection's only writer of messages, and of the close frame when
// the edge closes the connection. Pings go from a timer (ping), not from here, so an
// idle socket costs no ticker.
func (c *Conn) writeLoop() {
	for {
		select {
		case msg := <-c.send:
			if c.isClosing() {
				continue // the close frame goes next; drop what was queued
			}
			_ = c.ws.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteWait))
			if err := c.writeText(msg); err != nil {
				c.closed(websocket.CloseAbnormalClosure)
				_ = c.ws.Close()
				return
			}
			c.srv.metrics.sent.Inc()
		case <-c.done:
			if c.closeMsg != nil {
				_ = c.ws.WriteControl(websocket.CloseMessage, c.closeMsg, time.Now().Add(closeGrace))
				// The read loop ends when the client answers; stop waiting after closeGrace.
				time.AfterFunc(closeGrace, func() { _ = c.ws.Close() })
			}
			return
		}
	}
}

// readLoop feeds text messages to the consumer until the connection closes, and
// returns the close code.
func (c *Conn) readLoop(consumer Consumer) {
	var buf bytes.Buffer // reused for each message
	pongWait := c.srv.cfg.PingPeriod * 10 / 9
	c.ws.SetReadLimit(c.srv.cfg.ReadLimit)
	_ = c.ws.SetReadDeadline(time.Now().Add(pongWait))
	c.ws.SetPongHandler(func(string) error { return c.ws.SetReadDeadline(time.Now().Add(pongWait)) })
	for {
		mt, r, err := c.ws.NextReader()
		if err != nil {
			c.readFailed(err)
			return
		}
		if c.isClosing() {
			continue // drain until the client answers our close
		}
		_ = c.ws.SetReadDeadline(time.Now().Add(pongWait))
		if mt != websocket.TextMessage {
			c.Close(CloseUnsupported, "binary frames are not supported: send text")
			continue
		}
		buf.Reset()
		if _, err := buf.ReadFrom(r); err != nil {
			c.readFailed(err)
			return
		}
		data := buf.Bytes()
		if buf.Cap() > maxKeptReadBuffer {
			buf = bytes.Buffer{} // do not keep a large message's buffer for the socket's life
		}
		if !utf8.Valid(data) {
			c.Close(CloseInvalidPayload, "text message is not valid UTF-8")
			continue
		}
		c.srv.metrics.received.Inc()
		if err := consumer.Receive(c.ctx, c, string(data)); err != nil && !errors.Is(err, ErrClosed) {
			c.srv.log.ErrorContext(c.ctx, "consumer failed", "session_id", c.session.ID, "err", err)
			c.Close(CloseInternal, "internal error")
		}
	}
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
		_, _ = io.Copy(io.Discard, nc)
	case errors.As(err, &ce):
		c.closed(ce.Code)
	default:
		c.closed(websocket.CloseAbnormalClosure)
	}
	_ = c.ws.Close()
}
