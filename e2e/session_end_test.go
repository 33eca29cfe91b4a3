package e2e

import (
	"context"
	"net/http"
	"net/url"
	"testing"
	"time"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/gatehouse/gatehouse/authsvc/pgtest"
)

const closeWithin = 5 * time.Second

func TestLiveSessionEnd(t *testing.T) {
	s := newSystem(t, nil, nil)
	ctx := adminCtx(t.Context())

	t.Run("logout in one place closes both sockets of the session", func(t *testing.T) {
		u, pw := s.newUser(t)
		l := s.login(t, u, pw)
		other := s.login(t, u, pw) // another session of the same user stays open
		a, b := mustOpen(t, s.edge.addr, l), mustOpen(t, s.edge.addr, l)
		c := mustOpen(t, s.edge.addr, other)
		echo(t, a, "a")
		echo(t, b, "b")
		if _, err := s.authC.Logout(t.Context(), &authv1.LogoutRequest{Token: l.GetToken()}); err != nil {
			t.Fatal(err)
		}
		expectClose(t, a, 4401, "logout", closeWithin)
		expectClose(t, b, 4401, "logout", closeWithin)
		echo(t, c, "other session unaffected")
	})
	t.Run("logout through the page closes the socket", func(t *testing.T) {
		u, pw := s.newUser(t)
		c := browser(t)
		base := "http://" + s.edge.addr
		resp := postForm(t, c, base+"/login", url.Values{"username": {u.GetUsername()}, "password": {pw}}, base)
		if resp.StatusCode != 303 {
			t.Fatalf("login: %d", resp.StatusCode)
		}
		tok := ""
		for _, ck := range c.Jar.Cookies(mustURL(base)) {
			if ck.Name == "sessionid" {
				tok = ck.Value
			}
		}
		ws, code := dialWS(t, wsURL(s.edge.addr, u.GetId()), cookieHeader(s.edge.addr, tok))
		if ws == nil {
			t.Fatalf("dial: %d", code)
		}
		resp = postForm(t, c, base+"/logout", nil, base)
		if resp.StatusCode != 303 {
			t.Fatalf("logout: %d", resp.StatusCode)
		}
		expectClose(t, ws, 4401, "logout", closeWithin)
	})
	t.Run("admin revoke", func(t *testing.T) {
		u, pw := s.newUser(t)
		l := s.login(t, u, pw)
		ws := mustOpen(t, s.edge.addr, l)
		if _, err := s.admin.RevokeSession(ctx, &authv1.RevokeSessionRequest{SessionId: l.GetSession().GetId()}); err != nil {
			t.Fatal(err)
		}
		expectClose(t, ws, 4401, "revoked", closeWithin)
	})
	t.Run("admin revokes all of a user's sessions", func(t *testing.T) {
		u, pw := s.newUser(t)
		ws1 := mustOpen(t, s.edge.addr, s.login(t, u, pw))
		ws2 := mustOpen(t, s.edge.addr, s.login(t, u, pw))
		resp, err := s.admin.RevokeUserSessions(ctx, &authv1.RevokeUserSessionsRequest{UserId: u.GetId()})
		if err != nil || resp.GetRevokedCount() != 2 {
			t.Fatalf("RevokeUserSessions = %v, %v; want 2", resp, err)
		}
		expectClose(t, ws1, 4401, "revoked", closeWithin)
		expectClose(t, ws2, 4401, "revoked", closeWithin)
	})
	t.Run("user deactivated", func(t *testing.T) {
		u, pw := s.newUser(t)
		ws := mustOpen(t, s.edge.addr, s.login(t, u, pw))
		if _, err := s.admin.SetUserActive(ctx, &authv1.SetUserActiveRequest{UserId: u.GetId(), Active: false}); err != nil {
			t.Fatal(err)
		}
		expectClose(t, ws, 4401, "user_disabled", closeWithin)
	})
	t.Run("password changed", func(t *testing.T) {
		u, pw := s.newUser(t)
		ws := mustOpen(t, s.edge.addr, s.login(t, u, pw))
		if _, err := s.admin.SetPassword(ctx, &authv1.SetPasswordRequest{UserId: u.GetId(), Password: "a new password"}); err != nil {
			t.Fatal(err)
		}
		expectClose(t, ws, 4401, "password_changed", closeWithin)
	})
}

