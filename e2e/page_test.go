package e2e

import (
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestPageAndForms(t *testing.T) {
	s := newSystem(t, nil, nil)
	u, pw := s.newUser(t)
	base := "http://" + s.edge.addr
	c := browser(t)

	get := func(t *testing.T, path string) *http.Response {
		t.Helper()
		resp, err := c.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	sessionCookie := func(resp *http.Response) *http.Cookie {
		for _, ck := range resp.Cookies() {
			if ck.Name == "sessionid" {
				return ck
			}
		}
		return nil
	}

	t.Run("signed out page shows the login form with a strict CSP", func(t *testing.T) {
		resp := get(t, "/")
		body := readBody(resp)
		if resp.StatusCode != 200 || !strings.Contains(body, `action="/login"`) || !strings.Contains(body, `name="password"`) {
			t.Fatalf("GET / = %d\n%s", resp.StatusCode, body)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
			t.Fatalf("CSP = %q", csp)
		}
		for h, want := range map[string]string{"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin"} {
			if got := resp.Header.Get(h); got != want {
				t.Errorf("%s = %q, want %q", h, got, want)
			}
		}
		if strings.Contains(body, "<script>") || regexp.MustCompile(`\son[a-z]+=`).MatchString(body) || strings.Contains(body, "style=") {
			t.Error("the page has an inline script, handler or style")
		}
	})
	t.Run("static assets are served", func(t *testing.T) {
		for path, ctype := range map[string]string{"/static/app.js": "javascript", "/static/style.css": "text/css"} {
			resp := get(t, path)
			if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), ctype) {
				t.Errorf("GET %s = %d %s", path, resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			resp.Body.Close()
		}
	})
	t.Run("wrong password answers 401 with the form and sets no cookie", func(t *testing.T) {
		resp := postForm(t, c, base+"/login", url.Values{"username": {u.GetUsername()}, "password": {"wrong password"}}, base)
		body := readBody(resp)
		if resp.StatusCode != 401 || !strings.Contains(body, "Invalid username or password") || !strings.Contains(body, `action="/login"`) {
			t.Fatalf("POST /login wrong = %d\n%s", resp.StatusCode, body)
		}
		if sessionCookie(resp) != nil {
			t.Fatal("a failed login set a session cookie")
		}
	})
	t.Run("unknown user answers the same as a wrong password", func(t *testing.T) {
		resp := postForm(t, c, base+"/login", url.Values{"username": {"nobody-here"}, "password": {"wrong password"}}, base)
		if body := readBody(resp); resp.StatusCode != 401 || !strings.Contains(body, "Invalid username or password") {
			t.Fatalf("POST /login unknown = %d\n%s", resp.StatusCode, body)
		}
	})
	t.Run("empty form answers 400", func(t *testing.T) {
		resp := postForm(t, c, base+"/login", url.Values{"username": {u.GetUsername()}}, base)
		if resp.StatusCode != 400 || sessionCookie(resp) != nil {
			t.Fatalf("POST /login without password = %d", resp.StatusCode)
		}
	})
	t.Run("oversized form answers 400", func(t *testing.T) {
		resp := postForm(t, c, base+"/login", url.Values{"username": {u.GetUsername()}, "password": {strings.Repeat("p", 20<<10)}}, base)
		if resp.StatusCode != 400 || sessionCookie(resp) != nil {
			t.Fatalf("POST /login 20 KiB = %d", resp.StatusCode)
		}
	})
	t.Run("a NUL in the username answers 400, not 503", func(t *testing.T) {
		resp := postForm(t, c, base+"/login", url.Values{"username": {"ali\x00ce"}, "password": {pw}}, base)
		if body := readBody(resp); resp.StatusCode != 400 || !strings.Contains(body, "not allowed in a username") || sessionCookie(resp) != nil {
			t.Fatalf("POST /login with a NUL = %d\n%s", resp.StatusCode, body)
		}
	})
	t.Run("cross-origin login is refused", func(t *testing.T) {
		resp := postForm(t, c, base+"/login", url.Values{"username": {u.GetUsername()}, "password": {pw}}, "http://evil.example")
		if resp.StatusCode != 403 || sessionCookie(resp) != nil {
			t.Fatalf("cross-origin POST /login = %d", resp.StatusCode)
		}
	})
	t.Run("api/session without a session is 401", func(t *testing.T) {
		resp := get(t, "/api/session")
		var body struct{ Reason string }
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != 401 || body.Reason != "NO_CREDENTIAL" {
			t.Fatalf("GET /api/session = %d %+v", resp.StatusCode, body)
		}
	})
	t.Run("login sets the session cookie and shows the signed-in page", func(t *testing.T) {
		resp := postForm(t, c, base+"/login", url.Values{"username": {strings.ToUpper(u.GetUsername())}, "password": {pw}}, base)
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
			t.Fatalf("POST /login = %d %s", resp.StatusCode, resp.Header.Get("Location"))
		}
		ck := sessionCookie(resp)
		if ck == nil || !ck.HttpOnly || ck.SameSite != http.SameSiteLaxMode || ck.Path != "/" || ck.Secure {
			t.Fatalf("cookie = %+v, want HttpOnly, SameSite=Lax, Path=/, not Secure over plain HTTP", ck)
		}
		page := get(t, "/")
		body := readBody(page)
		if !strings.Contains(body, u.GetUsername()) || !strings.Contains(body, `data-user-id="`+itoa(u.GetId())+`"`) {
			t.Fatalf("signed-in page lacks the user:\n%s", body)
		}
		api := get(t, "/api/session")
		var got struct {
			User struct {
				ID       int64  `json:"id"`
				Username string `json:"username"`
			} `json:"user"`
		}
		if err := json.NewDecoder(api.Body).Decode(&got); err != nil || api.StatusCode != 200 || got.User.ID != u.GetId() || got.User.Username != u.GetUsername() {
			t.Fatalf("GET /api/session = %d %+v %v", api.StatusCode, got, err)
		}
	})
	t.Run("a socket route has a page at /app/", func(t *testing.T) {
		mine := "/ws/myapp/" + itoa(u.GetId()) + "/"
		page := get(t, "/app/myapp/"+itoa(u.GetId())+"/")
		body := readBody(page)
		if page.StatusCode != 200 || !strings.Contains(body, `data-socket="`+mine+`"`) || page.Header.Get("Content-Security-Policy") == "" {
			t.Fatalf("GET /app/myapp/%d/ = %d\n%s", u.GetId(), page.StatusCode, body)
		}
		// Paths that are no socket route (routes are exact), or that the page could
		// not open, are 404 before any session is looked at.
		for _, path := range []string{"/app/nothing/", "/app/myapp/1/x/", "/app/myapp/1", "/app/", "/app/myapp/%2e%2e/", "/app/chat/a%20b/", "/app/chat/a%22b/", "/app/chat%2F%2Flobby/"} {
			resp := get(t, path)
			if body := readBody(resp); resp.StatusCode != http.StatusNotFound || resp.Header.Get("Gatehouse-Reason") != "NO_ROUTE" {
				t.Errorf("GET %s = %d %q, want 404 NO_ROUTE", path, resp.StatusCode, body)
			}
		}
		// Signed out: to the sign-in page.
		resp, err := http.Get(base + "/app/chat/lobby/")
		if err != nil {
			t.Fatal(err)
		}
		if readBody(resp); resp.Request.URL.Path != "/" {
			t.Fatalf("signed out, /app/chat/lobby/ ended at %s", resp.Request.URL)
		}
	})
	t.Run("signing in again ends the session it replaces", func(t *testing.T) {
		old := c.Jar.Cookies(mustURL(base))
		if len(old) != 1 {
			t.Fatalf("cookies before: %v", old)
		}
		resp := postForm(t, c, base+"/login", url.Values{"username": {u.GetUsername()}, "password": {pw}}, base)
		ck := sessionCookie(resp)
		if resp.StatusCode != http.StatusSeeOther || ck == nil || ck.Value == old[0].Value {
			t.Fatalf("second POST /login = %d, cookie %v", resp.StatusCode, ck)
		}
		_, err := s.authC.ValidateSession(t.Context(), &authv1.ValidateSessionRequest{Token: old[0].Value})
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("the replaced session still validates: %v", err)
		}
		if api := get(t, "/api/session"); api.StatusCode != 200 {
			t.Fatalf("the new session does not: %d", api.StatusCode)
		}
	})
	t.Run("cross-origin logout is refused", func(t *testing.T) {
		resp := postForm(t, c, base+"/logout", nil, "http://evil.example")
		if resp.StatusCode != 403 {
			t.Fatalf("cross-origin POST /logout = %d", resp.StatusCode)
		}
		if api := get(t, "/api/session"); api.StatusCode != 200 {
			t.Fatal("refused logout signed the user out anyway")
		}
	})
	t.Run("logout clears the cookie and ends the session", func(t *testing.T) {
		resp := postForm(t, c, base+"/logout", nil, base)
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("POST /logout = %d", resp.StatusCode)
		}
		if ck := sessionCookie(resp); ck == nil || ck.MaxAge >= 0 {
			t.Fatalf("logout cookie = %+v, want deletion", ck)
		}
		if api := get(t, "/api/session"); api.StatusCode != 401 {
			t.Fatalf("after logout /api/session = %d", api.StatusCode)
		}
	})
	t.Run("bearer works for api/session", func(t *testing.T) {
		l := s.login(t, u, pw)
		req, _ := http.NewRequest("GET", base+"/api/session", nil)
		req.Header.Set("Authorization", "Bearer "+l.GetToken())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("bearer /api/session = %d", resp.StatusCode)
		}
	})
	t.Run("health, readiness and metrics", func(t *testing.T) {
		for _, p := range []string{"/healthz", "/readyz"} {
			if resp := get(t, p); resp.StatusCode != 200 {
				t.Errorf("GET %s = %d", p, resp.StatusCode)
			}
		}
		// Metrics are not on the public port (404, as for any path not served), only on
		// EDGESVC_METRICS_LISTEN.
		for _, p := range []string{"/metrics", "/%6Detrics", "/metrics/", "/METRICS"} {
			if resp := get(t, p); resp.StatusCode != http.StatusNotFound || strings.Contains(readBody(resp), "gatehouse_edge") {
				t.Errorf("GET %s on the public port = %d, want 404", p, resp.StatusCode)
			}
		}
		resp, err := http.Get("http://" + metricsAddr(s.edge.addr) + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body := readBody(resp)
		for _, m := range []string{"gatehouse_edge_connections_open", "gatehouse_edge_handshakes_total", "gatehouse_edge_validate_session_seconds",
			"gatehouse_edge_messages_received_total", "gatehouse_edge_messages_sent_total", "gatehouse_edge_closes_total"} {
			if !strings.Contains(body, m) {
				t.Errorf("/metrics lacks %s", m)
			}
		}
	})
}

// TestLoginRateLimit: repeated failures for one username answer 429 on the page, even
// with the right password, until the window passes.
func TestLoginRateLimit(t *testing.T) {
	s := newSystem(t, []string{"AUTHSVC_LOGIN_MAX_FAILURES_PER_USER=3"}, nil)
	u, pw := s.newUser(t)
	base := "http://" + s.edge.addr
	c := browser(t)
	for i := range 3 {
		if resp := postForm(t, c, base+"/login", url.Values{"username": {u.GetUsername()}, "password": {"bad"}}, base); resp.StatusCode != 401 {
			t.Fatalf("failure %d: %d", i, resp.StatusCode)
		}
	}
	resp := postForm(t, c, base+"/login", url.Values{"username": {u.GetUsername()}, "password": {pw}}, base)
	if body := readBody(resp); resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(body, "Too many failed sign-ins") {
		t.Fatalf("after 3 failures: %d\n%s", resp.StatusCode, body)
	}
	if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 || ra > 15*60 {
		t.Fatalf("Retry-After = %q, want the seconds left in the 15-minute window", resp.Header.Get("Retry-After"))
	}
}
