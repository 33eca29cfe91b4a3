package e2e

import (
	"bufio"
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
)

// metric reads one sample of the edge's /metrics, e.g.
// `gatehouse_edge_session_cache_lookups_total{result="hit"}`; 0 if absent.
func metric(t testing.TB, edgeAddr, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + metricsAddr(edgeAddr) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", series, err)
			}
			return f
		}
	}
	return 0
}

const (
	cacheHits   = `gatehouse_edge_session_cache_lookups_total{result="hit"}`
	validations = `gatehouse_edge_validate_session_seconds_count`
)

// openCached opens a socket for l twice and closes both, until the second open is
// answered from the edge's cache (the lease may need a moment after start).
func openCached(t *testing.T, s *system, l *authv1.LoginResponse) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		mustOpen(t, s.edge.addr, l).Close()
		hits := metric(t, s.edge.addr, cacheHits)
		mustOpen(t, s.edge.addr, l).Close()
		if metric(t, s.edge.addr, cacheHits) > hits {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the edge never answered a reconnect from its session cache")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSessionCache: a session the edge has seen reconnects without a call to authsvc,
// and yet a session is refused (401) by the first handshake after any call that ended
// it has returned: the cache never outlives an end.
func TestSessionCache(t *testing.T) {
	// A lease of 250 ms, not the default 50 ms: renewing it takes a marker's
	// round trip through PostgreSQL, which a loaded machine (the race detector) can
	// stretch past 50 ms (CI saw it), and a lapsed lease sends a handshake to authsvc, which the
	// first subtest counts. The guarantee under test is the same for any lease.
	s := newSystem(t, []string{"AUTHSVC_CACHE_LEASE=250ms"}, nil)
	ctx := adminCtx(t.Context())

	t.Run("a reconnect needs no call to authsvc", func(t *testing.T) {
		u, pw := s.newUser(t)
		l := s.login(t, u, pw)
		openCached(t, s, l)
		hits, calls := metric(t, s.edge.addr, cacheHits), metric(t, s.edge.addr, validations)
		for range 5 {
			echo(t, mustOpen(t, s.edge.addr, l), "cached")
		}
		if got := metric(t, s.edge.addr, cacheHits) - hits; got != 5 {
			t.Errorf("cache hits = %v, want 5", got)
		}
		if got := metric(t, s.edge.addr, validations) - calls; got != 0 {
			t.Errorf("ValidateSession calls = %v, want 0", got)
		}
		// Another user's id in the path is still refused from the cache.
		if ws, code := dialWS(t, wsURL(s.edge.addr, u.GetId()+1), cookieHeader(s.edge.addr, l.GetToken())); ws != nil || code != http.StatusForbidden {
			t.Errorf("cached session on another user's path: %d, want 403", code)
		}
	})

	ends := []struct {
		name   string
		reason string
		end    func(t *testing.T, u *authv1.User, l *authv1.LoginResponse)
	}{
		{"Logout", "SESSION_REVOKED", func(t *testing.T, _ *authv1.User, l *authv1.LoginResponse) {
			if _, err := s.authC.Logout(t.Context(), &authv1.LogoutRequest{Token: l.GetToken()}); err != nil {
				t.Fatal(err)
			}
		}},
		{"RevokeSession", "SESSION_REVOKED", func(t *testing.T, _ *authv1.User, l *authv1.LoginResponse) {
			if _, err := s.admin.RevokeSession(ctx, &authv1.RevokeSessionRequest{SessionId: l.GetSession().GetId()}); err != nil {
				t.Fatal(err)
			}
		}},
		{"RevokeUserSessions", "SESSION_REVOKED", func(t *testing.T, u *authv1.User, _ *authv1.LoginResponse) {
			if _, err := s.admin.RevokeUserSessions(ctx, &authv1.RevokeUserSessionsRequest{UserId: u.GetId()}); err != nil {
				t.Fatal(err)
			}
		}},
		{"SetPassword", "SESSION_REVOKED", func(t *testing.T, u *authv1.User, _ *authv1.LoginResponse) {
			if _, err := s.admin.SetPassword(ctx, &authv1.SetPasswordRequest{UserId: u.GetId(), Password: "another password"}); err != nil {
				t.Fatal(err)
			}
		}},
		{"SetUserActive false", "SESSION_REVOKED", func(t *testing.T, u *authv1.User, _ *authv1.LoginResponse) {
			if _, err := s.admin.SetUserActive(ctx, &authv1.SetUserActiveRequest{UserId: u.GetId(), Active: false}); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, e := range ends {
		t.Run("ended by "+e.name+": the next handshake is refused", func(t *testing.T) {
			for range 10 {
				u, pw := s.newUser(t)
				l := s.login(t, u, pw)
				openCached(t, s, l)
				ws := mustOpen(t, s.edge.addr, l)
				e.end(t, u, l)
				if ws, code, reason := dialWSReason(t, wsURL(s.edge.addr, u.GetId()), cookieHeader(s.edge.addr, l.GetToken())); ws != nil || code != http.StatusUnauthorized || reason != e.reason {
					t.Fatalf("handshake right after %s returned: %d %s, want 401 %s", e.name, code, reason, e.reason)
				}
				expectClose(t, ws, 4401, "", closeWithin)
			}
		})
	}

	t.Run("without the event feed the cache is not used", func(t *testing.T) {
		u, pw := s.newUser(t)
		l := s.login(t, u, pw)
		openCached(t, s, l)
		if err := s.auth.stop(t); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		for ctx.Err() == nil {
			// The edge notices the lost stream at once; until then a cached answer
			// is still covered by its lease.
			if _, code := dialWS(t, wsURL(s.edge.addr, u.GetId()), cookieHeader(s.edge.addr, l.GetToken())); code == http.StatusServiceUnavailable {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		hits := metric(t, s.edge.addr, cacheHits)
		for range 3 {
			if _, code := dialWS(t, wsURL(s.edge.addr, u.GetId()), cookieHeader(s.edge.addr, l.GetToken())); code != http.StatusServiceUnavailable {
				t.Fatalf("handshake with authsvc gone: %d, want 503", code)
			}
		}
		if got := metric(t, s.edge.addr, cacheHits); got != hits {
			t.Errorf("cache hits with authsvc gone: %v more", got-hits)
		}
	})
}

// TestSessionCacheOff: an authsvc that grants no lease (AUTHSVC_CACHE_LEASE=0) makes
// every handshake a call to authsvc.
func TestSessionCacheOff(t *testing.T) {
	s := newSystem(t, []string{"AUTHSVC_CACHE_LEASE=0"}, nil)
	for deadline := time.Now().Add(5 * time.Second); metric(t, s.edge.addr, `gatehouse_edge_session_cache_leases_total{outcome="refused"}`) < 1; {
		if time.Now().After(deadline) {
			t.Fatal("the edge never asked authsvc for a lease")
		}
		time.Sleep(20 * time.Millisecond)
	}
	u, pw := s.newUser(t)
	l := s.login(t, u, pw)
	calls := metric(t, s.edge.addr, validations)
	for range 5 {
		mustOpen(t, s.edge.addr, l).Close()
	}
	if got := metric(t, s.edge.addr, validations) - calls; got != 5 {
		t.Errorf("ValidateSession calls = %v, want 5", got)
	}
	if got := metric(t, s.edge.addr, cacheHits); got != 0 {
		t.Errorf("cache hits = %v, want 0", got)
	}
}
