package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
)

// TestBehindAProxy: an edge behind a TLS-terminating proxy (EDGESVC_PUBLIC_URL
// https, EDGESVC_TRUSTED_PROXIES the proxy's address) sets and reads only the
// __Host- Secure cookie, checks the Origin's scheme as well as its host, and takes
// the client's address from X-Forwarded-For — from the trusted proxy only.
func TestBehindAProxy(t *testing.T) {
	const public = "https://chat.example.com"
	s := newSystem(t, nil, []string{"EDGESVC_PUBLIC_URL=" + public, "EDGESVC_TRUSTED_PROXIES=127.0.0.1"})
	u, pw := s.newUser(t)
	base := "http://" + s.edge.addr
	login := func(t *testing.T, origin, forwardedFor string) *http.Response {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, base+"/login",
			strings.NewReader(url.Values{"username": {u.GetUsername()}, "password": {pw}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", origin)
		req.Header.Set("X-Forwarded-For", forwardedFor)
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}

	if resp := login(t, "http://chat.example.com", "198.51.100.9"); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a form from the http origin: %d, want 403 (the scheme counts)", resp.StatusCode)
	}
	resp := login(t, public, "1.1.1.1, 198.51.100.9") // the proxy appended the client's address
	var ck *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "__Host-sessionid" {
			ck = c
		}
		if c.Name == "sessionid" {
			t.Fatal("the plain sessionid cookie was set behind an https public URL")
		}
	}
	if resp.StatusCode != http.StatusSeeOther || ck == nil || !ck.Secure || ck.Path != "/" || ck.Domain != "" || !ck.HttpOnly {
		t.Fatalf("login: %d, cookie %+v; want __Host-sessionid, Secure, Path=/, no Domain", resp.StatusCode, ck)
	}
	sessions, err := s.admin.ListSessions(adminCtx(t.Context()), &authv1.ListSessionsRequest{UserId: u.GetId()})
	if err != nil || len(sessions.GetSessions()) != 1 || sessions.GetSessions()[0].GetClientAddress() != "198.51.100.9" {
		t.Fatalf("sessions %v %v; want one from 198.51.100.9, the address the trusted proxy saw", sessions, err)
	}

	ws := func(cookie, origin string) (int, string) {
		h := http.Header{"Cookie": {cookie + "=" + ck.Value}, "Origin": {origin}}
		c, code, reason := dialWSReason(t, wsURL(s.edge.addr, u.GetId()), h)
		if c != nil {
			c.Close()
			return 101, ""
		}
		return code, reason
	}
	if code, _ := ws("__Host-sessionid", public); code != 101 {
		t.Fatalf("socket with the __Host- cookie from the public origin: %d", code)
	}
	if code, reason := ws("sessionid", public); code != http.StatusUnauthorized || reason != "NO_CREDENTIAL" {
		t.Fatalf("socket with the plain cookie name: %d %s; want 401 NO_CREDENTIAL (only the __Host- name is read)", code, reason)
	}
	if code, _ := ws("__Host-sessionid", "http://chat.example.com"); code != http.StatusForbidden {
		t.Fatalf("socket from the http origin: %d, want 403", code)
	}
}

// TestForwardingHeadersFromUntrustedPeers: without EDGESVC_TRUSTED_PROXIES, a
// client's X-Forwarded-For is ignored: the session records the TCP peer.
func TestForwardingHeadersFromUntrustedPeers(t *testing.T) {
	s := newSystem(t, nil, nil)
	u, pw := s.newUser(t)
	base := "http://" + s.edge.addr
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, base+"/login",
		strings.NewReader(url.Values{"username": {u.GetUsername()}, "password": {pw}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Forwarded-For", "198.51.100.9")
	req.Header.Set("Forwarded", "for=198.51.100.10")
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	sessions, err := s.admin.ListSessions(adminCtx(t.Context()), &authv1.ListSessionsRequest{UserId: u.GetId()})
	if err != nil || len(sessions.GetSessions()) != 1 || sessions.GetSessions()[0].GetClientAddress() != "127.0.0.1" {
		t.Fatalf("sessions %v %v; want one from 127.0.0.1, the peer", sessions, err)
	}
}

// TestProxiedClientsCountedApart: behind a trusted proxy, failures from one client
// (its X-Forwarded-For address) do not lock out another client of the same proxy.
func TestProxiedClientsCountedApart(t *testing.T) {
	s := newSystem(t, []string{"AUTHSVC_LOGIN_MAX_FAILURES_PER_ADDRESS=3"}, []string{"EDGESVC_TRUSTED_PROXIES=127.0.0.1"})
	u, pw := s.newUser(t)
	base := "http://" + s.edge.addr
	login := func(user, pass, client string) int {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, base+"/login",
			strings.NewReader(url.Values{"username": {user}, "password": {pass}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Forwarded-For", client)
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for i := range 4 {
		login(fmt.Sprint("nobody", i), "guess", "203.0.113.66")
	}
	if code := login(u.GetUsername(), pw, "203.0.113.66"); code != http.StatusTooManyRequests {
		t.Fatalf("the failing client: %d, want 429", code)
	}
	if code := login(u.GetUsername(), pw, "198.51.100.9"); code != http.StatusSeeOther {
		t.Fatalf("another client of the same proxy: %d, want 303 (signed in)", code)
	}
}
