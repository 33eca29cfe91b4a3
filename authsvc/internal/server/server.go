// Package server implements gatehouse's gRPC API (gatehouse.auth.v1 AuthService and
// AdminService) on top of the PostgreSQL store.
package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"log/slog"
	"net/netip"
	"runtime"
	"strings"
	"time"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gatehouse/gatehouse/authsvc/internal/password"
	"github.com/gatehouse/gatehouse/authsvc/internal/sessionevents"
	"github.com/gatehouse/gatehouse/authsvc/internal/store"
)

// Config holds the policy knobs. Zero values are replaced by the documented defaults
// in New.
type Config struct {
	// SessionTTL is how long a session lives after login. Default 14 days.
	SessionTTL time.Duration
	// AdminToken authorises AdminService calls. Empty disables the admin API: every
	// admin call answers UNAUTHENTICATED and says so.
	AdminToken string
	// MaxFailuresPerUser is how many failed logins for one username from one client
	// address are allowed within FailureWindow before Login answers
	// RESOURCE_EXHAUSTED there; other addresses are not affected. Default 10.
	MaxFailuresPerUser int
	// MaxFailuresPerUserTotal is the same limit for one username from all addresses
	// together, far higher: a user whose password is guessed from many addresses at
	// once is locked out for the window. Default 1,000; negative: no such limit.
	MaxFailuresPerUserTotal int
	// MaxFailuresPerAddress is the same limit for one client address. Default 100.
	MaxFailuresPerAddress int
	// FailureWindow is the window failures are counted in. Default 15 minutes.
	FailureWindow time.Duration
	// CacheLease is how long front ends may trust cached validations after a
	// SyncSessionEvents marker, and so how long every call that ends sessions waits
	// after its commit before it returns. Zero: front ends must not cache, and ending
	// a session does not wait.
	CacheLease time.Duration
	// MaxSessionsPerUser caps a user's live sessions: a login past it ends the
	// oldest (end reason session_limit, an event and 4401 as usual). Default 100;
	// negative: no cap.
	MaxSessionsPerUser int
	// FrontendToken, when set, is the bearer token front ends (edges) present. A front
	// end may name the end client's address and user agent on Login and follow the
	// session event feed. The admin token is accepted as a front-end token too.
	FrontendToken string
	// FrontendClientNames are the DNS names of client certificates (verified under
	// mTLS) that make their holder a front end, lower case. With neither these nor
	// FrontendToken set, every loopback peer is a front end.
	FrontendClientNames []string
	// MaxEventStreams caps the WatchSessionEvents streams open at once. Default 256;
	// negative: no cap.
	MaxEventStreams int
	// MaxEventStreamsPerCaller caps them per caller address. Default 16; negative: no
	// cap.
	MaxEventStreamsPerCaller int
	// MaxConcurrentLogins caps the logins being checked at once (each costs a
	// password hash; the hasher runs GOMAXPROCS at a time and the rest wait). Default
	// 32 per GOMAXPROCS; negative: no cap.
	MaxConcurrentLogins int
	// MaxConcurrentLoginsPerAddress caps them per client address (IPv6: per /64), so
	// that a flood from one address cannot make every other client wait. Default 4;
	// negative: no cap.
	MaxConcurrentLoginsPerAddress int
}

func (c *Config) setDefaults() {
	if c.MaxSessionsPerUser == 0 {
		c.MaxSessionsPerUser = 100
	}
	if c.SessionTTL <= 0 {
		c.SessionTTL = 14 * 24 * time.Hour
	}
	if c.MaxFailuresPerUser <= 0 {
		c.MaxFailuresPerUser = 10
	}
	if c.MaxFailuresPerUserTotal == 0 {
		c.MaxFailuresPerUserTotal = 1000
	}
	if c.MaxFailuresPerAddress <= 0 {
		c.MaxFailuresPerAddress = 100
	}
	if c.FailureWindow <= 0 {
		c.FailureWindow = 15 * time.Minute
	}
	c.MaxEventStreams = orDefault(c.MaxEventStreams, 256)
	c.MaxEventStreamsPerCaller = orDefault(c.MaxEventStreamsPerCaller, 16)
	c.MaxConcurrentLogins = orDefault(c.MaxConcurrentLogins, 32*runtime.GOMAXPROCS(0))
	c.MaxConcurrentLoginsPerAddress = orDefault(c.MaxConcurrentLoginsPerAddress, 4)
}

// orDefault is n, def for 0, and 0 (no limit) for a negative n.
func orDefault(n, def int) int {
	switch {
	case n == 0:
		return def
	case n < 0:
		return 0
	}
	return n
}

// Server serves AuthService and AdminService.
type Server struct {
	store  *store.Store
	hasher *password.Hasher
	cfg    Config
	events *sessionevents.Fanout
	log    *slog.Logger
	admin  [sha256.Size]byte // hash of the admin token, compared in constant time
	// frontTok is the hash of the front-end token, compared in constant time.
	frontTok [sha256.Size]byte
	streams  *limit // WatchSessionEvents streams, per caller address
	logins   *limit // logins being checked, per client address key
	metrics  Metrics
}

