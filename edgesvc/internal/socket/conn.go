package socket

import (
	"bufio"
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/gatehouse/gatehouse/edgesvc/internal/budget"
	"github.com/gatehouse/gatehouse/edgesvc/internal/sendq"
)

// ErrClosed is returned by Send and Reply on a connection that is closing or closed.
var ErrClosed = errors.New("connection closed")

// Conn is one WebSocket connection. Its exported methods are safe for concurrent use.
type Conn struct {
	rt      *Runtime
	ws      *websocket.Conn             // set by Upgrade
	h       Handler                     // set by Run
	running atomic.Bool                 // Run has begun
	soon    atomic.Bool                 // CloseSoon: a write that waits gets closeGrace, not WriteWait
	done    chan struct{}               // closed when the connection starts closing
	ctx     atomic.Pointer[connContext] // made by the first Context call
	w       sendq.Writer                // the writer rule and the queue

	closeOnce  sync.Once
	code       int    // the close code sent or received; set once under closeOnce
	closeMsg   []byte // the close frame to send, when the edge closes
	dropQueued bool   // the close frame goes without what is queued
	echo       bool   // the close frame answers the client's: the connection ends after it
	pinger     *time.Timer
	pingSent   int64        // unix ns of the last ping; only the pinger touches it
	lastHeard  atomic.Int64 // unix ns of the last pong or message from the client

	// Reading. One goroutine at a time runs readLoop; a socket quiet for ParkAfter
	// with nothing buffered is parked (readLoop returns) and the poller starts a new
	// readLoop when data arrives, so an idle socket has no goroutine at all.
	br        *bufio.Reader   // gorilla's read buffer, ours so its fill level can be seen
	sock      syscall.RawConn // the TCP socket; nil under TLS (no parking, no direct writes)
	parkable  bool            // readLoop may park the socket
	pollID    uint64          // the poller's key for c; 0 before the first park
	pollAdded bool            // registered with the poller's epoll
	parked    atomic.Bool
	linger    time.Duration // the next quiet wait instead of ParkAfter, if not 0; < 0: park at once
	msg       []byte        // the message being read; its storage kept across messages up to maxKeptReadBuffer
	finished  sync.Once

	// What the connection shares with others (Share), and its own message rate.
	readShare budget.Pair
	rates     []*rate.Limiter // this connection's (if bounded), its user's (if bounded)
}

// Shares are the bounds a connection shares with others: the budgets of bytes of
// messages arriving (Read) and queued to send (Send), its user's and its edge's, and
// its user's message rate. A nil budget or rate bounds nothing.
type Shares struct {
	Read, Send budget.Pair
	UserRate   *rate.Limiter
}

// Share sets what the connection shares with others; call it before Run.
func (c *Conn) Share(s Shares) {
	c.readShare = s.Read
	c.w.Share(s.Send)
	if s.UserRate != nil {
		c.rates = append(c.rates, s.UserRate)
	}
}

// Context returns a context that ends when the connection starts closing.
// It is made on first use: most sockets idle, and a context each (with its place among
// the runtime context's children) would be most of an idle socket's memory.
func (c *Conn) Context() context.Context {
	if p := c.ctx.Load(); p != nil {
		return p.ctx
	}
	ctx, cancel := context.WithCancel(c.rt.ctx)
	if !c.ctx.CompareAndSwap(nil, &connContext{ctx, cancel}) {
		cancel()
		return c.ctx.Load().ctx
	}
	if c.isClosing() {
		cancel() // the close may have looked for a context before this one was stored
	}
	return ctx
}

type connContext struct {
	ctx    context.Context
	cancel context.CancelFunc
}

// cancel ends the connection's context, if one was made; call it after closing done.
func (c *Conn) cancel() {
	if p := c.ctx.Load(); p != nil {
		p.cancel()
	}
}

// closeGrace is how long a close frame may take to go out, and how long the client
// then has to answer it.
const closeGrace = time.Second

// newSocketLinger is how long a new socket keeps its reading goroutine if quiet.
const newSocketLinger = 100 * time.Millisecond

// Run serves an upgraded connection on the calling goroutine: it starts writing what
// was queued, then reads, calling h for each message, until the connection ends
// (h.Ended is then called) or it is parked (another goroutine reads it later).
func (c *Conn) Run(h Handler) {
	rt := c.rt
	c.h = h
	c.running.Store(true)
	rt.metrics.Open.Inc()
	c.lastHeard.Store(time.Now().UnixNano())
	c.ws.SetReadLimit(rt.cfg.ReadLimit)
	c.ws.SetPongHandler(func(string) error { c.lastHeard.Store(time.Now().UnixNano()); return nil })
	// Pongs and the answer to a close go through the writer turn like every frame
	// (gorilla's own handlers would write them directly).
	c.ws.SetPingHandler(func(data string) error {
		c.lastHeard.Store(time.Now().UnixNano()) // a client's ping is activity, as its pong is
		c.pong([]byte(data))
		return nil
	})
	c.ws.SetCloseHandler(c.closedByClient)
	if sc, ok := c.ws.NetConn().(syscall.Conn); ok {
		c.sock, _ = sc.SyscallConn()
		c.parkable = c.sock != nil && rt.poller != nil
	}
	c.pinger = time.AfterFunc(rt.cfg.PingPeriod, c.ping)
	if rt.cfg.MessagesPerSecond > 0 {
		c.rates = append([]*rate.Limiter{rate.NewLimiter(rate.Limit(rt.cfg.MessagesPerSecond), max(rt.cfg.MessageBurst, 1))}, c.rates...)
	}
	if c.w.Release(c.done) {
		c.Flush() // what was queued before Run
	}
	// A new socket lingers briefly: thousands connecting at once would otherwise each
	// keep a stack for ParkAfter, and a socket closed at once is never parked.
	c.linger = min(rt.cfg.ParkAfter, newSocketLinger)
	c.readLoop()
}

