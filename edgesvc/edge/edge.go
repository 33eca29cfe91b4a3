// Package edge runs gatehouse's WebSocket edge with your consumers: a Server serves
// the sign-in page and WebSocket routes, authorises every handshake with authsvc
// before the upgrade, runs a Consumer for each connection, and closes the sockets of
// sessions that end (logout, revoke, expiry…) with 4401 within milliseconds.
//
// The edgesvc command is this package with the echo consumer on /ws/myapp/{user_id}/;
// a Go program can import it to serve its own consumers on its own routes (see
// ExampleServer_Handle).
package edge

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	"github.com/gatehouse/gatehouse/edgesvc/internal/auth"
	"github.com/gatehouse/gatehouse/edgesvc/internal/layer"
	"github.com/gatehouse/gatehouse/edgesvc/internal/local"
	"github.com/gatehouse/gatehouse/edgesvc/internal/metrics"
	"github.com/gatehouse/gatehouse/edgesvc/internal/natslayer"
	"github.com/gatehouse/gatehouse/edgesvc/internal/public"
	"github.com/gatehouse/gatehouse/edgesvc/internal/registry"
	"github.com/gatehouse/gatehouse/edgesvc/internal/site"
	"github.com/gatehouse/gatehouse/edgesvc/internal/socket"
)

// Config holds the edge's settings. The zero Config is usable: every zero field
// takes the default named here.
type Config struct {
	// AllowedOrigins lists origins ("https://app.example.com") whose pages may open
	// sockets and post the sign-in form, besides the edge's own: PublicURL's scheme
	// and host when set, else the request's host.
	AllowedOrigins []string
	// PublicURL is the URL people use ("https://chat.example.com"), when the edge is
	// behind a proxy. An https one makes the session cookie __Host-sessionid (Secure)
	// even where the proxy terminates TLS, and the Origin check compare scheme and
	// host with it. Nil: the edge's own scheme and the request's host.
	PublicURL *url.URL
	// TrustedProxies are the peers whose Forwarded / X-Forwarded-For headers name
	// the client (its address counts for sign-in limits and sockets per address).
	// Nil: the TCP peer is the client.
	TrustedProxies []netip.Prefix
	// ReadLimit is the largest message a client may send, in bytes; a larger one
	// closes the connection with 1009. Default 1 MiB.
	ReadLimit int64
	// SendQueue is how many outgoing messages may wait for a slow client before its
	// connection is closed with 1013. Default 64.
	SendQueue int
	// SendBuffer bounds the bytes of outgoing messages waiting for a client: a push
	// that does not fit closes the connection with 1013; a reply that does not fit
	// waits (reading from that client paused) up to half of WriteWait, then closes it
	// with 1013. One message always fits an empty buffer. Default 4 MiB; at least
	// twice ReadLimit (a smaller value is raised to that).
	SendBuffer int64
	// SendBufferPerUser bounds the bytes waiting to be sent to all of one user's
	// sockets on this edge, and SendBufferTotal to all of its sockets: a push or
	// reply that would pass one closes its socket with 1013. Defaults 64 MiB and
	// 2 GiB; negative: no bound. SendBufferPerUser is raised to SendBuffer if smaller.
	SendBufferPerUser, SendBufferTotal int64
	// ReadBufferPerUser bounds the bytes of client messages still arriving (and being
	// handled) on all of one user's sockets on this edge, and ReadBuffer on all of its
	// sockets: a socket whose message would pass one is closed with 1013. Defaults
	// 16 MiB and 1 GiB; negative: no bound. ReadBufferPerUser is raised to twice
	// ReadLimit if smaller.
	ReadBufferPerUser, ReadBuffer int64
	// ReadTimeout bounds how long a client message may take to arrive once it has
	// begun; past it the socket is closed with 1008. Default 30 s; negative: none.
	ReadTimeout time.Duration
	// MaxMessagesPerSecond and MessageBurst bound the messages read from one socket
	// (a token bucket), and MaxMessagesPerSecondPerUser from all of a user's sockets
	// here: past a rate, reading from the socket pauses until the rate allows the
	// next message, so nothing is dropped. Defaults 100, 100 and 500 (above what
	// people typing, pointing or playing send); negative: no bound.
	MaxMessagesPerSecond, MessageBurst, MaxMessagesPerSecondPerUser int
	// AuthTimeout bounds each call to authsvc during a handshake; past it the answer
	// is 503. Default 2 s.
	AuthTimeout time.Duration
	// PingPeriod is how often the edge pings each client; a client that has sent
	// nothing (no pong, no message) by the next ping is dropped. Default 30 s.
	PingPeriod time.Duration
	// WriteWait bounds each write to a client. Default 10 s.
	WriteWait time.Duration
	// ParkAfter is how long a socket may be quiet before its reading goroutine is
	// given up (epoll then watches it until data arrives). Default 2 s.
	ParkAfter time.Duration
	// CacheSize is how many sessions' validations the edge remembers, so that a
	// session it saw recently connects without a call to authsvc (only while authsvc
	// grants a lease; see the README). Default 100,000.
	CacheSize int
	// DisableCache turns the session cache off: every handshake asks authsvc.
	DisableCache bool
	// NodeID names this edge in connection ids ("<node id>.<counter>"); it must be
	// unique among the edges that share a layer. Letters, digits, '-' and '_', at most
	// 64 (others become '-'). Default: the host name and a random suffix, new at
	// every start.
	NodeID string
	// MaxSocketsPerUser caps one user's sockets on this edge; past it a handshake is
	// refused with 429 TOO_MANY_SOCKETS before the upgrade. Default 1,000; negative:
	// no limit.
	MaxSocketsPerUser int
	// MaxSocketsPerAddress caps the sockets from one client address (the TCP peer's),
	// and MaxSockets all of this edge's sockets, the same way. Default (0): no limit.
	MaxSocketsPerAddress, MaxSockets int
	// NATSURL joins this edge to the others that use the same NATS server (or
	// cluster; comma-separated URLs, credentials may be in them) and NATSPrefix:
	// sends, group changes, kicks, listings and presence then reach the connections
	// of every edge. Empty: this edge alone, with nothing else to run.
	NATSURL string
	// NATSPrefix starts every NATS subject the edges use; edges that share one are
	// one system. Dot-separated tokens of letters, digits, '-' and '_'. Default
	// "gatehouse".
	NATSPrefix string
	// NATSOptions are more nats.go options (nats.RootCAs, nats.UserCredentials…).
	NATSOptions []nats.Option
	// LayerKey seals every message this edge publishes on NATS and opens those of the
	// other edges, which must have it too (at least MinLayerKeyBytes; required with
	// NATSURL). LayerKeyFallbacks are earlier keys, accepted on receive during a
	// rotation and never used to send.
	LayerKey          []byte
	LayerKeyFallbacks [][]byte
}

