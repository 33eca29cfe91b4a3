package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"net"
	"strings"
	"time"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

func peerHost(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(p.Addr.String())
	if err != nil {
		return p.Addr.String()
	}
	return host
}

// logUnary logs one line per call: method, code, duration and peer. It never logs
// request or response bodies, which carry passwords and tokens.
func logUnary(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := h(ctx, req)
		logCall(ctx, log, info.FullMethod, start, err)
		return resp, err
	}
}

func logStream(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		start := time.Now()
		err := h(srv, ss)
		logCall(ss.Context(), log, info.FullMethod, start, err)
		return err
	}
}

func logCall(ctx context.Context, log *slog.Logger, method string, start time.Time, err error) {
	code := status.Code(err)
	level := slog.LevelDebug
	switch code {
	case codes.OK, codes.Canceled:
	case codes.Unauthenticated:
		// Every caller meets these (a wrong password, an expired session): at info,
		// any anonymous peer could fill the log. A wrong admin token is worth a look.
		switch errorReason(err) {
		case authv1.ErrorReason_ERROR_REASON_ADMIN_TOKEN_INVALID.Reason(), authv1.ErrorReason_ERROR_REASON_FRONTEND_TOKEN_INVALID.Reason():
			level = slog.LevelWarn
		}
	case codes.InvalidArgument, codes.NotFound, codes.AlreadyExists, codes.FailedPrecondition, codes.OutOfRange:
		// The caller's mistake, answered in full; nothing for an operator to do.
	case codes.Internal, codes.Unknown, codes.DataLoss:
		level = slog.LevelError
	default: // throttling, outages, deadlines
		level = slog.LevelInfo
	}
	if !log.Enabled(ctx, level) {
		return // the common case, an OK call at info: build nothing
	}
	log.Log(ctx, level, "grpc call", "method", method, "code", code.String(),
		"duration", time.Since(start), "peer", peerHost(ctx))
}

const adminPrefix = "/gatehouse.auth.v1.AdminService/"

func (s *Server) adminUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if strings.HasPrefix(info.FullMethod, adminPrefix) {
		if err := s.checkAdmin(ctx); err != nil {
			return nil, err
		}
	}
	return h(ctx, req)
}

func (s *Server) adminStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if strings.HasPrefix(info.FullMethod, adminPrefix) {
		if err := s.checkAdmin(ss.Context()); err != nil {
			return err
		}
	}
	return h(srv, ss)
}

// checkAdmin returns UNAUTHENTICATED unless the call carries
// `authorization: Bearer <admin token>`. Tokens are compared as SHA-256 hashes in
// constant time, so neither the token nor its length leaks through timing.
func (s *Server) checkAdmin(ctx context.Context) error {
	if s.cfg.AdminToken == "" {
		return failf(codes.Unauthenticated, authv1.ErrorReason_ERROR_REASON_ADMIN_API_DISABLED,
			"admin API disabled: authsvc has no admin token configured (set AUTHSVC_ADMIN_TOKEN)")
	}
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) != 1 {
		return failf(codes.Unauthenticated, authv1.ErrorReason_ERROR_REASON_ADMIN_TOKEN_REQUIRED, "admin token required: send metadata 'authorization: Bearer <admin token>'")
	}
	scheme, tok, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return failf(codes.Unauthenticated, authv1.ErrorReason_ERROR_REASON_ADMIN_TOKEN_REQUIRED, "admin token required: send metadata 'authorization: Bearer <admin token>'")
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	if subtle.ConstantTimeCompare(got[:], s.admin[:]) != 1 {
		return failf(codes.Unauthenticated, authv1.ErrorReason_ERROR_REASON_ADMIN_TOKEN_INVALID, "invalid admin token")
	}
	return nil
}

// errorReason returns the ErrorInfo reason of a status error, or "".
func errorReason(err error) string {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}
