package edge

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gorilla/websocket"

	"github.com/gatehouse/gatehouse/edgesvc/internal/auth"
	"github.com/gatehouse/gatehouse/edgesvc/internal/registry"
	"github.com/gatehouse/gatehouse/edgesvc/internal/socket"
)

// Close codes the edge sends (the README's close-code table says what a client
// should do on each).
const (
	CloseNormal         = websocket.CloseNormalClosure           // 1000
	CloseGoingAway      = websocket.CloseGoingAway               // 1001: the edge is shutting down; reconnect
	CloseUnsupported    = websocket.CloseUnsupportedData         // 1003: a message of a type the route does not take
	CloseInvalidPayload = websocket.CloseInvalidFramePayloadData // 1007: text that is not valid UTF-8
	CloseTooBig         = websocket.CloseMessageTooBig           // 1009: a message over the read limit
	CloseInternal       = websocket.CloseInternalServerErr       // 1011: a consumer failed; reconnect with backoff
	CloseTryAgainLater  = websocket.CloseTryAgainLater           // 1013: the client does not keep up; reconnect with backoff
	CloseSessionEnded   = 4401                                   // the session ended; sign in again
)

// ErrClosed is returned by Send and Reply on a connection that is closing or closed.
var ErrClosed = socket.ErrClosed

// User is the signed-in user a connection belongs to: ID and Username, as authsvc
// knows them.
type User = auth.User

// Session is the session a connection was opened with: ID and ExpiresAt (the
// connection closes with 4401 "expired" then).
type Session = auth.Session

// Message is one message from the client.
type Message struct {
	// Binary is true for a binary message (its payload in Data), false for a text
	// message (in Text).
	Binary bool
	// Text is a text message; the edge has checked that it is valid UTF-8.
	Text string
	// Data is a binary message's payload; it belongs to the consumer.
	Data []byte
}

// Conn is one WebSocket connection, as its consumer sees it. Its methods are safe for
// concurrent use, from any goroutine, during and after the consumer's calls.
type Conn struct {
	srv      *Server
	sock     *socket.Conn
	consumer Consumer
	id       string
	user     User
	session  Session
	token    string // kept to re-validate the session after the event feed was interrupted

	// Set when the connection is registered, before Connect; released when it ends.
	entry  *registry.Entry[*Conn]
	expiry *time.Timer
}

// ID returns the connection's id: unique across every edge and restart
// ("<node id>.<counter>", see Config.NodeID). ToConnection(id) reaches it.
func (c *Conn) ID() string { return c.id }

// User returns the connection's user.
func (c *Conn) User() User { return c.user }

// Session returns the session the connection was opened with.
func (c *Conn) Session() Session { return c.session }

// Path returns the path of the handshake request, such as /ws/myapp/1/.
func (c *Conn) Path() string { return c.entry.Path }

// Join puts the connection in group, until it leaves or closes (joining again does
// nothing). Sends to ToGroup(group) reach it from then on. It fails with
// ErrInvalidGroup for a name that is not 1–100 characters of ASCII letters, digits,
// '-', '_' and '.', and with ErrTooManyGroups past 100 groups. Join works in Connect
// too: the connection is a member before its upgrade.
func (c *Conn) Join(group string) error { return c.srv.conns.Join(c.entry, group) }

// Leave takes the connection out of group; it does nothing if it is not a member.
func (c *Conn) Leave(group string) { c.srv.conns.Leave(c.entry, group) }

// Groups returns the groups the connection belongs to, sorted.
func (c *Conn) Groups() []string { return c.srv.conns.Groups(c.entry) }

// Context returns a context that ends when the connection starts closing (whoever
// closes it). Work a consumer starts for a connection should end with it.
func (c *Conn) Context() context.Context { return c.sock.Context() }

