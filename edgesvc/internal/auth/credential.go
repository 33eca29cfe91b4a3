package auth

import (
	"net/http"
	"strings"
)

// maxTokenLen bounds what is sent to authsvc as a token; real tokens are 43 bytes.
const maxTokenLen = 256

// Credential returns the session token a request carries: the Authorization bearer
// token if the header is present, else the cookie named cookie (the public face's:
// sessionid, or __Host-sessionid under https). It returns false if
// there is none or it is not shaped like a token (URL-safe base64, at most 256 bytes).
func Credential(r *http.Request, cookie string) (string, bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return "", false
		}
		tok = strings.TrimSpace(tok)
		return strings.Clone(tok), tokenShaped(tok) // not a slice of the header: sockets and the cache keep it
	}
	c, err := r.Cookie(cookie)
	if err != nil {
		return "", false
	}
	return strings.Clone(c.Value), tokenShaped(c.Value)
}

func tokenShaped(tok string) bool {
	if tok == "" || len(tok) > maxTokenLen {
		return false
	}
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
