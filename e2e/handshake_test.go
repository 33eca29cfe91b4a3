package e2e

import (
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
)

// TestHandshakeTable shows every row of the handshake table in the README against
// the real binaries and PostgreSQL.
func TestHandshakeTable(t *testing.T) {
	s := newSystem(t, nil, []string{"EDGESVC_ALLOWED_ORIGINS="})
	alice, pw := s.newUser(t)
	bob, bobPW := s.newUser(t)
	l := s.login(t, alice, pw)
	bobLogin := s.login(t, bob, bobPW)
	edge := s.edge.addr
	url := wsURL(edge, alice.GetId())

	expired := s.login(t, alice, pw)
	if _, err := s.db.Exec(t.Context(), `UPDATE sessions SET expires_at = now() - interval '1 second' WHERE id = $1`, expired.GetSession().GetId()); err != nil {
		t.Fatal(err)
	}
	revoked := s.login(t, alice, pw)
	if _, err := s.admin.RevokeSession(adminCtx(t.Context()), &authv1.RevokeSessionRequest{SessionId: revoked.GetSession().GetId()}); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name   string
		url    string
		hdr    http.Header
		want   int
		reason string // the Gatehouse-Reason header of a refusal
	}{
		{"valid cookie, own id", url, cookieHeader(edge, l.GetToken()), http.StatusSwitchingProtocols, ""},
		{"valid bearer, no origin (non-browser client)", url, http.Header{"Authorization": {"Bearer " + l.GetToken()}}, http.StatusSwitchingProtocols, ""},
		{"no credential", url, http.Header{"Origin": {"http://" + edge}}, http.StatusUnauthorized, "NO_CREDENTIAL"},
		{"unknown session", url, cookieHeader(edge, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), http.StatusUnauthorized, "SESSION_UNKNOWN"},
		{"malformed cookie", url, cookieHeader(edge, "not a token!"), http.StatusUnauthorized, "NO_CREDENTIAL"},
		{"malformed bearer", url, http.Header{"Authorization": {"Basic " + l.GetToken()}}, http.StatusUnauthorized, "NO_CREDENTIAL"},
		{"expired session", url, cookieHeader(edge, expired.GetToken()), http.StatusUnauthorized, "SESSION_EXPIRED"},
		{"revoked session", url, cookieHeader(edge, revoked.GetToken()), http.StatusUnauthorized, "SESSION_REVOKED"},
		{"another user's id", url, cookieHeader(edge, bobLogin.GetToken()), http.StatusForbidden, "WRONG_USER"},
		{"origin of another site", url, http.Header{"Cookie": {"sessionid=" + l.GetToken()}, "Origin": {"http://evil.example"}}, http.StatusForbidden, "ORIGIN_NOT_ALLOWED"},
		{"origin null", url, http.Header{"Cookie": {"sessionid=" + l.GetToken()}, "Origin": {"null"}}, http.StatusForbidden, "ORIGIN_NOT_ALLOWED"},
		{"user id not a number", "ws://" + edge + "/ws/myapp/abc/", cookieHeader(edge, l.GetToken()), http.StatusNotFound, "NO_ROUTE"},
		{"user id with leading zero", "ws://" + edge + "/ws/myapp/0" + itoa(alice.GetId()) + "/", cookieHeader(edge, l.GetToken()), http.StatusNotFound, "NO_ROUTE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ws, code, reason := dialWSReason(t, tc.url, tc.hdr)
			if code != tc.want || reason != tc.reason {
				t.Fatalf("handshake answered %d %q, want %d %q", code, reason, tc.want, tc.reason)
			}
			if ws != nil {
				echo(t, ws, "hello")
			}
		})
	}

	t.Run("plain GET without upgrade is refused", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+edge+"/ws/myapp/"+itoa(alice.GetId())+"/", nil)
		req.AddCookie(&http.Cookie{Name: "sessionid", Value: l.GetToken()})
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("status %d, want 400", resp.StatusCode)
		}
	})
}

