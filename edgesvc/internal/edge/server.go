// Package edge is gatehouse's WebSocket edge: the browser page, the login form, and
// WebSocket routes whose handshake is authorised by authsvc's ValidateSession before
// the upgrade. It also follows authsvc's session-ended events and closes the sockets
// of sessions that end.
package edge

import (
	"context"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Config holds the edge's settings. Zero values take the defaults named here.
type Config struct {
	// AllowedOrigins lists origins ("https://app.example.com") whose pages may open
	// sockets and post the login form, besides the request's own host, which always may.
	AllowedOrigins []string
	// ReadLimit is the largest message a client may send, in bytes. Default 1 MiB.
	ReadLimit int64
	// SendQueue is how many outgoing messages may wait for a slow client before its
	// connection is closed with 1013. Default 64.
	SendQueue int
	// AuthTimeout bounds each call to authsvc during a handshake. Default 2 s.
	AuthTimeout time.Duration
	// PingPeriod is how often the edge pings each client; a client that has sent
	// nothing (no pong, no message) by the next ping is dropped. Default 30 s.
	PingPeriod time.Duration
	// WriteWait bounds each write to a client. Default 10 s.
	WriteWait time.Duration
	// ParkAfter is how long a socket may be quiet before its reading goroutine is
	// given up (the socket is then watched with epoll until data arrives). Default 2 s.
	ParkAfter time.Duration
	// CacheSize is how many ValidateSession answers the edge keeps, so that a session
	// it saw recently connects without a call to authsvc (see sessionCache). Default
	// 100,000; negative turns the cache off.
	CacheSize int
}

func (c *Config) setDefaults() {
	if c.ReadLimit <= 0 {
		c.ReadLimit = 1 << 20
	}
	if c.SendQueue <= 0 {
		c.SendQueue = 64
	}
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
	if c.CacheSize == 0 {
		c.CacheSize = 100_000
	}
	for i, o := range c.AllowedOrigins {
		c.AllowedOrigins[i] = strings.ToLower(strings.TrimRight(strings.TrimSpace(o), "/"))
	}
}

// Server is the edge's HTTP handler.
type Server struct {
	cfg      Config
	log      *slog.Logger
	auth     authv1.AuthServiceClient
	health   healthpb.HealthClient
	mux      *http.ServeMux
	upgrader websocket.Upgrader
	cop      *http.CrossOriginProtection
	hub      *hub
	cache    *sessionCache // nil when off
	poller   *poller       // nil where sockets cannot be parked
	marker   atomic.Pointer[marker]
	metrics  *metrics
	registry *prometheus.Registry

	// feed is the generation of the live session-event subscription, 0 while there is
	// none. A handshake that validated under one generation and registered under the
	// same one cannot have missed an event.
	feed    atomic.Uint64
	feedSeq atomic.Uint64

	// ctx lives as long as the Server, for work not tied to one request.
	ctx    context.Context
	cancel context.CancelFunc
}

// New returns a Server that calls authsvc over cc. Add WebSocket routes with Handle,
// run WatchSessions in a goroutine, and call Shutdown to stop.
func New(cc grpc.ClientConnInterface, cfg Config, log *slog.Logger) *Server {
	cfg.setDefaults()
	reg := prometheus.NewRegistry()
	s := &Server{
		cfg: cfg, log: log,
		auth:     authv1.NewAuthServiceClient(cc),
		health:   healthpb.NewHealthClient(cc),
		mux:      http.NewServeMux(),
		cop:      http.NewCrossOriginProtection(),
		hub:      newHub(),
		metrics:  newMetrics(reg),
		registry: reg,
	}
	if cfg.CacheSize > 0 {
		s.cache = newSessionCache(cfg.CacheSize)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if p, err := newPoller(s.ctx); err == nil {
		s.poller = p
	} else {
		log.Warn("idle sockets cannot be parked; each keeps a goroutine", "err", err)
	}
	for _, o := range cfg.AllowedOrigins {
		if err := s.cop.AddTrustedOrigin(o); err != nil {
			log.Warn("ignoring allowed origin", "origin", o, "err", err)
		}
	}
	s.upgrader = websocket.Upgrader{
		HandshakeTimeout: 10 * time.Second,
		CheckOrigin:      s.originAllowed,
		// Pooled write buffers keep an idle socket cheap; the read buffer comes from
		// hijacker (readBufferSize), which needs ReadBufferSize 0.
		WriteBufferPool: &sync.Pool{},
	}
	static, _ := fs.Sub(webFS, "web")
	s.mux.HandleFunc("GET /{$}", s.handlePage)
	s.mux.HandleFunc("POST /login", s.handleLogin)
	s.mux.HandleFunc("POST /logout", s.handleLogout)
	s.mux.HandleFunc("GET /api/session", s.handleAPISession)
	s.mux.Handle("GET /static/", http.StripPrefix("/static/", staticHandler(static)))
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	s.mux.HandleFunc("GET /readyz", s.handleReady)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return s
}

// Handle routes WebSocket handshakes for pattern to consumer. A pattern may contain
// a {user_id} wildcard: only that user's sessions may connect there (others get 403).
func (s *Server) Handle(pattern string, consumer Consumer) {
	s.mux.Handle("GET "+pattern, s.handshake(consumer, strings.Contains(pattern, "{user_id}")))
}

// ServeHTTP serves every route.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Shutdown refuses new sockets, closes every open one with 1001, and waits until
// they are gone or ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	defer s.cancel()
	for _, c := range s.hub.shutdown() {
		// A write stuck on a client that does not read would hold up the close frame
		// for WriteWait; give it closeGrace instead.
		_ = c.ws.NetConn().SetWriteDeadline(time.Now().Add(closeGrace))
		c.Close(CloseGoingAway, "server shutting down")
	}
	done := make(chan struct{})
	go func() { s.hub.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.AuthTimeout)
	defer cancel()
	resp, err := s.health.Check(ctx, &healthpb.HealthCheckRequest{Service: authv1.AuthService_ServiceDesc.ServiceName})
	switch {
	case err != nil:
		http.Error(w, "authsvc unreachable: "+err.Error(), http.StatusServiceUnavailable)
	case resp.GetStatus() != healthpb.HealthCheckResponse_SERVING:
		http.Error(w, "authsvc not serving: "+resp.GetStatus().String(), http.StatusServiceUnavailable)
	case s.feed.Load() == 0:
		http.Error(w, "session event feed not connected yet", http.StatusServiceUnavailable)
	default:
		_, _ = w.Write([]byte("ready\n"))
	}
}
