package auth

import (
	"errors"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// refusal is a ValidateSession refusal as authsvc sends it.
func refusal(reason string, meta map[string]string) error {
	st, err := status.New(codes.Unauthenticated, "no").WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: "auth.gatehouse.dev", Metadata: meta})
	if err != nil {
		panic(err)
	}
	return st.Err()
}

// TestReasonOf: the 4401 close reason for each way authsvc refuses a held session.
func TestReasonOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{refusal("SESSION_REVOKED", map[string]string{"end_reason": "logout"}), "logout"},
		{refusal("SESSION_REVOKED", map[string]string{"end_reason": "password_changed"}), "password_changed"},
		{refusal("SESSION_REVOKED", map[string]string{"end_reason": "<script>"}), "revoked"}, // never echo an unknown reason
		{refusal("SESSION_REVOKED", nil), "revoked"},
		{refusal("SESSION_EXPIRED", nil), "expired"},
		{refusal("USER_INACTIVE", nil), "user_disabled"},
		{refusal("SESSION_UNKNOWN", nil), "ended"},
		{status.Error(codes.Unauthenticated, "no details"), "ended"},
		{errors.New("not a status"), "ended"},
	} {
		if got := reasonOf(tc.err); got != tc.want {
			t.Errorf("reasonOf(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
