package server

import (
	"context"
	"errors"
	"log/slog"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gatehouse/gatehouse/authsvc/internal/store"
)

// toStatus is the one place that maps store and context errors to gRPC status codes.
// Errors it does not know are logged and answered without detail: a connection
// problem as UNAVAILABLE (retryable), anything else as INTERNAL.
func toStatus(ctx context.Context, log *slog.Logger, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, store.ErrUsernameTaken):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, store.ErrSessionUnknown),
		errors.Is(err, store.ErrSessionExpired),
		errors.Is(err, store.ErrSessionRevoked),
		errors.Is(err, store.ErrUserInactive):
		return status.Error(codes.Unauthenticated, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "request canceled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	}
	var pgErr *pgconn.PgError
	var connErr *pgconn.ConnectError
	switch {
	case errors.As(err, &connErr), pgconn.Timeout(err):
		// fall through to UNAVAILABLE
	case errors.As(err, &pgErr) && (strings.HasPrefix(pgErr.Code, "08") || strings.HasPrefix(pgErr.Code, "57P")):
		// connection exception, or the server is shutting down or restarting
	case errors.As(err, &pgErr):
		log.ErrorContext(ctx, "database error", "err", err)
		return status.Error(codes.Internal, "internal error")
	}
	log.WarnContext(ctx, "database unavailable", "err", err)
	return status.Error(codes.Unavailable, "database unavailable")
}