// MinLayerKeyBytes is the shortest Config.LayerKey (and fallback) accepted.
const MinLayerKeyBytes = natslayer.MinKeyBytes

// ValidNodeID reports whether id can be used as Config.NodeID as it is.
func ValidNodeID(id string) bool { return registry.ValidNodeID(id) }

// ValidNATSPrefix reports whether p can be used as Config.NATSPrefix.
func ValidNATSPrefix(p string) bool { return natslayer.ValidPrefix(p) }

func (c Config) withDefaults() Config {
	if c.ReadLimit <= 0 {
		c.ReadLimit = 1 << 20
	}
	if c.SendQueue <= 0 {
		c.SendQueue = 64
	}
	if c.SendBuffer <= 0 {
		c.SendBuffer = 4 << 20
	}
	c.SendBuffer = max(c.SendBuffer, 2*c.ReadLimit)
	c.SendBufferPerUser = orDefault(c.SendBufferPerUser, 64<<20)
	c.SendBufferTotal = orDefault(c.SendBufferTotal, 2<<30)
	c.ReadBufferPerUser = orDefault(c.ReadBufferPerUser, 16<<20)
	if c.ReadBufferPerUser > 0 { // one socket's largest message fits, twice
		c.ReadBufferPerUser = max(c.ReadBufferPerUser, 2*(c.ReadLimit+1))
	}
	if c.SendBufferPerUser > 0 { // one socket's own buffer fits
		c.SendBufferPerUser = max(c.SendBufferPerUser, c.SendBuffer)
	}
	c.ReadBuffer = orDefault(c.ReadBuffer, 1<<30)
	c.ReadTimeout = orDefault(c.ReadTimeout, 30*time.Second)
	c.MaxMessagesPerSecond = orDefault(c.MaxMessagesPerSecond, 100)
	c.MessageBurst = orDefault(c.MessageBurst, 100)
	c.MaxMessagesPerSecondPerUser = orDefault(c.MaxMessagesPerSecondPerUser, 500)
	if c.AuthTimeout <= 0 {
		c.AuthTimeout = 2 * time.Second
	}
	if c.PingPeriod <= 0 {
		c.PingPeriod = 30 * time.Second
	}
	if c.WriteWait <= 0 {
		c.WriteWait = 10 * time.Second
	}
	if c.ParkAfter <= 0 {
		c.ParkAfter = 2 * time.Second
	}
	if c.CacheSize <= 0 {
		c.CacheSize = 100_000
	}
	if c.DisableCache {
		c.CacheSize = 0
	}
	c.NodeID = registry.NodeID(c.NodeID)
	if c.MaxSocketsPerUser == 0 {
		c.MaxSocketsPerUser = 1000
	}
	origins := make([]string, len(c.AllowedOrigins))
	for i, o := range c.AllowedOrigins {
		origins[i] = strings.ToLower(strings.TrimRight(strings.TrimSpace(o), "/"))
	}
	c.AllowedOrigins = origins
	return c
}

