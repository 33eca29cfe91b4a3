// Package socket is the edge's WebSocket runtime: it upgrades a connection, writes
// frames under one writer rule, reads messages, keeps the connection alive with pings,
// and parks quiet sockets (their goroutines given up while epoll watches them). It
// knows nothing of users, sessions or consumers: a Handler gets what arrives.
package socket

import (
	"bufio"
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse/gatehouse/edgesvc/internal/epoll"
)

// Config holds the runtime's settings. Every field must be set (the edge's Config
// gives the defaults).
type Config struct {
	// ReadLimit is the largest message a client may send, in bytes; a larger one
	// closes the connection with 1009.
	ReadLimit int64
	// SendQueue is how many outgoing messages may wait for a slow client.
	SendQueue int
	// SendBuffer is how many bytes of outgoing messages may wait (one message is
	// always taken when none waits).
	SendBuffer int64
	// PingPeriod is how often each client is pinged; a client that has sent nothing
	// (no pong, no message) by the next ping is dropped.
	PingPeriod time.Duration
	// WriteWait bounds each write to a client.
	WriteWait time.Duration
	// ParkAfter is how long a socket may be quiet before its reading goroutine is
	// given up.
	ParkAfter time.Duration
	// CheckOrigin reports whether a browser request's Origin may open a socket.
	CheckOrigin func(*http.Request) bool
	// ReadTimeout bounds how long a message may take to arrive once it has begun; past
	// it the connection is closed with 1008. 0: no bound.
	ReadTimeout time.Duration
	// MessagesPerSecond and MessageBurst bound the messages read from one connection
	// (a token bucket): past them reading pauses until the rate allows the next, so
	// nothing is dropped and the client feels TCP's backpressure. 0: no bound.
	MessagesPerSecond float64
	MessageBurst      int
}

// Metrics are what the runtime counts; the edge defines and registers them.
type Metrics struct {
	Open     prometheus.Gauge       // connections upgraded and not yet ended
	Received prometheus.Counter     // messages read from clients
	Sent     prometheus.Counter     // data messages written to clients
	Closes   *prometheus.CounterVec // labels: code, by ("edge" or "client")
	// SlowCloses counts 1013 closes by reason: push_overflow (a push did not fit),
	// reply_timeout (a reply waited half of WriteWait for room), write_stalled (the
	// socket took nothing for half of WriteWait while a write waited). A connection
	// is counted once, under what closed it.
	SlowCloses *prometheus.CounterVec
	// Queued observes a connection's queued bytes after each push it takes.
	Queued prometheus.Observer
	// BudgetCloses counts 1013 closes of connections that would take a shared budget
	// past its limit, by direction ("read": bytes of messages arriving; "send": bytes
	// queued) and scope ("user", "edge").
	BudgetCloses *prometheus.CounterVec
	// ReadTimeouts counts connections closed 1008 for a message not completed within
	// ReadTimeout.
	ReadTimeouts prometheus.Counter
	// ReadPaused counts the seconds reading was paused by a message rate.
	ReadPaused prometheus.Counter
}

// Handler receives what arrives on one connection. Its methods are called from one
// goroutine at a time, in order.
type Handler interface {
	// Message is one complete message: binary, or text that is valid UTF-8. data is
	// the connection's read buffer, valid only until Message returns. While Message
	// runs, nothing more is read from the client.
	Message(binary bool, data []byte)
	// Ended is called once, when the connection has ended, with the close code sent
	// or received (1006 when the network failed).
	Ended(code int)
}

// Runtime holds what every connection shares: settings, counters and the poller.
type Runtime struct {
	cfg      Config
	metrics  Metrics
	poller   *epoll.Poller // nil where sockets cannot be parked
	upgrader websocket.Upgrader
	ctx      context.Context // parent of every connection's context
}

// NewRuntime returns a Runtime whose connections and poller live until ctx ends.
// Where sockets cannot be parked (not Linux), it logs so and every socket keeps its
// reading goroutine.
func NewRuntime(ctx context.Context, cfg Config, m Metrics, log *slog.Logger) *Runtime {
	rt := &Runtime{cfg: cfg, metrics: m, ctx: ctx}
	if p, err := epoll.New(ctx); err == nil {
		rt.poller = p
	} else {
		log.Warn("idle sockets cannot be parked; each keeps a goroutine", "err", err)
	}
	rt.upgrader = websocket.Upgrader{
		HandshakeTimeout: 10 * time.Second,
		CheckOrigin:      cfg.CheckOrigin,
		// Pooled write buffers keep an idle socket cheap; the read buffer comes from
		// hijacker (readBufferSize), which needs ReadBufferSize 0.
		WriteBufferPool: &sync.Pool{},
	}
	return rt
}

// NewConn returns a connection that is not upgraded yet. Messages queued and a close
// asked for before Upgrade and Run are written once Run starts, in order.
func (rt *Runtime) NewConn() *Conn {
	c := &Conn{rt: rt, done: make(chan struct{})}
	c.w.Hold() // until Run: nothing is written before the upgrade
	return c
}

// readBufferSize is each socket's read buffer: messages larger than this are read in
// more calls, and an idle socket stays small.
const readBufferSize = 512

// hijacker hands gorilla a read buffer of our own (readBufferSize) when it hijacks
// the connection, so that the runtime can see whether anything is buffered before it
// parks a quiet socket.
type hijacker struct {
	http.ResponseWriter
	br *bufio.Reader
}

func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil || brw.Reader.Buffered() > 0 {
		return nc, brw, err // gorilla refuses data sent before the handshake completed
	}
	h.br = bufio.NewReaderSize(nc, readBufferSize)
	return nc, bufio.NewReadWriter(h.br, brw.Writer), nil
}

// Upgrade completes the WebSocket handshake on w. On failure gorilla has answered
// with a 4xx status; the connection is then of no further use (call Discard).
func (c *Conn) Upgrade(w http.ResponseWriter, r *http.Request) error {
	hj := &hijacker{ResponseWriter: w}
	ws, err := c.rt.upgrader.Upgrade(hj, r, nil)
	if err != nil {
		return err
	}
	c.ws, c.br = ws, hj.br
	return nil
}
