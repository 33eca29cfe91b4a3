package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"net/netip"
	"slices"
	"strings"
	"sync"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// A front end (edgesvc) stands between end clients and authsvc. It alone may name the
// end client's address and user agent on Login (anyone else gets their own recorded)
// and follow the session event feed. A call is from a front end when it carries the
// front-end token or the admin token, or a verified client certificate with a DNS
// name in FrontendClientNames; with neither a front-end token nor client names
// configured, when it comes from loopback. A bearer token that is neither is refused.

const authPrefix = "/gatehouse.auth.v1.AuthService/"

// frontEndOnly are the AuthService methods only front ends may call.
var frontEndOnly = map[string]bool{
	authPrefix + "WatchSessionEvents": true,
	authPrefix + "SyncSessionEvents":  true,
}

type frontEndKey struct{}

// isFrontEnd reports whether the call was found to come from a front end by the
// interceptor.
func isFrontEnd(ctx context.Context) bool {
	v, _ := ctx.Value(frontEndKey{}).(bool)
	return v
}

func (s *Server) frontEndUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if !strings.HasPrefix(info.FullMethod, authPrefix) {
		return h(ctx, req)
	}
	ctx, err := s.classify(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (s *Server) frontEndStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if !strings.HasPrefix(info.FullMethod, authPrefix) {
		return h(srv, ss)
	}
	ctx, err := s.classify(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return h(srv, &ctxStream{ServerStream: ss, ctx: ctx})
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (c *ctxStream) Context() context.Context { return c.ctx }

// classify records in the context whether an AuthService call comes from a front end,
// refusing a wrong token, and a front-end-only method from anyone else.
func (s *Server) classify(ctx context.Context, method string) (context.Context, error) {
	front, err := s.frontEnd(ctx)
	if err != nil {
		return ctx, err
	}
	if !front && frontEndOnly[method] {
		return ctx, failf(codes.Unauthenticated, authv1.ErrorReason_ERROR_REASON_FRONTEND_TOKEN_REQUIRED,
			"%s is for front ends only: %s", method[len(authPrefix):], s.frontEndHint())
	}
	return context.WithValue(ctx, frontEndKey{}, front), nil
}

func (s *Server) frontEndHint() string {
	var ways []string
	if s.cfg.FrontendToken != "" {
		ways = append(ways, "send 'authorization: Bearer <front-end token>' (authsvc's AUTHSVC_FRONTEND_TOKEN, the edge's EDGESVC_AUTH_TOKEN)")
	}
	if len(s.cfg.FrontendClientNames) > 0 {
		ways = append(ways, "present a client certificate named in AUTHSVC_FRONTEND_CLIENT_NAMES")
	}
	if len(ways) == 0 {
		return "call from loopback, or configure a front-end token (AUTHSVC_FRONTEND_TOKEN) and present it"
	}
	return strings.Join(ways, ", or ")
}

// frontEnd reports whether the call comes from a front end. A bearer token must be the
// front-end or the admin token: a wrong one is an error, not an anonymous call.
func (s *Server) frontEnd(ctx context.Context) (bool, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if vals := md.Get("authorization"); len(vals) > 0 {
		scheme, tok, _ := strings.Cut(vals[0], " ")
		tok = strings.TrimSpace(tok)
		if len(vals) != 1 || !strings.EqualFold(scheme, "Bearer") || tok == "" {
			return false, failf(codes.Unauthenticated, authv1.ErrorReason_ERROR_REASON_FRONTEND_TOKEN_INVALID,
				"malformed authorization metadata: send one 'authorization: Bearer <front-end token>', or none")
		}
		got := sha256.Sum256([]byte(tok))
		// Both comparisons always run, in constant time.
		front := s.cfg.FrontendToken != "" && subtle.ConstantTimeCompare(got[:], s.frontTok[:]) == 1
		admin := s.cfg.AdminToken != "" && subtle.ConstantTimeCompare(got[:], s.admin[:]) == 1
		if !front && !admin {
			return false, failf(codes.Unauthenticated, authv1.ErrorReason_ERROR_REASON_FRONTEND_TOKEN_INVALID,
				"invalid bearer token: AuthService accepts only the front-end token (or the admin token); send none to call it as an ordinary client")
		}
		return true, nil
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return false, nil
	}
	if len(s.cfg.FrontendClientNames) > 0 {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 && len(ti.State.VerifiedChains[0]) > 0 {
			for _, name := range ti.State.VerifiedChains[0][0].DNSNames {
				if slices.Contains(s.cfg.FrontendClientNames, strings.ToLower(name)) {
					return true, nil
				}
			}
		}
	}
	if s.cfg.FrontendToken != "" || len(s.cfg.FrontendClientNames) > 0 {
		return false, nil
	}
	ip, err := netip.ParseAddr(peerHost(ctx))
	return err == nil && ip.IsLoopback(), nil
}

// limit bounds how many of something (event streams, logins being checked) are in
// progress at once, in total and per key (a caller's or client's address).
type limit struct {
	mu       sync.Mutex
	total    int
	byKey    map[string]int
	max, per int // 0: no limit
}

// over names the bound a new one would break.
type over int

const (
	within over = iota
	overTotal
	overKey
)

// inProgress returns how many are in progress in total.
func (l *limit) inProgress() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// take counts one more for key and returns the function that uncounts it (safe to
// call more than once), or says which bound it would break.
func (l *limit) take(key string) (release func(), o over) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.per > 0 && l.byKey[key] >= l.per {
		return nil, overKey
	}
	if l.max > 0 && l.total >= l.max {
		return nil, overTotal
	}
	if l.byKey == nil {
		l.byKey = map[string]int{}
	}
	l.total++
	l.byKey[key]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.total--
			if l.byKey[key]--; l.byKey[key] == 0 {
				delete(l.byKey, key)
			}
		})
	}, within
}
