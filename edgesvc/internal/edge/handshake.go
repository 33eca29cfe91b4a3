package edge

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// CookieName is the session cookie, as in Django.
const CookieName = "sessionid"

// maxTokenLen bounds what is sent to authsvc as a token; real tokens are 43 bytes.
const maxTokenLen = 256

// credential returns the session token a request carries: the Authorization bearer
// token if the header is present, else the sessionid cookie. It returns false if
// there is none or it is not shaped like a token (URL-safe base64, at most 256 bytes).
func credential(r *http.Request) (string, bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return "", false
		}
		tok = strings.TrimSpace(tok)
		return strings.Clone(tok), tokenShaped(tok) // not a slice of the header: sockets and the cache keep it
	}
	c, err := r.Cookie(CookieName)
	if err != nil {
		return "", false
	}
	return strings.Clone(c.Value), tokenShaped(c.Value)
}

func tokenShaped(tok string) bool {
	if tok == "" || len(tok) > maxTokenLen {
		return false
	}
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// parseUserID parses the {user_id} path segment: a positive decimal int64 with no
// sign and no leading zeros.
func parseUserID(s string) (int64, bool) {
	if s == "" || len(s) > 19 || s[0] == '0' {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, false
	}
	return id, true
}

// originAllowed reports whether a browser request's Origin may use the edge: the
// request's own host (the edge's own page), or one of AllowedOrigins. Requests without
// Origin come from non-browser clients, which carry their credential explicitly, and
// are allowed.
func (s *Server) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if slices.Contains(s.cfg.AllowedOrigins, strings.ToLower(origin)) {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	return strings.EqualFold(u.Host, r.Host)
}

// ReasonHeader carries the machine-readable reason of a refused request: authsvc's
// ErrorInfo reason (SESSION_EXPIRED, SESSION_REVOKED, …) or the edge's own
// (NO_CREDENTIAL, ORIGIN_NOT_ALLOWED, WRONG_USER, NO_ROUTE, AUTH_UNAVAILABLE).
const ReasonHeader = "Gatehouse-Reason"

func (s *Server) refuse(w http.ResponseWriter, outcome string, code int, reason, msg string) {
	s.metrics.handshakes.WithLabelValues(outcome).Inc()
	w.Header().Set(ReasonHeader, reason)
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="gatehouse"`)
	}
	http.Error(w, msg, code)
}

// validate calls ValidateSession with the handshake deadline.
func (s *Server) validate(ctx context.Context, tok string) (*authv1.ValidateSessionResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.AuthTimeout)
	defer cancel()
	start := time.Now()
	resp, err := s.auth.ValidateSession(ctx, &authv1.ValidateSessionRequest{Token: tok})
	s.metrics.validate.Observe(time.Since(start).Seconds())
	return resp, err
}

// authorize returns the user and session of tok: from the session cache when it
// holds them under a current lease, else from authsvc (and then caches them).
func (s *Server) authorize(ctx context.Context, tok string) (User, Session, error) {
	if u, sess, ok := s.cache.get(tok); ok {
		s.metrics.cacheHit.Inc()
		return u, sess, nil
	}
	if s.cache != nil {
		s.metrics.cacheMiss.Inc()
	}
	gen := s.cache.generation()
	resp, err := s.validate(ctx, tok)
	if err != nil {
		return User{}, Session{}, err
	}
	u := User{ID: resp.GetUser().GetId(), Username: resp.GetUser().GetUsername()}
	sess := Session{ID: resp.GetSession().GetId(), ExpiresAt: resp.GetSession().GetExpiresAt().AsTime()}
	s.cache.put(tok, gen, u, sess)
	return u, sess, nil
}

// handshake authorises a WebSocket request before upgrading it, so that every refusal
// is an HTTP status (see the handshake table in the README), then runs consumer.
func (s *Server) handshake(consumer Consumer, checkUser bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.originAllowed(r) {
			s.refuse(w, "forbidden_origin", http.StatusForbidden, "ORIGIN_NOT_ALLOWED", "origin not allowed")
			return
		}
		var pathUser int64
		if checkUser {
			var ok bool
			if pathUser, ok = parseUserID(r.PathValue("user_id")); !ok {
				s.refuse(w, "not_found", http.StatusNotFound, "NO_ROUTE", "no such route: user id must be a positive integer")
				return
			}
		}
		tok, ok := credential(r)
		if !ok {
			s.refuse(w, "unauthenticated", http.StatusUnauthorized, "NO_CREDENTIAL", "sign in first: no session credential")
			return
		}
		feed := s.feed.Load()
		user, sess, err := s.authorize(r.Context(), tok)
		if err != nil {
			switch {
			case r.Context().Err() != nil: // the client went away; authsvc is not to blame
				s.metrics.handshakes.WithLabelValues("canceled").Inc()
			case status.Code(err) == codes.Unauthenticated:
				s.refuse(w, "unauthenticated", http.StatusUnauthorized, errorReason(err).Reason, "session not valid: "+status.Convert(err).Message())
			default:
				s.log.WarnContext(r.Context(), "ValidateSession failed", "code", status.Code(err).String(), "err", err)
				s.refuse(w, "unavailable", http.StatusServiceUnavailable, "AUTH_UNAVAILABLE", "authentication service unavailable")
			}
			return
		}
		if checkUser && user.ID != pathUser {
			s.refuse(w, "forbidden_user", http.StatusForbidden, "WRONG_USER", "this socket belongs to another user")
			return
		}
		hj := &hijacker{ResponseWriter: w}
		ws, err := s.upgrader.Upgrade(hj, r, nil)
		if err != nil {
			s.metrics.handshakes.WithLabelValues("bad_request").Inc() // Upgrade has answered 4xx
			return
		}
		s.metrics.handshakes.WithLabelValues("ok").Inc()
		ctx, cancel := context.WithCancel(s.ctx)
		c := &Conn{
			ws: ws, br: hj.br, srv: s, token: tok, user: user, session: sess,
			done: make(chan struct{}),
			ctx:  ctx, cancel: cancel,
		}
		// Run the socket on a goroutine of its own and return: net/http then drops the
		// request, its buffers and this goroutine's grown stack (about 8 KiB a socket).
		go s.serve(c, consumer, feed)
	}
}

// readBufferSize is each socket's read buffer: messages larger than this are read in
// more calls, and an idle socket stays small.
const readBufferSize = 512

// hijacker hands gorilla a read buffer of our own (readBufferSize) when it hijacks
// the connection, so that the edge can see whether anything is buffered before it
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

// serve sets up an upgraded connection and starts reading it.
func (s *Server) serve(c *Conn, consumer Consumer, feed uint64) {
	s.metrics.open.Inc()
	c.consumer = consumer
	c.lastHeard.Store(time.Now().UnixNano())
	c.ws.SetReadLimit(s.cfg.ReadLimit)
	c.ws.SetPongHandler(func(string) error { c.lastHeard.Store(time.Now().UnixNano()); return nil })
	if sc, ok := c.ws.NetConn().(syscall.Conn); ok {
		c.sock, _ = sc.SyscallConn()
		c.parkable = c.sock != nil && s.poller != nil
	}
	c.pinger = time.AfterFunc(s.cfg.PingPeriod, c.ping)
	ok, reason := s.hub.add(c)
	switch {
	case !ok && reason == "":
		c.Close(CloseGoingAway, "server shutting down")
	case !ok:
		c.Close(CloseSessionEnded, reason)
	default:
		c.registered = true
		if feed == 0 || s.feed.Load() != feed {
			// The event feed was down or restarted since validation began: an end
			// event may have been missed, so check once more.
			go s.revalidate(s.ctx, c, 8)
		}
		c.expiry = time.AfterFunc(time.Until(c.session.ExpiresAt), func() { c.Close(CloseSessionEnded, "expired") })
		if err := consumer.Connect(c.ctx, c); err != nil {
			s.log.ErrorContext(c.ctx, "consumer refused connection", "session_id", c.session.ID, "err", err)
			c.Close(CloseInternal, "internal error")
		} else {
			c.connected = true
		}
	}
	// A new socket lingers briefly: thousands connecting at once would otherwise each
	// keep a stack for ParkAfter, and a socket closed at once is never parked.
	c.linger = min(s.cfg.ParkAfter, newSocketLinger)
	c.readLoop()
}

// newSocketLinger is how long a new socket keeps its reading goroutine if quiet.
const newSocketLinger = 100 * time.Millisecond

// finish runs once, when the connection has ended: it tells the consumer and
// releases what serve set up.
func (c *Conn) finish() {
	c.finished.Do(func() {
		s := c.srv
		s.poller.forget(c)
		if c.connected {
			c.consumer.Disconnect(context.WithoutCancel(c.ctx), c, c.code)
		}
		if c.expiry != nil {
			c.expiry.Stop()
		}
		c.pinger.Stop()
		if c.registered {
			s.hub.remove(c)
		}
		s.metrics.open.Dec()
	})
}
