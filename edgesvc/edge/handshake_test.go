package edge

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/gatehouse/gatehouse/edgesvc/internal/public"
)

func TestParseUserID(t *testing.T) {
	for in, want := range map[string]int64{
		"1": 1, "42": 42, "9223372036854775807": 9223372036854775807,
		"": 0, "0": 0, "01": 0, "-1": 0, "+1": 0, "1.0": 0, "abc": 0, " 1": 0,
		"9223372036854775808": 0, "99999999999999999999": 0, "１": 0,
	} {
		got, ok := parseUserID(in)
		if got != want || ok != (want != 0) {
			t.Errorf("parseUserID(%q) = %d, %v; want %d", in, got, ok, want)
		}
	}
}

func FuzzParseUserID(f *testing.F) {
	for _, s := range []string{"1", "0", "01", "-5", "9223372036854775807", "9223372036854775808", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, ok := parseUserID(s)
		if ok && (id <= 0 || strconv.FormatInt(id, 10) != s) {
			t.Fatalf("parseUserID(%q) = %d: not the canonical form of a positive id", s, id)
		}
	})
}

func TestOriginAllowed(t *testing.T) {
	face := func(c Config) *Server {
		c = c.withDefaults()
		return &Server{cfg: c, face: &public.Face{AllowedOrigins: c.AllowedOrigins}}
	}
	same := face(Config{})
	list := face(Config{AllowedOrigins: []string{"https://app.example.com", "http://localhost:3000/"}})
	for _, tc := range []struct {
		srv    *Server
		host   string
		origin string
		want   bool
	}{
		{same, "edge:8000", "", true},
		{same, "edge:8000", "http://edge:8000", true},
		{same, "edge:8000", "https://EDGE:8000", true},
		{same, "edge:8000", "http://edge:8001", false},
		{same, "edge:8000", "http://evil.example", false},
		{same, "edge:8000", "null", false},
		{same, "edge:8000", "http://edge:8000.evil.example", false},
		{list, "edge:8000", "https://app.example.com", true},
		{list, "edge:8000", "HTTPS://APP.EXAMPLE.COM", true},
		{list, "edge:8000", "http://localhost:3000", true},
		{list, "edge:8000", "http://edge:8000", true}, // the edge's own page always may
		{list, "edge:8000", "https://app.example.com.evil", false},
	} {
		r := httptest.NewRequest("GET", "http://"+tc.host+"/ws/myapp/1/", nil)
		if tc.origin != "" {
			r.Header.Set("Origin", tc.origin)
		}
		if got := tc.srv.face.OriginAllowed(r); got != tc.want {
			t.Errorf("origin %q to %s (allowed %v) = %v, want %v", tc.origin, tc.host, tc.srv.cfg.AllowedOrigins, got, tc.want)
		}
	}
}

// TestRoutesAreExact: a socket route is its path only; a path under it is not found,
// before authsvc is asked.
func TestRoutesAreExact(t *testing.T) {
	_, base := newTestServerConfig(t, Config{}, "/ws/g/{group}/", func() Consumer { return member{} })
	for path, want := range map[string]int{"/ws/g/room/x": http.StatusNotFound, "/ws/g/room/x/": http.StatusNotFound} {
		_, resp, err := websocket.DefaultDialer.Dial(base+path, http.Header{"Authorization": {"Bearer u1s1"}})
		if err == nil || resp == nil || resp.StatusCode != want {
			code := 0
			if resp != nil {
				code = resp.StatusCode
			}
			t.Errorf("%s: %d, %v; want %d", path, code, err, want)
		}
	}
	dialAs(t, base, "room", "u1s1") // the route itself
}

// TestSocketLimits: sockets are capped per user, per client address and in total; a
// handshake past a cap is refused with 429 TOO_MANY_SOCKETS before the upgrade, and
// a socket that ends frees its place.
func TestSocketLimits(t *testing.T) {
	refused := func(t *testing.T, base, token string) {
		t.Helper()
		ws, resp, err := websocket.DefaultDialer.Dial(base+"/ws/g/-/", http.Header{"Authorization": {"Bearer " + token}})
		if err == nil {
			ws.Close()
			t.Fatalf("%s: a socket past the limit was opened", token)
		}
		if resp == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get(ReasonHeader) != "TOO_MANY_SOCKETS" {
			t.Fatalf("%s: %v %v, want 429 TOO_MANY_SOCKETS", token, resp, err)
		}
	}
	t.Run("per user", func(t *testing.T) {
		srv, base := newTestServerConfig(t, Config{MaxSocketsPerUser: 2}, "/ws/g/{group}/", func() Consumer { return member{} })
		a := dialAs(t, base, "-", "u1s1")
		dialAs(t, base, "-", "u1s2")
		refused(t, base, "u1s3")
		dialAs(t, base, "-", "u2s4") // another user is not affected
		a.Close()
		for deadline := time.Now().Add(5 * time.Second); srv.conns.ByID(a.id) != nil; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the closed socket is still registered")
			}
		}
		dialAs(t, base, "-", "u1s3")
	})
	t.Run("per address and in total", func(t *testing.T) {
		_, base := newTestServerConfig(t, Config{MaxSocketsPerAddress: 2}, "/ws/g/{group}/", func() Consumer { return member{} })
		dialAs(t, base, "-", "u1s1")
		dialAs(t, base, "-", "u2s2")
		refused(t, base, "u3s3") // every test client is 127.0.0.1
		_, base = newTestServerConfig(t, Config{MaxSockets: 1}, "/ws/g/{group}/", func() Consumer { return member{} })
		dialAs(t, base, "-", "u1s1")
		refused(t, base, "u2s2")
	})
	t.Run("default: 1,000 per user, off per address and in total", func(t *testing.T) {
		c := Config{}.withDefaults()
		if c.MaxSocketsPerUser != 1000 || c.MaxSocketsPerAddress != 0 || c.MaxSockets != 0 {
			t.Fatalf("defaults %d %d %d", c.MaxSocketsPerUser, c.MaxSocketsPerAddress, c.MaxSockets)
		}
		if (Config{MaxSocketsPerUser: -1}).withDefaults().MaxSocketsPerUser != -1 {
			t.Fatal("a negative limit (none) was replaced")
		}
	})
}
