package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/gatehouse/gatehouse/authsvc/internal/store"
)

// ErrorDomain is the google.rpc.ErrorInfo domain of every error authsvc returns.
const ErrorDomain = "auth.gatehouse.dev"

// fail returns a status error with an ErrorInfo detail (reason, domain and optional
// metadata as key, value pairs), and a RetryInfo when retry > 0.
func fail(code codes.Code, reason authv1.ErrorReason, retry time.Duration, msg string, meta ...string) error {
	info := &errdetails.ErrorInfo{Reason: reason.Reason(), Domain: ErrorDomain}
	if len(meta) > 0 {
		info.Metadata = map[string]string{}
		for i := 0; i+1 < len(meta); i += 2 {
			info.Metadata[meta[i]] = meta[i+1]
		}
	}
	details := []protoadapt.MessageV1{info}
	if retry > 0 {
		details = append(details, &errdetails.RetryInfo{RetryDelay: durationpb.New(retry)})
	}
	st, err := status.New(code, msg).WithDetails(details...)
	if err != nil { // cannot happen: both details are registered messages
		return status.Error(code, msg)
	}
	return st.Err()
}

func failf(code codes.Code, reason authv1.ErrorReason, format string, args ...any) error {
	return fail(code, reason, 0, fmt.Sprintf(format, args...))
}

// userErr maps a store error about user id: not found becomes USER_NOT_FOUND.
func userErr(id int64, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return fail(codes.NotFound, authv1.ErrorReason_ERROR_REASON_USER_NOT_FOUND, 0, fmt.Sprintf("user %d not found", id), "user_id", fmt.Sprint(id))
	}
	return err
}

// toStatus is the one place that maps store and context errors to gRPC statuses.
// Errors it does not know are logged and answered without detail: a connection
// problem as UNAVAILABLE (retryable), anything else as INTERNAL.
func toStatus(ctx context.Context, log *slog.Logger, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var revoked *store.RevokedError
	switch {
	case errors.As(err, &revoked):
		return fail(codes.Unauthenticated, authv1.ErrorReason_ERROR_REASON_SESSION_REVOKED, 0, "session revoked: "+string(revoked.Reason),
			"end_reason", string(revoked.Reason))
	case errors.Is(err, store.ErrUsernameTaken):
		return failf(codes.AlreadyExists, authv1.ErrorReason_ERROR_REASON_USERNAME_TAKEN, "username already taken")
	case errors.Is(err, store.ErrSessionUnknown):
		return failf(codes.Unauthenticated, authv1.ErrorReason_ERROR_REASON_SESSION_UNKNOWN, "session unknown")
	case errors.Is(err, store.ErrSessionExpired):
		return failf(codes.Unauthenticated, authv1.ErrorReason_ERROR_REASON_SESSION_EXPIRED, "session expired")
	case errors.Is(err, store.ErrSessionRevoked):
		return failf(codes.Unauthenticated, authv1.ErrorReason_ERROR_REASON_SESSION_REVOKED, "session revoked")
	case errors.Is(err, store.ErrUserInactive):
		return failf(codes.Unauthenticated, authv1.ErrorReason_ERROR_REASON_USER_INACTIVE, "user inactive")
	case errors.Is(err, context.Canceled):
		return failf(codes.Canceled, authv1.ErrorReason_ERROR_REASON_CANCELED, "request canceled")
	case errors.Is(err, context.DeadlineExceeded):
		return failf(codes.DeadlineExceeded, authv1.ErrorReason_ERROR_REASON_DEADLINE_EXCEEDED, "deadline exceeded")
	}
	var pgErr *pgconn.PgError
	var connErr *pgconn.ConnectError
	switch {
	case errors.As(err, &connErr), pgconn.Timeout(err):
		// fall through to UNAVAILABLE
	case errors.As(err, &pgErr) && (strings.HasPrefix(pgErr.Code, "08") || strings.HasPrefix(pgErr.Code, "57P")):
		// connection exception, or the server is shutting down or restarting
	case errors.As(err, &pgErr), errors.Is(err, store.ErrNotFound):
		log.ErrorContext(ctx, "unexpected store error", "err", err)
		return failf(codes.Internal, authv1.ErrorReason_ERROR_REASON_INTERNAL, "internal error")
	}
	log.WarnContext(ctx, "database unavailable", "err", err)
	return fail(codes.Unavailable, authv1.ErrorReason_ERROR_REASON_DATABASE_UNAVAILABLE, time.Second, "database unavailable")
}
