package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/gatehouse/gatehouse/authsvc/internal/server"
)

const frontToken = "test-front-end-token-0123456789abc"

// TestFrontEndToken: with a front-end token configured, only its holders (and the
// admin token's) are front ends. Anyone else may sign in and validate, but the
// session records the caller's own address and user agent, forged addresses get no
// fresh failure budget, the event feed is refused, and a wrong token is refused on
// every call rather than taken for none.
func TestFrontEndToken(t *testing.T) {
	e := newEnv(t, server.Config{AdminToken: adminToken, FrontendToken: frontToken, MaxFailuresPerAddress: 3})
	e.createUser(t, "alice", "password1")
	ctx := t.Context()
	forged := &authv1.LoginRequest{Username: "alice", Password: "password1", ClientAddress: "203.0.113.9", UserAgent: "forged-agent"}

	t.Run("no credential: the caller's own address and agent are recorded", func(t *testing.T) {
		l, err := e.auth.Login(ctx, forged)
		if err != nil {
			t.Fatal(err)
		}
		if s := l.GetSession(); s.GetClientAddress() != "127.0.0.1" || !strings.HasPrefix(s.GetUserAgent(), "grpc-go/") {
			t.Fatalf("session recorded %q, %q; want the peer's 127.0.0.1 and its grpc-go user agent", s.GetClientAddress(), s.GetUserAgent())
		}
	})
	for name, tok := range map[string]string{"front-end token": frontToken, "admin token": adminToken} {
		t.Run(name+": the named address and agent are recorded", func(t *testing.T) {
			l, err := e.auth.Login(withAdmin(ctx, tok), forged)
			if err != nil {
				t.Fatal(err)
			}
			if s := l.GetSession(); s.GetClientAddress() != "203.0.113.9" || s.GetUserAgent() != "forged-agent" {
				t.Fatalf("session recorded %q, %q; want what the front end named", s.GetClientAddress(), s.GetUserAgent())
			}
		})
	}
	t.Run("a wrong or malformed token is refused on every call", func(t *testing.T) {
		for _, md := range []string{"Bearer wrong-token", "Basic " + frontToken, "Bearer "} {
			bad := metadata.AppendToOutgoingContext(ctx, "authorization", md)
			_, err := e.auth.Login(bad, forged)
			wantCode(t, err, codes.Unauthenticated, "FRONTEND_TOKEN_INVALID")
			_, err = e.auth.ValidateSession(bad, &authv1.ValidateSessionRequest{Token: "x"})
			wantCode(t, err, codes.Unauthenticated, "FRONTEND_TOKEN_INVALID")
			_, err = trySubscribe(bad, e.auth)
			wantCode(t, err, codes.Unauthenticated, "FRONTEND_TOKEN_INVALID")
		}
	})
	t.Run("the event feed is for front ends only", func(t *testing.T) {
		_, err := trySubscribe(ctx, e.auth)
		wantCode(t, err, codes.Unauthenticated, "FRONTEND_TOKEN_REQUIRED")
		_, err = e.auth.SyncSessionEvents(ctx, &authv1.SyncSessionEventsRequest{Marker: "m"})
		wantCode(t, err, codes.Unauthenticated, "FRONTEND_TOKEN_REQUIRED")
		subscribe(t, withAdmin(ctx, frontToken), e.auth)
		if _, err := e.auth.SyncSessionEvents(withAdmin(ctx, frontToken), &authv1.SyncSessionEventsRequest{Marker: "m"}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("forged addresses share the caller's failure budget", func(t *testing.T) {
		for i := range 3 {
			bad := &authv1.LoginRequest{Username: "nobody", Password: "x", ClientAddress: fmt.Sprint("198.51.100.", i+1)}
			_, err := e.auth.Login(ctx, bad)
			wantCode(t, err, codes.Unauthenticated, "INVALID_CREDENTIALS")
		}
		_, err := e.auth.Login(ctx, &authv1.LoginRequest{Username: "alice", Password: "password1", ClientAddress: "198.51.100.99"})
		wantCode(t, err, codes.ResourceExhausted, "RATE_LIMITED")
		// The front end's own clients are counted apart.
		if _, err := e.auth.Login(withAdmin(ctx, frontToken), &authv1.LoginRequest{Username: "alice", Password: "password1", ClientAddress: "198.51.100.99"}); err != nil {
			t.Fatalf("a client of the front end at another address: %v", err)
		}
	})
}

// TestFrontEndWithoutCredential: with no front-end credential configured, a loopback
// peer is a front end (the one-machine default), and a bearer token is still checked.
func TestFrontEndWithoutCredential(t *testing.T) {
	e := newEnv(t, server.Config{AdminToken: adminToken})
	e.createUser(t, "alice", "password1")
	l, err := e.auth.Login(t.Context(), &authv1.LoginRequest{Username: "alice", Password: "password1", ClientAddress: "203.0.113.9"})
	if err != nil || l.GetSession().GetClientAddress() != "203.0.113.9" {
		t.Fatalf("loopback login naming an address: %v, %v", l.GetSession(), err)
	}
	subscribe(t, t.Context(), e.auth)
	_, err = e.auth.Login(withAdmin(t.Context(), "some-token"), &authv1.LoginRequest{Username: "alice", Password: "password1"})
	wantCode(t, err, codes.Unauthenticated, "FRONTEND_TOKEN_INVALID")
}

// TestEventStreamCaps: streams are capped per caller and in total; a closed stream
// frees its place.
func TestEventStreamCaps(t *testing.T) {
	t.Run("per caller", func(t *testing.T) {
		e := newEnv(t, server.Config{MaxEventStreamsPerCaller: 2})
		ctx, cancel := context.WithCancel(t.Context())
		subscribe(t, ctx, e.auth)
		subscribe(t, t.Context(), e.auth)
		_, err := trySubscribe(t.Context(), e.auth)
		wantCode(t, err, codes.ResourceExhausted, "TOO_MANY_STREAMS")
		cancel()
		waitSubscribe(t, e.auth)
	})
	t.Run("in total", func(t *testing.T) {
		e := newEnv(t, server.Config{MaxEventStreams: 1, MaxEventStreamsPerCaller: -1})
		ctx, cancel := context.WithCancel(t.Context())
		subscribe(t, ctx, e.auth)
		_, err := trySubscribe(t.Context(), e.auth)
		wantCode(t, err, codes.ResourceExhausted, "TOO_MANY_STREAMS")
		if retryDelay(err) <= 0 {
			t.Fatal("TOO_MANY_STREAMS without RetryInfo")
		}
		cancel()
		waitSubscribe(t, e.auth)
	})
}

// waitSubscribe subscribes once the server has seen a cancelled stream end.
func waitSubscribe(t *testing.T, c authv1.AuthServiceClient) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := trySubscribe(t.Context(), c)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no stream after one closed: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
