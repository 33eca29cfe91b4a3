// Package auth is the edge's session authority: it reads a request's session
// credential, asks authsvc whom it belongs to (answering from a cache while it holds
// authsvc's lease), signs users in and out, follows authsvc's feed of session ends,
// and re-checks held sessions whenever that feed may have missed one.
package auth

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcstatus "google.golang.org/grpc/status"
)

// User is a signed-in user.
type User struct {
	ID       int64
	Username string
}

// Session is a user's session.
type Session struct {
	ID        string
	ExpiresAt time.Time
}

// identity converts authsvc's user and session.
func identity(u *authv1.User, s *authv1.Session) (User, Session) {
	return User{ID: u.GetId(), Username: u.GetUsername()},
		Session{ID: s.GetId(), ExpiresAt: s.GetExpiresAt().AsTime()}
}

// Holder is whoever holds the connections of sessions: the authority ends and
// re-checks sessions through it.
type Holder interface {
	// EndSession closes every connection of the session with 4401 and reason, and
	// refuses those still registering.
	EndSession(id, reason string)
	// HeldSessions returns one live connection's credential per session.
	HeldSessions() []Held
}

// Held is a session with live connections, and the token they were opened with.
type Held struct {
	Token, SessionID string
}

// Config holds the authority's settings.
type Config struct {
	// Timeout bounds each call to authsvc (a sign-in gets 5 s more: hashing takes
	// time). It must be set.
	Timeout time.Duration
	// CacheSize is how many ValidateSession answers are kept (see sessionCache); 0
	// keeps none, and every Authorize asks authsvc.
	CacheSize int
}

// Metrics are what the authority counts; the edge defines and registers them.
type Metrics struct {
	Validate  prometheus.Observer    // ValidateSession latency, seconds
	CacheHit  prometheus.Counter     // lookups answered by the cache
	CacheMiss prometheus.Counter     // lookups that asked authsvc
	Leases    *prometheus.CounterVec // lease renewals by outcome: granted, refused, failed
}

// Authority answers who a session credential belongs to.
type Authority struct {
	cfg     Config
	log     *slog.Logger
	client  authv1.AuthServiceClient
	health  healthpb.HealthClient
	cache   *sessionCache // nil when off
	metrics Metrics
	holder  Holder
	marker  atomic.Pointer[marker]

	// feed is the generation of the live session-event subscription, 0 while there is
	// none. A handshake that validated under one generation and registered under the
	// same one cannot have missed an event.
	feed    atomic.Uint64
	feedSeq atomic.Uint64

	conn stateful // cc's connectivity, when it tells (a *grpc.ClientConn does)
}

// stateful is the part of *grpc.ClientConn that tells its connection's state.
type stateful interface {
	GetState() connectivity.State
	WaitForStateChange(context.Context, connectivity.State) bool
	Connect()
}

// New returns an Authority that calls authsvc over cc and ends sessions through h.
// Run Watch to follow session ends.
func New(cc grpc.ClientConnInterface, cfg Config, h Holder, m Metrics, log *slog.Logger) *Authority {
	a := &Authority{
		cfg: cfg, log: log, metrics: m, holder: h,
		client: authv1.NewAuthServiceClient(cc),
		health: healthpb.NewHealthClient(cc),
	}
	a.conn, _ = cc.(stateful)
	if cfg.CacheSize > 0 {
		a.cache = newSessionCache(cfg.CacheSize)
	}
	return a
}

// Feed returns the generation of the live session-event feed, 0 while it is down.
// Take it before Authorize and pass it to Registered.
func (a *Authority) Feed() uint64 { return a.feed.Load() }

// Registered is called once a connection authorised while the feed was at generation
// feed has been registered with the Holder. If the feed was down or has changed since,
// an end event may have been missed, so the session is checked again in the
// background (until ctx ends).
func (a *Authority) Registered(ctx context.Context, feed uint64, h Held) {
	if feed == 0 || a.feed.Load() != feed {
		go a.revalidate(ctx, h, 8)
	}
}

// Authorize returns the user and session of tok: from the session cache when it
// holds them under a current lease, else from authsvc (and then caches them). Its
// errors are authsvc's (UNAUTHENTICATED: the session is not valid; see Details).
func (a *Authority) Authorize(ctx context.Context, tok string) (User, Session, error) {
	if u, sess, ok := a.cache.get(tok); ok {
		a.metrics.CacheHit.Inc()
		return u, sess, nil
	}
	if a.cache != nil {
		a.metrics.CacheMiss.Inc()
	}
	gen := a.cache.generation()
	resp, err := a.validate(ctx, tok)
	if err != nil {
		return User{}, Session{}, err
	}
	u, sess := identity(resp.GetUser(), resp.GetSession())
	a.cache.put(tok, gen, u, sess)
	return u, sess, nil
}

