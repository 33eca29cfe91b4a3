package server

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
)

// TestLogCallLevels: what every caller meets in normal use (a wrong password, an
// expired session, a bad argument) is logged at debug, so an anonymous prober cannot
// fill the log at info; a wrong admin token is a warning; a failure of ours an error.
func TestLogCallLevels(t *testing.T) {
	for _, c := range []struct {
		method string
		err    error
		want   string // the level logged at info, or "" for nothing
	}{
		{"/gatehouse.auth.v1.AuthService/ValidateSession", nil, ""},
		{"/gatehouse.auth.v1.AuthService/ValidateSession", failf(codes.Unauthenticated, authv1.ErrorReason_ERROR_REASON_SESSION_UNKNOWN, "x"), ""},
		{"/gatehouse.auth.v1.AuthService/Login", failf(codes.Unauthenticated, authv1.ErrorReason_ERROR_REASON_INVALID_CREDENTIALS, "x"), ""},
		{"/gatehouse.auth.v1.AuthService/Login", failf(codes.InvalidArgument, authv1.ErrorReason_ERROR_REASON_CREDENTIALS_REQUIRED, "x"), ""},
		{"/gatehouse.auth.v1.AdminService/GetUser", failf(codes.NotFound, authv1.ErrorReason_ERROR_REASON_USER_NOT_FOUND, "x"), ""},
		{"/gatehouse.auth.v1.AdminService/ListUsers", failf(codes.Unauthenticated, authv1.ErrorReason_ERROR_REASON_ADMIN_TOKEN_REQUIRED, "x"), ""},
		{"/gatehouse.auth.v1.AdminService/ListUsers", failf(codes.Unauthenticated, authv1.ErrorReason_ERROR_REASON_ADMIN_TOKEN_INVALID, "x"), "WARN"},
		{"/gatehouse.auth.v1.AuthService/Login", failf(codes.Unauthenticated, authv1.ErrorReason_ERROR_REASON_FRONTEND_TOKEN_INVALID, "x"), "WARN"},
		{"/gatehouse.auth.v1.AuthService/WatchSessionEvents", failf(codes.Unauthenticated, authv1.ErrorReason_ERROR_REASON_FRONTEND_TOKEN_REQUIRED, "x"), ""},
		{"/gatehouse.auth.v1.AuthService/Login", failf(codes.ResourceExhausted, authv1.ErrorReason_ERROR_REASON_RATE_LIMITED, "x"), "INFO"},
		{"/gatehouse.auth.v1.AuthService/Login", status.Error(codes.Unavailable, "db"), "INFO"},
		{"/gatehouse.auth.v1.AuthService/Login", status.Error(codes.Internal, "bug"), "ERROR"},
	} {
		var buf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
		logCall(context.Background(), log, c.method, time.Now(), c.err)
		got := ""
		if line := buf.String(); line != "" {
			got = strings.TrimPrefix(strings.Fields(line)[1], "level=")
		}
		if got != c.want {
			t.Errorf("%s %v: logged at %q, want %q", c.method, status.Code(c.err), got, c.want)
		}
	}
}