// orDefault is v, def for 0, and 0 (no bound) for a negative v.
func orDefault[T int | int64 | time.Duration](v, def T) T {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

// Server is the edge's HTTP handler.
type Server struct {
	cfg     Config
	log     *slog.Logger
	mux     *http.ServeMux
	rt      *socket.Runtime
	auth    *auth.Authority
	conns   *registry.Registry[*Conn]
	layer   layer.Layer
	nats    *natslayer.Layer // the layer, when NATSURL is set
	reg     *prometheus.Registry
	metrics *metrics.Set
	ids     *registry.IDs
	shares  *shares // the budgets and rates sockets share

	face     *public.Face           // the public URL, trusted proxies, allowed origins
	notReady atomic.Pointer[string] // why /readyz last answered 503, to log each reason once
	draining atomic.Bool            // Shutdown has begun: /readyz answers 503

	// ctx lives as long as the Server, for work not tied to one request.
	ctx    context.Context
	cancel context.CancelFunc
}

// New returns a Server that calls authsvc over cc. Add WebSocket routes with Handle,
// run WatchSessions in a goroutine, serve it over HTTP, and call Shutdown to stop.
// With Config.NATSURL set it connects to NATS, retrying in the background while
// NATS is unreachable; it panics if NATSPrefix is not valid (ValidNATSPrefix) or
// LayerKey (or a fallback) is shorter than MinLayerKeyBytes.
func New(cc grpc.ClientConnInterface, cfg Config, log *slog.Logger) *Server {
	cfg = cfg.withDefaults()
	reg := prometheus.NewRegistry()
	s := &Server{
		cfg: cfg, log: log,
		mux:   http.NewServeMux(),
		face:  &public.Face{URL: cfg.PublicURL, TrustedProxies: cfg.TrustedProxies, AllowedOrigins: cfg.AllowedOrigins},
		conns: registry.New[*Conn](),
		ids:   registry.NewIDs(cfg.NodeID),
	}
	s.shares = newShares(cfg)
	s.reg = reg
	s.conns.SetLimits(registry.Limits{PerUser: max(cfg.MaxSocketsPerUser, 0), PerAddress: cfg.MaxSocketsPerAddress, Total: cfg.MaxSockets})
	s.metrics = metrics.New(reg, s.conns.Stats)
	here := &local.Edge[*Conn]{Conns: s.conns, Node: cfg.NodeID}
	s.layer = layer.Local{Edge: here}
	if cfg.NATSURL != "" {
		nl, err := natslayer.New(natslayer.Config{
			URL: cfg.NATSURL, Prefix: cfg.NATSPrefix, Node: cfg.NodeID, MaxMessage: cfg.ReadLimit, Options: cfg.NATSOptions,
			Key: cfg.LayerKey, Fallbacks: cfg.LayerKeyFallbacks,
		}, here, metrics.NATS(reg), log)
		if err != nil {
			panic("edge: " + err.Error())
		}
		s.conns.SetWatch(nl.Watch)
		s.layer, s.nats = nl, nl
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.rt = socket.NewRuntime(s.ctx, socket.Config{
		ReadLimit: cfg.ReadLimit, SendQueue: cfg.SendQueue, SendBuffer: cfg.SendBuffer, PingPeriod: cfg.PingPeriod,
		WriteWait: cfg.WriteWait, ParkAfter: cfg.ParkAfter, CheckOrigin: s.face.OriginAllowed,
		ReadTimeout: cfg.ReadTimeout, MessagesPerSecond: float64(cfg.MaxMessagesPerSecond), MessageBurst: cfg.MessageBurst,
	}, s.metrics.Socket, log)
	s.auth = auth.New(cc, auth.Config{Timeout: cfg.AuthTimeout, CacheSize: cfg.CacheSize}, (*holder)(s), s.metrics.Auth, log)
	site.New(s.auth, s.face, log).Register(s.mux)
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	s.mux.HandleFunc("GET /readyz", s.handleReady)
	return s
}

// Handle routes WebSocket handshakes for pattern (a net/http ServeMux pattern
// without method) to consumers: newConsumer is called once per handshake that
// authsvc has authorised, and the Consumer it returns serves that connection alone,
// so it may keep per-connection state in its fields. A pattern may contain a
// {user_id} (or {user_id...}) wildcard: only that user's sessions may connect there
// (others get 403; a value that is not a user id, 404).
// A pattern ending in "/" matches that path only, not the paths under it (404), as
// Channels' routes do. Handle panics if pattern conflicts with a route already
// registered.
func (s *Server) Handle(pattern string, newConsumer func() Consumer) {
	if strings.HasSuffix(pattern, "/") {
		pattern += "{$}" // exact: /ws/myapp/1/x is not /ws/myapp/{user_id}/
	}
	s.mux.Handle("GET "+pattern, s.handshake(newConsumer, namesUserID(pattern)))
}

// namesUserID reports whether pattern has a {user_id} wildcard, in any form
// ({user_id} or {user_id...}): every such route is bound to the session's user.
func namesUserID(pattern string) bool {
	return strings.Contains(pattern, "{user_id}") || strings.Contains(pattern, "{user_id...}")
}

// MetricsHandler serves the edge's Prometheus metrics (and a program's own, registered
// on Metrics). The edge's own handler does not serve them (GET /metrics there is 404):
// mount this where only the scraper reaches it, such as an internal port (edgesvc's
// EDGESVC_METRICS_LISTEN).
func (s *Server) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{})
}