// Send queues text to be sent to the client, as one text message, and returns at once.
// Use it for messages that do not answer the client's (pushes). It never blocks: when
// the connection's send queue is full the client is not keeping up, so the connection
// is closed with 1013 and Send returns ErrClosed. It returns ErrClosed on a
// connection that is closing, and ErrPayloadTooLarge (sending nothing) for text over
// Config.ReadLimit, the most a client is allowed to send, plus WrapRoom. Messages are sent in the
// order Send and Reply were called. In Connect it queues the message to go first,
// right after the upgrade: pushes from elsewhere reach a connection only once Connect
// has accepted it.
func (c *Conn) Send(text string) error {
	if err := c.fits(len(text)); err != nil {
		return err
	}
	return c.sock.Send(text)
}

// WrapRoom is how much larger than Config.ReadLimit a consumer's message to its client
// may be: room for what it wraps around a largest client message (the echo's
// "You said: ", a JSON envelope).
const WrapRoom = 4 << 10

// fits returns ErrPayloadTooLarge for a message of n bytes over the read limit and
// WrapRoom.
func (c *Conn) fits(n int) error {
	if int64(n) > c.srv.cfg.ReadLimit+WrapRoom {
		return ErrPayloadTooLarge
	}
	return nil
}

// Reply is Send for an answer to the client's message: when the send queue is full it
// waits up to half of Config.WriteWait for room, so a client that sends fast but also
// reads is slowed down (its messages are read no faster than it takes the answers)
// rather than dropped. A client that stops reading for that long is closed with 1013
// and Reply returns ErrClosed. Call it from Receive: when nothing is queued, the
// answer is written from the calling goroutine, sparing a hand-off.
//
// It fails as Send does, ErrPayloadTooLarge included.
func (c *Conn) Reply(text string) error {
	if err := c.fits(len(text)); err != nil {
		return err
	}
	return c.sock.Reply(text)
}

// SendBinary is Send for one binary message; data is copied.
func (c *Conn) SendBinary(data []byte) error {
	if err := c.fits(len(data)); err != nil {
		return err
	}
	return c.sock.Push(true, string(data))
}

// ReplyBinary is Reply for one binary message; data is copied.
func (c *Conn) ReplyBinary(data []byte) error {
	if err := c.fits(len(data)); err != nil {
		return err
	}
	return c.sock.ReplyBinary(string(data))
}

// Close closes the connection with code and reason (cut to 123 bytes): the client
// receives what was sent before, then the close frame, if it takes them within a
// second (else it is dropped); once Close has returned, Send and Reply return
// ErrClosed. code must be one a server may send (1000–1003, 1007–1009, 1011–1014,
// 3000–4999); any other is sent as 1011. The application's own codes are 4000–4999
// but 4401, which only the edge sends when a session ends ("sign in again": a
// consumer's 4401 is sent as 1011, and logged). Only the first Close has an effect; the
// consumer's Disconnect follows once the connection has ended. Closing in Connect
// upgrades the connection and closes it at once, so that a browser sees the code and
// reason; to refuse the handshake itself, return an error from Connect.
func (c *Conn) Close(code int, reason string) {
	if code == CloseSessionEnded {
		c.srv.log.Warn("a consumer closed a connection with 4401, which only the session authority sends (the client would take its session for ended): sent as 1011", "path", c.entry.Path, "connection_id", c.id)
		code = CloseInternal
	}
	if !(1000 <= code && code <= 1003 || 1007 <= code && code <= 1014 && code != 1010 || 3000 <= code && code <= 4999) {
		code = CloseInternal
	}
	c.sock.Close(code, reason)
}

