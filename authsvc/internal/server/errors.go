package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

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

// Reasons carried in google.rpc.ErrorInfo.reason. They are part of the contract
// (README "Errors"): clients branch on them, never on messages.
const (
	ReasonCredentialsRequired  = "CREDENTIALS_REQUIRED"   // INVALID_ARGUMENT: Login without username or password
	ReasonCredentialsTooLong   = "CREDENTIALS_TOO_LONG"   // INVALID_ARGUMENT: Login username or password over the limit
	ReasonInvalidClientAddress = "INVALID_CLIENT_ADDRESS" // INVALID_ARGUMENT: LoginRequest.client_address is not an IP
	ReasonInvalidUsername      = "INVALID_USERNAME"       // INVALID_ARGUMENT: CreateUser username breaks the rule
	ReasonInvalidPassword      = "INVALID_PASSWORD"       // INVALID_ARGUMENT: CreateUser/SetPassword password length
	ReasonInvalidUserID        = "INVALID_USER_ID"        // INVALID_ARGUMENT: user_id not positive
	ReasonInvalidPageSize      = "INVALID_PAGE_SIZE"      // INVALID_ARGUMENT: negative page_size
	ReasonInvalidPageToken     = "INVALID_PAGE_TOKEN"     // INVALID_ARGUMENT: page_token not from a previous response
	ReasonSessionIDRequired    = "SESSION_ID_REQUIRED"    // INVALID_ARGUMENT: RevokeSession without session_id
	ReasonMarkerInvalid        = "MARKER_INVALID"         // INVALID_ARGUMENT: SyncSessionEvents marker empty or over 64 bytes
	ReasonInvalidCredentials   = "INVALID_CREDENTIALS"    // UNAUTHENTICATED: Login refused (unknown user, wrong password, inactive)
	ReasonTokenRequired        = "TOKEN_REQUIRED"         // UNAUTHENTICATED: empty session token
	ReasonSessionUnknown       = "SESSION_UNKNOWN"        // UNAUTHENTICATED: no session has the token
	ReasonSessionExpired       = "SESSION_EXPIRED"        // UNAUTHENTICATED: the session expired
	ReasonSessionRevoked       = "SESSION_REVOKED"        // UNAUTHENTICATED: the session ended; metadata end_reason says how
	ReasonUserInactive         = "USER_INACTIVE"          // UNAUTHENTICATED: the session's user is deactivated
	ReasonAdminTokenRequired   = "ADMIN_TOKEN_REQUIRED"   // UNAUTHENTICATED: admin call without a bearer token
	ReasonAdminTokenInvalid    = "ADMIN_TOKEN_INVALID"    // UNAUTHENTICATED: admin call with a wrong token
	ReasonAdminAPIDisabled     = "ADMIN_API_DISABLED"     // UNAUTHENTICATED: authsvc has no admin token configured
	ReasonRateLimited          = "RATE_LIMITED"           // RESOURCE_EXHAUSTED: too many failed logins; RetryInfo says when
	ReasonUsernameTaken        = "USERNAME_TAKEN"         // ALREADY_EXISTS: CreateUser with a taken username
	ReasonUserNotFound         = "USER_NOT_FOUND"         // NOT_FOUND: metadata user_id
	ReasonSessionNotFound      = "SESSION_NOT_FOUND"      // NOT_FOUND: metadata session_id
	ReasonDatabaseUnavailable  = "DATABASE_UNAVAILABLE"   // UNAVAILABLE: retry after RetryInfo
	ReasonEventFeedUnavailable = "EVENT_FEED_UNAVAILABLE" // UNAVAILABLE: WatchSessionEvents cannot start; retry
	ReasonEventsMissed         = "EVENTS_MISSED"          // UNAVAILABLE: the stream ended; re-check held sessions, resubscribe
	ReasonInternal             = "INTERNAL"               // INTERNAL
	ReasonCanceled             = "CANCELED"               // CANCELED
	ReasonDeadlineExceeded     = "DEADLINE_EXCEEDED"      // DEADLINE_EXCEEDED
)

// fail returns a status error with an ErrorInfo detail (reason, domain and optional
// metadata as key, value pairs), and a RetryInfo when retry > 0.
func fail(code codes.Code, reason string, retry time.Duration, msg string, meta ...string) error {
	info := &errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain}
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

func failf(code codes.Code, reason, format string, args ...any) error {
	return fail(code, reason, 0, fmt.Sprintf(format, args...))
}

// userErr maps a store error about user id: not found becomes USER_NOT_FOUND.
func userErr(id int64, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return fail(codes.NotFound, ReasonUserNotFound, 0, fmt.Sprintf("user %d not found", id), "user_id", fmt.Sprint(id))
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
		return fail(codes.Unauthenticated, ReasonSessionRevoked, 0, "session revoked: "+string(revoked.Reason),
			"end_reason", string(revoked.Reason))
	case errors.Is(err, store.ErrUsernameTaken):
		return failf(codes.AlreadyExists, ReasonUsernameTaken, "username already taken")
	case errors.Is(err, store.ErrSessionUnknown):
		return failf(codes.Unauthenticated, ReasonSessionUnknown, "session unknown")
	case errors.Is(err, store.ErrSessionExpired):
		return failf(codes.Unauthenticated, ReasonSessionExpired, "session expired")
	case errors.Is(err, store.ErrSessionRevoked):
		return failf(codes.Unauthenticated, ReasonSessionRevoked, "session revoked")
	case errors.Is(err, store.ErrUserInactive):
		return failf(codes.Unauthenticated, ReasonUserInactive, "user inactive")
	case errors.Is(err, context.Canceled):
		return failf(codes.Canceled, ReasonCanceled, "request canceled")
	case errors.Is(err, context.DeadlineExceeded):
		return failf(codes.DeadlineExceeded, ReasonDeadlineExceeded, "deadline exceeded")
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
		return failf(codes.Internal, ReasonInternal, "internal error")
	}
	log.WarnContext(ctx, "database unavailable", "err", err)
	return fail(codes.Unavailable, ReasonDatabaseUnavailable, time.Second, "database unavailable")
}
