package server

import (
	"errors"
	"testing"
	"time"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	"google.golang.org/grpc/codes"
)

// TestLoginOutcome: what Login returns is classified by its reason, then its code.
func TestLoginOutcome(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{nil, "ok"},
		{errBadCredentials, "invalid_credentials"},
		{fail(codes.ResourceExhausted, authv1.ErrorReason_ERROR_REASON_RATE_LIMITED, time.Minute, "too many"), "rate_limited"},
		{fail(codes.ResourceExhausted, authv1.ErrorReason_ERROR_REASON_LOGINS_IN_PROGRESS, time.Second, "busy"), "busy"},
		{failf(codes.InvalidArgument, authv1.ErrorReason_ERROR_REASON_CREDENTIALS_REQUIRED, "required"), "bad_request"},
		{failf(codes.InvalidArgument, authv1.ErrorReason_ERROR_REASON_INVALID_CLIENT_ADDRESS, "address"), "bad_request"},
		{fail(codes.Unavailable, authv1.ErrorReason_ERROR_REASON_DATABASE_UNAVAILABLE, time.Second, "down"), "error"},
		{failf(codes.Canceled, authv1.ErrorReason_ERROR_REASON_CANCELED, "canceled"), "error"},
		{errors.New("not a status"), "error"},
	} {
		if got := loginOutcome(c.err); got != c.want {
			t.Errorf("loginOutcome(%v) = %s, want %s", c.err, got, c.want)
		}
	}
}