// New returns a Server. events may be shared with other servers of the process.
func New(st *store.Store, hasher *password.Hasher, events *sessionevents.Fanout, cfg Config, log *slog.Logger) *Server {
	cfg.setDefaults()
	s := &Server{store: st, hasher: hasher, cfg: cfg, events: events, log: log,
		streams: &limit{max: cfg.MaxEventStreams, per: cfg.MaxEventStreamsPerCaller},
		logins:  &limit{max: cfg.MaxConcurrentLogins, per: cfg.MaxConcurrentLoginsPerAddress},
	}
	s.cfg.FrontendClientNames = nil
	for _, n := range cfg.FrontendClientNames {
		s.cfg.FrontendClientNames = append(s.cfg.FrontendClientNames, strings.ToLower(n))
	}
	if cfg.AdminToken != "" {
		s.admin = sha256.Sum256([]byte(cfg.AdminToken))
	}
	if cfg.FrontendToken != "" {
		s.frontTok = sha256.Sum256([]byte(cfg.FrontendToken))
	}
	return s
}

// Register registers both services on g.
func (s *Server) Register(g *grpc.Server) {
	authv1.RegisterAuthServiceServer(g, &authServer{s: s})
	authv1.RegisterAdminServiceServer(g, &adminServer{s: s})
}

// ServerOptions returns the interceptors the services need: request logging, the
// admin token check and the front-end check.
func (s *Server) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(logUnary(s.log), s.adminUnary, s.frontEndUnary),
		grpc.ChainStreamInterceptor(logStream(s.log), s.adminStream, s.frontEndStream),
	}
}

// newToken returns a fresh session token (256 random bits, URL-safe) and its hash.
func newToken() (string, []byte) {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	tok := base64.RawURLEncoding.EncodeToString(b[:])
	return tok, HashToken(tok)
}

// HashToken returns the SHA-256 of a session token, as stored in sessions.token_hash.
func HashToken(tok string) []byte {
	h := sha256.Sum256([]byte(tok))
	return h[:]
}

// ended is called by every RPC that ended sessions, after the commit: it waits the
// cache lease, so that no front end accepts an ended session from its cache once the
// RPC has returned (see SyncSessionEvents). If the caller gives up first, the session
// has ended all the same; caches drop it within the lease.
func (s *Server) ended(ctx context.Context) {
	if s.cfg.CacheLease <= 0 {
		return
	}
	t := time.NewTimer(s.cfg.CacheLease)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func newSessionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func userPB(u store.User) *authv1.User {
	return &authv1.User{Id: u.ID, Username: u.Username, Active: u.Active, CreatedAt: timestamppb.New(u.CreatedAt)}
}

func sessionPB(s store.Session) *authv1.Session {
	return &authv1.Session{
		Id: s.ID, UserId: s.UserID,
		CreatedAt: timestamppb.New(s.CreatedAt), ExpiresAt: timestamppb.New(s.ExpiresAt),
		UserAgent: s.UserAgent, ClientAddress: s.ClientAddress,
	}
}

var reasonPB = map[store.EndReason]authv1.SessionEndReason{
	store.EndLogout:          authv1.SessionEndReason_SESSION_END_REASON_LOGOUT,
	store.EndRevoked:         authv1.SessionEndReason_SESSION_END_REASON_REVOKED,
	store.EndUserDisabled:    authv1.SessionEndReason_SESSION_END_REASON_USER_DISABLED,
	store.EndPasswordChanged: authv1.SessionEndReason_SESSION_END_REASON_PASSWORD_CHANGED,
	store.EndSessionLimit:    authv1.SessionEndReason_SESSION_END_REASON_SESSION_LIMIT,
}

// clientAddress returns the address recorded on the session and used for the
// per-address login limits: the one the request names when a front end (edgesvc)
// sent it, which must be an IP address, else the gRPC peer's host.
func clientAddress(ctx context.Context, given string) (string, error) {
	if given == "" || !isFrontEnd(ctx) {
		given = peerHost(ctx)
		if ip, err := netip.ParseAddr(given); err == nil {
			return normalAddr(ip).String(), nil
		}
		return given, nil
	}
	ip, err := netip.ParseAddr(given)
	if err != nil || len(given) > 64 {
		return "", failf(codes.InvalidArgument, authv1.ErrorReason_ERROR_REASON_INVALID_CLIENT_ADDRESS, "client_address must be an IP address")
	}
	return normalAddr(ip).String(), nil
}

// normalAddr is ip in the one form it is recorded and counted in: IPv4-mapped IPv6
// unmapped, zone dropped.
func normalAddr(ip netip.Addr) netip.Addr { return ip.Unmap().WithZone("") }

// addressKey is the key failed logins from addr are counted under: the address, or
// for IPv6 its /64 — one host usually holds a whole /64, and must not get a fresh
// failure budget for each address in it.
func addressKey(addr string) string {
	if ip, err := netip.ParseAddr(addr); err == nil && ip.Is6() {
		return "addr:" + netip.PrefixFrom(ip, 64).Masked().String()
	}
	return "addr:" + addr
}