// Discard ends a connection that will never run (its upgrade failed or was not
// attempted): its context ends; nothing is counted.
func (c *Conn) Discard() {
	c.closeOnce.Do(func() {
		c.code = websocket.CloseAbnormalClosure
		close(c.done)
		c.cancel()
	})
	c.w.Settle() // what Connect queued never goes out
}

// Close closes the connection with code and reason (cut to 123 bytes). The writer
// sends what was queued and then the close frame, allowing closeGrace for both, then
// gives the client closeGrace to answer before dropping the connection. Only the
// first Close, CloseNow (or end of the connection) has an effect.
func (c *Conn) Close(code int, reason string) { c.close(code, reason, false) }

// CloseNow is Close that drops what is still queued: for a client that does not keep
// up (1013), or a session that has ended (4401), whose queued messages must not go out.
func (c *Conn) CloseNow(code int, reason string) { c.close(code, reason, true) }

func (c *Conn) close(code int, reason string, drop bool) (first bool) {
	c.closeOnce.Do(func() {
		first = true
		c.code = code
		c.closeMsg = websocket.FormatCloseMessage(code, truncateUTF8(reason, 123))
		c.dropQueued = drop
		close(c.done)
		c.cancel()
		c.rt.metrics.Closes.WithLabelValues(CodeLabel(code), "edge").Inc()
	})
	c.startWriter() // it sends the close frame
	return first
}

// closeBudget closes a connection that would take a shared budget (of direction,
// "read" or "send") past its limit with 1013, dropping what is queued, and counts it
// if this is what closed it.
func (c *Conn) closeBudget(direction string, scope budget.Scope) {
	text := "too much of this user's data in flight: try again later"
	if scope == budget.Edge {
		text = "the server holds too much data in flight: try again later"
	}
	if c.close(websocket.CloseTryAgainLater, text, true) {
		c.rt.metrics.BudgetCloses.WithLabelValues(direction, scope.String()).Inc()
	}
}

// closeSlow closes a client that does not keep up with 1013, dropping what is queued,
// and counts it under reason if this is what closed it.
func (c *Conn) closeSlow(reason, text string) {
	if c.close(websocket.CloseTryAgainLater, text, true) {
		c.rt.metrics.SlowCloses.WithLabelValues(reason).Inc()
	}
}

// CloseSoon is Close for a server going away: a write stuck on a client that does
// not read gets closeGrace instead of WriteWait before the close frame goes out.
func (c *Conn) CloseSoon(code int, reason string) {
	c.soon.Store(true)
	if c.running.Load() { // ws is set before Run
		_ = c.ws.NetConn().SetWriteDeadline(time.Now().Add(closeGrace))
	}
	c.Close(code, reason)
}

// CodeLabel is the metrics label of a close code: the code, except that the
// applications' own codes (3000–4999, 4401 apart) share one label, "3000-4999", so a
// consumer cannot grow the series without bound.
func CodeLabel(code int) string {
	if code >= 3000 && code != 4401 {
		return "3000-4999"
	}
	return strconv.Itoa(code)
}

// closedByClient is gorilla's close handler: the client sent a close frame (its code
// already checked). The writer answers it, without what was queued, and then ends the
// connection.
func (c *Conn) closedByClient(code int, _ string) error {
	c.closeOnce.Do(func() {
		c.code = code
		c.closeMsg = []byte{}
		if code != websocket.CloseNoStatusReceived {
			c.closeMsg = websocket.FormatCloseMessage(code, "")
		}
		c.dropQueued, c.echo = true, true
		close(c.done)
		c.cancel()
		c.rt.metrics.Closes.WithLabelValues(CodeLabel(code), "client").Inc()
	})
	c.startWriter()
	return nil
}

// closed records that the peer or the network ended the connection without a close
// from us.
func (c *Conn) closed(code int) {
	c.closeOnce.Do(func() {
		c.code = code
		close(c.done)
		c.cancel()
		c.rt.metrics.Closes.WithLabelValues(CodeLabel(code), "client").Inc()
	})
}

func (c *Conn) isClosing() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// ping drops the connection if the client has not answered the previous ping (nor
// sent anything since), else sends a ping (through the writer turn) and re-arms its
// timer.
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
	c.w.Ping()
	if c.w.Take() {
		c.Flush()
	}
	c.pinger.Reset(c.rt.cfg.PingPeriod)
}

// pong answers a ping with payload, through the writer turn.
func (c *Conn) pong(payload []byte) {
	c.w.Pong(payload)
	if c.w.Take() {
		c.Flush()
	}
}

// closeNet closes the network connection. A parked socket has no reader to notice,
// so one is started: it reads the error and finishes the connection.
func (c *Conn) closeNet() {
	_ = c.ws.Close()
	c.wake()
}

// finish runs once, when the connection has ended: it releases what Run set up and
// tells the handler.
func (c *Conn) finish() {
	c.finished.Do(func() {
		c.rt.poller.Forget(c.pollID)
		c.pinger.Stop()
		c.w.Settle() // what is still queued never goes out
		c.h.Ended(c.code)
		c.rt.metrics.Open.Dec()
	})
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
