package public

import (
	"crypto/tls"
	"net/http/httptest"
	"net/url"
	"testing"
)

func TestClientAddr(t *testing.T) {
	proxies, err := ParseProxies("10.0.0.0/8, 192.0.2.7, ::1")
	if err != nil {
		t.Fatal(err)
	}
	f := &Face{TrustedProxies: proxies}
	for _, c := range []struct {
		name, peer string
		hdr        map[string]string
		want       string
	}{
		{"no proxy: the peer", "203.0.113.5:4000", map[string]string{"X-Forwarded-For": "1.1.1.1"}, "203.0.113.5"},
		{"untrusted peer's header ignored", "203.0.113.5:4000", map[string]string{"Forwarded": "for=1.1.1.1"}, "203.0.113.5"},
		{"trusted proxy: the client it saw", "10.1.2.3:4000", map[string]string{"X-Forwarded-For": "198.51.100.9"}, "198.51.100.9"},
		{"forged entries left of the client", "10.1.2.3:4000", map[string]string{"X-Forwarded-For": "1.1.1.1, 2.2.2.2, 198.51.100.9"}, "198.51.100.9"},
		{"two trusted proxies", "192.0.2.7:4000", map[string]string{"X-Forwarded-For": "198.51.100.9, 10.9.9.9"}, "198.51.100.9"},
		{"Forwarded wins, IPv6 with port", "10.1.2.3:4000", map[string]string{"Forwarded": `for=1.1.1.1, for="[2001:db8::17]:4711";proto=https`, "X-Forwarded-For": "3.3.3.3"}, "2001:db8::17"},
		{"IPv4-mapped unmapped", "10.1.2.3:4000", map[string]string{"X-Forwarded-For": "::ffff:198.51.100.9"}, "198.51.100.9"},
		{"unreadable: the proxy", "10.1.2.3:4000", map[string]string{"X-Forwarded-For": "1.1.1.1, unknown"}, "10.1.2.3"},
		{"no header from a proxy: the proxy", "[::1]:4000", nil, "::1"},
		{"peer normalised", "[::ffff:203.0.113.5]:4000", nil, "203.0.113.5"},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = c.peer
		for k, v := range c.hdr {
			r.Header.Set(k, v)
		}
		if got := f.ClientAddr(r); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
	if _, err := ParseProxies("10.0.0.0/33"); err == nil {
		t.Error("a bad CIDR was accepted")
	}
	if _, err := ParseProxies("proxy.example.com"); err == nil {
		t.Error("a host name was accepted")
	}
}

func TestCookieAndOrigin(t *testing.T) {
	plain := httptest.NewRequest("GET", "http://edge.internal/", nil)
	overTLS := httptest.NewRequest("GET", "https://edge.internal/", nil)
	overTLS.TLS = &tls.ConnectionState{}
	var none Face
	if none.CookieName(plain) != "sessionid" || none.CookieName(overTLS) != "__Host-sessionid" {
		t.Fatal("without a public URL the cookie follows the edge's own TLS")
	}
	pub, _ := url.Parse("https://chat.example.com")
	f := Face{URL: pub, AllowedOrigins: []string{"https://app.example.com"}}
	if f.CookieName(plain) != "__Host-sessionid" || !f.Secure(plain) {
		t.Fatal("an https public URL behind a TLS-terminating proxy: the __Host- cookie")
	}
	for origin, want := range map[string]bool{
		"":                           true,
		"https://chat.example.com":   true,
		"http://chat.example.com":    false, // the scheme counts
		"https://app.example.com":    true,
		"https://evil.example.com":   false,
		"https://edge.internal":      false, // the request's host no longer counts
		"null":                       false,
		"https://chat.example.com:8": false,
	} {
		r := httptest.NewRequest("GET", "http://edge.internal/ws/", nil)
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		if got := f.OriginAllowed(r); got != want {
			t.Errorf("Origin %q: %v, want %v", origin, got, want)
		}
	}
	r := httptest.NewRequest("GET", "http://edge.internal/ws/", nil)
	r.Header.Set("Origin", "https://edge.internal")
	if !none.OriginAllowed(r) {
		t.Error("without a public URL, the request's host is allowed")
	}
}