// validate calls ValidateSession with the authority's deadline.
func (a *Authority) validate(ctx context.Context, tok string) (*authv1.ValidateSessionResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	start := time.Now()
	resp, err := a.client.ValidateSession(ctx, &authv1.ValidateSessionRequest{Token: tok})
	a.metrics.Validate.Observe(time.Since(start).Seconds())
	return resp, err
}

// Login signs a user in with authsvc and returns the new session's token, user and
// session, cached so that the page and socket that follow find them. Its errors are
// authsvc's.
func (a *Authority) Login(ctx context.Context, username, password, userAgent, clientAddress string) (string, User, Session, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout+5*time.Second) // password hashing takes time
	defer cancel()
	gen := a.cache.generation()
	resp, err := a.client.Login(ctx, &authv1.LoginRequest{
		Username: username, Password: password,
		UserAgent: userAgent, ClientAddress: clientAddress,
	})
	if err != nil {
		return "", User{}, Session{}, err
	}
	u, sess := identity(resp.GetUser(), resp.GetSession())
	a.cache.put(resp.GetToken(), gen, u, sess)
	return resp.GetToken(), u, sess, nil
}

// Logout ends tok's session with authsvc. Its errors are authsvc's.
func (a *Authority) Logout(ctx context.Context, tok string) error {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	_, err := a.client.Logout(ctx, &authv1.LogoutRequest{Token: tok})
	return err
}

// Ready returns nil when sessions can be authorised: authsvc serves and the session
// event feed is live; otherwise an error saying which is not.
func (a *Authority) Ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	resp, err := a.health.Check(ctx, &healthpb.HealthCheckRequest{Service: authv1.AuthService_ServiceDesc.ServiceName})
	switch {
	case err != nil:
		return errors.New("authsvc unreachable: " + err.Error())
	case resp.GetStatus() != healthpb.HealthCheckResponse_SERVING:
		return errors.New("authsvc not serving: " + resp.GetStatus().String())
	case a.feed.Load() == 0:
		return errors.New("session event feed not connected yet")
	}
	return nil
}

// ErrorDetails is what authsvc's google.rpc error details say about a failed call.
type ErrorDetails struct {
	Reason   string            // ErrorInfo.reason; empty if authsvc sent none
	Metadata map[string]string // ErrorInfo.metadata
	Retry    time.Duration     // RetryInfo.retry_delay; 0 if none
}

// Details reads the ErrorInfo and RetryInfo details of a gRPC error; it returns the
// zero ErrorDetails for an error without them.
func Details(err error) ErrorDetails {
	var out ErrorDetails
	for _, d := range grpcstatus.Convert(err).Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			out.Reason, out.Metadata = d.GetReason(), d.GetMetadata()
		case *errdetails.RetryInfo:
			out.Retry = d.GetRetryDelay().AsDuration()
		}
	}
	return out
}

// FrontEndRefusals is the client interceptor of the edge's connection to authsvc: it
// turns authsvc's refusal of the edge's own credential (FRONTEND_TOKEN_INVALID, or
// FRONTEND_TOKEN_REQUIRED) into UNAVAILABLE. A misconfigured edge then fails closed
// (503) and never takes the refusal for a verdict on a user's session: a 401, or
// closing every held socket with 4401 when it re-validates them.
func FrontEndRefusals(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	err := invoker(ctx, method, req, reply, cc, opts...)
	if grpcstatus.Code(err) == codes.Unauthenticated {
		switch Details(err).Reason {
		case authv1.ErrorReason_ERROR_REASON_FRONTEND_TOKEN_INVALID.Reason(), authv1.ErrorReason_ERROR_REASON_FRONTEND_TOKEN_REQUIRED.Reason():
			return grpcstatus.Error(codes.Unavailable, "authsvc refuses this edge's front-end credential (EDGESVC_AUTH_TOKEN): "+grpcstatus.Convert(err).Message())
		}
	}
	return err
}

// Refusal is how the edge answers a request whose Authorize failed with err: 401 and
// authsvc's reason when the session is not valid, else 503 AUTH_UNAVAILABLE (authsvc
// unreachable, too slow or failing: fail closed).
func Refusal(err error) (status int, reason string) {
	if grpcstatus.Code(err) == codes.Unauthenticated {
		return http.StatusUnauthorized, Details(err).Reason
	}
	return http.StatusServiceUnavailable, "AUTH_UNAVAILABLE"
}