// Metrics returns the registry behind MetricsHandler, for a program's own series.
func (s *Server) Metrics() prometheus.Registerer { return s.reg }

// NodeID returns the edge's node id (Config.NodeID, or the default it got).
func (s *Server) NodeID() string { return s.cfg.NodeID }

// ServeHTTP serves the page and its sign-in routes, the WebSocket routes, /healthz,
// /readyz (503 until authsvc serves and the session feed is live) and /metrics.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// WatchSessions follows authsvc's session-ended events until ctx ends, closing the
// sockets of each ended session with 4401. After every (re)subscription it
// re-validates every live session, so a session that ended while the feed was down
// is closed too. Until it runs, /readyz answers 503 and the session cache is unused.
func (s *Server) WatchSessions(ctx context.Context) { s.auth.Watch(ctx) }

// Shutdown refuses new sockets (503 SHUTTING_DOWN, before any consumer hears of them;
// /readyz answers 503 too, so a balancer sends clients elsewhere),
// closes every open one with 1001, and waits until they are gone and every consumer's
// Disconnect has returned, handshakes in flight included, or ctx ends (its error).
// With NATS, the edge then leaves the others and closes its NATS connection.
func (s *Server) Shutdown(ctx context.Context) error {
	defer s.cancel()
	s.draining.Store(true)
	for _, e := range s.conns.Shutdown() {
		e.Sock.CloseSoon(CloseGoingAway, "server shutting down")
	}
	err := s.conns.Wait(ctx)
	if s.nats != nil {
		s.nats.Close()
	}
	return err
}

// handleReady answers 200 "ready", or 503 "not ready": why goes to the log (once
// per change of reason), not to whoever probes, as it names internal addresses.
func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	if err := s.auth.Ready(r.Context()); err != nil {
		why := err.Error()
		if last := s.notReady.Swap(&why); last == nil || *last != why {
			s.log.WarnContext(r.Context(), "not ready", "err", err)
		}
		http.Error(w, "not ready", http.StatusServiceUnavailable)
		return
	}
	s.notReady.Store(nil)
	_, _ = w.Write([]byte("ready\n"))
}

// holder is the Server as the session authority sees it: the holder of connections.
type holder Server

// EndSession closes every socket of the session with 4401 and remembers that the
// session ended, for handshakes still in flight.
func (h *holder) EndSession(id, reason string) {
	for _, e := range h.conns.End(id, reason) {
		e.Sock.CloseNow(CloseSessionEnded, reason) // what is queued is for a session that ended
	}
}

// HeldSessions returns one live connection's credential per session.
func (h *holder) HeldSessions() []auth.Held {
	entries := h.conns.OnePerSession()
	out := make([]auth.Held, len(entries))
	for i, e := range entries {
		out[i] = auth.Held{Token: e.Conn.token, SessionID: e.Session}
	}
	return out
}