// open runs the life of a connection the handshake authorised: registration (it may
// join groups from now on), the consumer's Connect, acceptance (pushes reach it from
// then on; what is sent to it waits for the upgrade), the upgrade, then the socket on a
// goroutine of its own (net/http then drops the request, its buffers and the handler
// goroutine's grown stack, about 8 KiB a socket). feed is the session feed's
// generation when the handshake was authorised.
func (s *Server) open(w http.ResponseWriter, r *http.Request, c *Conn, newConsumer func() Consumer, feed uint64) {
	var addr string // worked out only when sockets per address are counted: the handshake is hot
	if s.cfg.MaxSocketsPerAddress > 0 {
		addr = s.face.ClientAddr(r)
	}
	e, err := s.conns.Add(c, registry.Info{
		ID: c.id, User: c.user.ID, Username: c.user.Username, Session: c.session.ID,
		Path: strings.Clone(r.URL.Path), Sock: c.sock, // the path, not a slice of the request line
		Addr: addr,
	})
	if err != nil {
		c.sock.Discard()
		var ended *registry.EndedError
		var limit *registry.LimitError
		switch {
		case errors.As(err, &ended): // the session ended since it was authorised
			s.refuse(w, "unauthenticated", http.StatusUnauthorized, authv1.ErrorReason_ERROR_REASON_SESSION_REVOKED.Reason(), "session not valid: session ended: "+ended.Reason)
		case errors.As(err, &limit):
			s.refuse(w, "too_many_sockets", http.StatusTooManyRequests, "TOO_MANY_SOCKETS", err.Error()+": close another first")
		default:
			s.refuse(w, "shutting_down", http.StatusServiceUnavailable, "SHUTTING_DOWN", "the edge is shutting down: connect again")
		}
		return
	}
	c.entry = e
	c.sock.Share(s.shares.acquire(c.user.ID)) // released with the registration
	s.auth.Registered(s.ctx, feed, auth.Held{Token: c.token, SessionID: c.session.ID})
	c.expiry = time.AfterFunc(time.Until(c.session.ExpiresAt), func() { c.sock.CloseNow(CloseSessionEnded, "expired") })
	running := false
	defer func() { // a consumer that panics must not leave the connection registered
		if !running {
			if p := recover(); p != nil {
				c.sock.Discard()
				c.release()
				panic(p)
			}
		}
	}()
	c.consumer = newConsumer()
	// A Connect that closed the connection and then met ErrClosed (sending after its
	// own Close) has accepted it: the client sees the close.
	if err := c.consumer.Connect(r.Context(), c, r); err != nil && !errors.Is(err, ErrClosed) {
		c.sock.Discard()
		c.release()
		s.refuseConnect(w, r, err)
		return
	}
	e.Accept() // pushes and listings include it from now on
	if err := c.sock.Upgrade(w, r); err != nil {
		s.metrics.Handshakes.WithLabelValues("bad_request").Inc() // Upgrade has answered 4xx
		c.sock.Discard()
		(*handler)(c).Ended(websocket.CloseAbnormalClosure)
		return
	}
	s.metrics.Handshakes.WithLabelValues("ok").Inc()
	running = true
	go c.sock.Run((*handler)(c))
}

// release undoes the registration: out of the registry and every group (so Shutdown,
// which waits for that, covers Disconnect), the expiry timer stopped.
func (c *Conn) release() {
	c.expiry.Stop()
	c.srv.conns.Remove(c.entry)
	c.srv.shares.release(c.user.ID)
}

// handler is a Conn as its socket sees it.
type handler Conn

// Message hands a message to the consumer; a consumer error closes with 1011.
func (h *handler) Message(binary bool, data []byte) {
	c := (*Conn)(h)
	m := Message{Binary: binary}
	if binary {
		m.Data = bytes.Clone(data)
	} else {
		m.Text = string(data)
	}
	ctx := c.Context()
	if err := c.consumer.Receive(ctx, c, m); err != nil && !errors.Is(err, ErrClosed) {
		c.srv.log.ErrorContext(ctx, "consumer failed", "session_id", c.session.ID, "err", err)
		c.sock.Close(CloseInternal, "internal error")
	}
}

// Ended tells the consumer the connection has ended, then releases it.
func (h *handler) Ended(code int) {
	c := (*Conn)(h)
	c.consumer.Disconnect(context.WithoutCancel(c.srv.ctx), c, code) // not c.Context(): most sockets never made one
	c.release()
}