func TestHandshakeAllowedOrigins(t *testing.T) {
	s := newSystem(t, nil, []string{"EDGESVC_ALLOWED_ORIGINS=https://app.example.com, http://other.example:8080"})
	u, pw := s.newUser(t)
	l := s.login(t, u, pw)
	url := wsURL(s.edge.addr, u.GetId())
	for origin, want := range map[string]int{
		"https://app.example.com":    http.StatusSwitchingProtocols,
		"http://other.example:8080":  http.StatusSwitchingProtocols,
		"http://" + s.edge.addr:      http.StatusSwitchingProtocols, // the edge's own page always may
		"https://evil.example.com":   http.StatusForbidden,
		"https://app.example.com.ev": http.StatusForbidden,
	} {
		_, code := dialWS(t, url, http.Header{"Cookie": {"sessionid=" + l.GetToken()}, "Origin": {origin}})
		if code != want {
			t.Errorf("Origin %s: %d, want %d", origin, code, want)
		}
	}
}

// TestHandshakeFailsClosed: with authsvc unreachable or too slow, no socket opens.
func TestHandshakeFailsClosed(t *testing.T) {
	s := newSystem(t, nil, nil)
	u, pw := s.newUser(t)
	l := s.login(t, u, pw)

	t.Run("authsvc unreachable", func(t *testing.T) {
		edge := startEdge(t, freeAddr(t))
		_, code, reason := dialWSReason(t, wsURL(edge.addr, u.GetId()), cookieHeader(edge.addr, l.GetToken()))
		if code != http.StatusServiceUnavailable || reason != "AUTH_UNAVAILABLE" {
			t.Fatalf("handshake answered %d %q, want 503 AUTH_UNAVAILABLE", code, reason)
		}
	})
	t.Run("authsvc too slow", func(t *testing.T) {
		// A listener that accepts connections and never answers.
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer lis.Close()
		go func() {
			for {
				c, err := lis.Accept()
				if err != nil {
					return
				}
				defer c.Close()
			}
		}()
		edge := startEdge(t, lis.Addr().String(), "EDGESVC_AUTH_TIMEOUT=300ms")
		start := time.Now()
		_, code := dialWS(t, wsURL(edge.addr, u.GetId()), cookieHeader(edge.addr, l.GetToken()))
		if code != http.StatusServiceUnavailable {
			t.Fatalf("handshake answered %d, want 503", code)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("refusal took %v; the auth deadline is 300ms", d)
		}
	})
	t.Run("authsvc stopped after start", func(t *testing.T) {
		if err := s.auth.stop(t); err != nil {
			t.Fatalf("authsvc did not stop cleanly: %v", err)
		}
		_, code := dialWS(t, wsURL(s.edge.addr, u.GetId()), cookieHeader(s.edge.addr, l.GetToken()))
		if code != http.StatusServiceUnavailable {
			t.Fatalf("handshake answered %d, want 503", code)
		}
		resp, err := http.Get("http://" + s.edge.addr + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		// The body tells an anonymous prober nothing of the topology; the log has why.
		if body := readBody(resp); resp.StatusCode != http.StatusServiceUnavailable || body != "not ready\n" {
			t.Fatalf("/readyz = %d %q with authsvc down, want 503 \"not ready\"", resp.StatusCode, body)
		}
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) { // the log arrives through a pipe
			if logs := s.edge.logs(); strings.Contains(logs, "not ready") && strings.Contains(logs, "err=") {
				break
			} else if time.Now().After(deadline) {
				t.Fatalf("the edge did not log why it is not ready:\n%s", logs)
			}
		}
	})
}

// TestSocketCaps: the built edge caps sockets per user as configured (429
// TOO_MANY_SOCKETS before the upgrade) and refuses a negative cap at start.
func TestSocketCaps(t *testing.T) {
	s := newSystem(t, nil, []string{"EDGESVC_MAX_SOCKETS_PER_USER=2"})
	u, pw := s.newUser(t)
	l := s.login(t, u, pw)
	mustOpen(t, s.edge.addr, l)
	mustOpen(t, s.edge.addr, l)
	ws, code, reason := dialWSReason(t, wsURL(s.edge.addr, u.GetId()), cookieHeader(s.edge.addr, l.GetToken()))
	if ws != nil || code != http.StatusTooManyRequests || reason != "TOO_MANY_SOCKETS" {
		t.Fatalf("third socket of a user capped at 2: %d %q", code, reason)
	}
	other, opw := s.newUser(t)
	mustOpen(t, s.edge.addr, s.login(t, other, opw)) // another user is not affected

	cmd := exec.CommandContext(t.Context(), filepath.Join(binDir, "edgesvc"))
	cmd.Env = []string{"EDGESVC_MAX_SOCKETS_PER_USER=-1"}
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "EDGESVC_MAX_SOCKETS_PER_USER") {
		t.Fatalf("a negative cap: %v %s; want a refusal naming it", err, out)
	}
}
