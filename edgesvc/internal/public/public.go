// Package public is how the edge faces the outside: the URL people use (its scheme
// decides the session cookie), the proxies in front of it that may say who the
// client is, and the Origin check for pages that open sockets or post forms.
package public

import (
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
)

// Cookie names: the session cookie, as in Django, and its form when the public
// scheme is https (a __Host- cookie must be Secure, Path=/ and have no Domain, so no
// subdomain or plain-HTTP page can set or shadow it).
const (
	CookieName       = "sessionid"
	SecureCookieName = "__Host-sessionid"
)

// Face is the edge's public face. The zero Face has no public URL and trusts no
// proxy: the scheme is the connection's own, and the client is the TCP peer.
type Face struct {
	// URL is the public URL ("https://chat.example.com"), or nil.
	URL *url.URL
	// TrustedProxies are the peers whose Forwarded / X-Forwarded-For headers are
	// believed.
	TrustedProxies []netip.Prefix
	// AllowedOrigins are other origins ("https://app.example.com", lower case) whose
	// pages may open sockets.
	AllowedOrigins []string
}

// Secure reports whether the public scheme is https: the public URL's, or, without
// one, the edge's own TLS.
func (f *Face) Secure(r *http.Request) bool {
	if f.URL != nil {
		return f.URL.Scheme == "https"
	}
	return r.TLS != nil
}

// CookieName is the name of the session cookie for r: only this name is set and read.
func (f *Face) CookieName(r *http.Request) string {
	if f.Secure(r) {
		return SecureCookieName
	}
	return CookieName
}

// OriginAllowed reports whether a browser page at r's Origin may use the edge: no
// Origin (not a browser), one of AllowedOrigins, or the edge itself — the public
// URL's scheme and host when there is one, else the request's host.
func (f *Face) OriginAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if slices.Contains(f.AllowedOrigins, strings.ToLower(origin)) {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if f.URL != nil {
		return strings.EqualFold(u.Scheme, f.URL.Scheme) && strings.EqualFold(u.Host, f.URL.Host)
	}
	return strings.EqualFold(u.Host, r.Host)
}

// ClientAddr returns the client's address: the TCP peer, unless the peer is a
// trusted proxy, then the address the proxies recorded (Forwarded, else
// X-Forwarded-For), read from the right past every trusted proxy — the entries
// further left were written by whoever the untrusted client is and prove nothing.
// Addresses are normalised: IPv4-mapped IPv6 unmapped, zones dropped.
func (f *Face) ClientAddr(r *http.Request) string {
	peer := Normalize(hostOnly(r.RemoteAddr))
	if !f.trusted(peer) {
		return peer
	}
	hops := forwardedFor(r.Header)
	for i := len(hops) - 1; i >= 0; i-- {
		a := Normalize(hops[i])
		if a == "" {
			break // unreadable: nothing left of it can be believed
		}
		if !f.trusted(a) || i == 0 {
			return a
		}
	}
	return peer
}

func (f *Face) trusted(addr string) bool {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return false
	}
	for _, p := range f.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Normalize returns addr as an IP address in canonical form (IPv4-mapped IPv6
// unmapped, zone dropped), or "" if it is not one.
func Normalize(addr string) string {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return ""
	}
	return a.Unmap().WithZone("").String()
}

// ParseProxies parses a comma-separated list of CIDRs or single addresses.
func ParseProxies(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		if !strings.Contains(f, "/") {
			a, err := netip.ParseAddr(f)
			if err != nil {
				return nil, err
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, err
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// hostOnly strips a port, and the brackets of an IPv6 literal.
func hostOnly(hostport string) string {
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		return host
	}
	return strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]")
}

// forwardedFor returns the client addresses the proxies recorded, leftmost first:
// the for= parameters of Forwarded (RFC 7239) if any, else X-Forwarded-For.
func forwardedFor(h http.Header) []string {
	var hops []string
	for _, line := range h.Values("Forwarded") {
		for _, elem := range strings.Split(line, ",") {
			for _, pair := range strings.Split(elem, ";") {
				k, v, ok := strings.Cut(strings.TrimSpace(pair), "=")
				if ok && strings.EqualFold(k, "for") {
					hops = append(hops, hostOnly(strings.Trim(v, `"`)))
				}
			}
		}
	}
	if len(hops) > 0 {
		return hops
	}
	for _, line := range h.Values("X-Forwarded-For") {
		for _, a := range strings.Split(line, ",") {
			hops = append(hops, hostOnly(strings.TrimSpace(a)))
		}
	}
	return hops
}