func TestSessionExpiryClosesSocket(t *testing.T) {
	s := newSystem(t, []string{"AUTHSVC_SESSION_TTL=2s", "AUTHSVC_CLEANUP_INTERVAL=200ms"}, nil)
	u, pw := s.newUser(t)
	l := s.login(t, u, pw)
	ws := mustOpen(t, s.edge.addr, l)
	echo(t, ws, "before expiry")
	expectClose(t, ws, 4401, "expired", 5*time.Second)

	// The periodic cleanup deletes the expired session.
	deadline := time.Now().Add(5 * time.Second)
	for {
		var n int
		if err := s.db.QueryRow(t.Context(), `SELECT count(*) FROM sessions WHERE id = $1`, l.GetSession().GetId()).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("expired session still stored 5s after expiry with a 200ms cleanup interval")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestDatabaseGone: when authsvc's database disappears, health turns NOT_SERVING,
// ValidateSession answers UNAVAILABLE, and the edge refuses handshakes with 503 and
// reports not ready.
func TestDatabaseGone(t *testing.T) {
	db, drop, err := pgtest.Create(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = drop() })
	auth := start(t, "authsvc", append(authEnv("127.0.0.1:0"), "DATABASE_URL="+db)...)
	edge := startEdge(t, auth.addr)
	waitReady(t, edge.addr)
	cc := dial(t, auth.addr)
	s := &system{authC: authv1.NewAuthServiceClient(cc), admin: authv1.NewAdminServiceClient(cc)}
	u, pw := s.newUser(t)
	l := s.login(t, u, pw)
	ws := mustOpen(t, edge.addr, l)
	echo(t, ws, "before")

	if err := drop(); err != nil {
		t.Fatal(err)
	}
	hc := healthpb.NewHealthClient(cc)
	deadline := time.Now().Add(10 * time.Second)
	for {
		h, err := hc.Check(t.Context(), &healthpb.HealthCheckRequest{})
		if err == nil && h.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health still %v, %v 10s after the database went away", h, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	_, err = s.authC.ValidateSession(t.Context(), &authv1.ValidateSessionRequest{Token: l.GetToken()})
	if status.Code(err) != codes.Unavailable || errorInfo(err).GetReason() != "DATABASE_UNAVAILABLE" {
		t.Fatalf("ValidateSession without a database = %v %v, want UNAVAILABLE DATABASE_UNAVAILABLE", err, errorInfo(err))
	}
	if _, code := dialWS(t, wsURL(edge.addr, u.GetId()), cookieHeader(edge.addr, l.GetToken())); code != 503 {
		t.Fatalf("handshake without a database = %d, want 503", code)
	}
	resp, err := http.Get("http://" + edge.addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("/readyz = %d, want 503", resp.StatusCode)
	}
	echo(t, ws, "an open socket is not dropped for an outage") // it cannot be re-checked, so it stays
}

// TestTwoReplicasStreamEveryEvent: an event caused through one authsvc replica is
// streamed by both.
func TestTwoReplicasStreamEveryEvent(t *testing.T) {
	a, b := startAuth(t), startAuth(t)
	ca, cb := dial(t, a.addr), dial(t, b.addr)
	s := &system{authC: authv1.NewAuthServiceClient(ca), admin: authv1.NewAdminServiceClient(ca)}
	u, pw := s.newUser(t)
	l := s.login(t, u, pw)

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var streams []authv1.AuthService_WatchSessionEventsClient
	for _, cc := range []*grpc.ClientConn{ca, cb} {
		st, err := authv1.NewAuthServiceClient(cc).WatchSessionEvents(frontCtx(ctx), &authv1.WatchSessionEventsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if md, err := st.Header(); md == nil || err != nil {
			_, err := st.Recv()
			t.Fatalf("subscription not live: %v", err)
		}
		streams = append(streams, st)
	}
	if _, err := s.authC.Logout(t.Context(), &authv1.LogoutRequest{Token: l.GetToken()}); err != nil {
		t.Fatal(err)
	}
	for i, st := range streams {
		for {
			ev, err := st.Recv()
			if err != nil {
				t.Fatalf("replica %d: %v", i, err)
			}
			if ev.GetSessionId() != l.GetSession().GetId() {
				continue // another test's session
			}
			if ev.GetUserId() != u.GetId() || ev.GetReason() != authv1.SessionEndReason_SESSION_END_REASON_LOGOUT || ev.GetEndedAt() == nil {
				t.Fatalf("replica %d event = %v", i, ev)
			}
			break
		}
	}
}

// TestGracefulShutdown: SIGTERM closes open sockets with 1001 and the edge exits 0.
func TestGracefulShutdown(t *testing.T) {
	s := newSystem(t, nil, nil)
	u, pw := s.newUser(t)
	ws := mustOpen(t, s.edge.addr, s.login(t, u, pw))
	echo(t, ws, "before")
	errc := make(chan error, 1)
	go func() { errc <- s.edge.stop(t) }()
	expectClose(t, ws, websocket.CloseGoingAway, "server shutting down", closeWithin)
	_ = ws.Close()
	if err := <-errc; err != nil {
		t.Fatalf("edgesvc exit: %v", err)
	}
}

// TestSessionLimitClosesOldest: with AUTHSVC_MAX_SESSIONS_PER_USER=2, a third login
// ends the user's oldest session, whose socket closes with 4401 "session_limit"; the
// others keep working.
func TestSessionLimitClosesOldest(t *testing.T) {
	s := newSystem(t, []string{"AUTHSVC_MAX_SESSIONS_PER_USER=2"}, nil)
	u, pw := s.newUser(t)
	first := mustOpen(t, s.edge.addr, s.login(t, u, pw))
	second := mustOpen(t, s.edge.addr, s.login(t, u, pw))
	third := mustOpen(t, s.edge.addr, s.login(t, u, pw))
	expectClose(t, first, 4401, "session_limit", closeWithin)
	echo(t, second, "the second session lives")
	echo(t, third, "and the third")
}
