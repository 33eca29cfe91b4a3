package auth

import (
	"net/http/httptest"
	"strings"
	"testing"
)

func TestCredential(t *testing.T) {
	const tok = "wISXoPAn1KUkyp2RJQtJ4CxJXrAUx59HGX5mTCTuHjk"
	for _, tc := range []struct {
		name   string
		header string
		cookie string
		want   string
		ok     bool
	}{
		{"cookie", "", tok, tok, true},
		{"bearer", "Bearer " + tok, "", tok, true},
		{"bearer any case", "bEaReR " + tok, "", tok, true},
		{"bearer wins over cookie", "Bearer " + tok, "other", tok, true},
		{"nothing", "", "", "", false},
		{"basic", "Basic " + tok, "", "", false},
		{"bearer without token", "Bearer ", "", "", false},
		{"bearer only", "Bearer", "", "", false},
		{"token with bad characters", "Bearer a+b/c=", "", "", false},
		{"cookie with bad characters", "", "a b", "", false},
		{"token too long", "Bearer " + strings.Repeat("a", 257), "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/ws/myapp/1/", nil)
			if tc.header != "" {
				r.Header.Set("Authorization", tc.header)
			}
			if tc.cookie != "" {
				r.Header.Set("Cookie", "sessionid="+tc.cookie)
			}
			got, ok := Credential(r, "sessionid")
			if ok != tc.ok || (ok && got != tc.want) {
				t.Fatalf("credential = %q, %v; want %q, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func FuzzCredential(f *testing.F) {
	f.Add("Bearer abc", "sessionid=abc")
	f.Add("", "sessionid=wISXoPAn1KUkyp2RJQtJ4CxJXrAUx59HGX5mTCTuHjk; other=1")
	f.Add("bearer  x", "sessionid=\"quoted\"")
	f.Fuzz(func(t *testing.T, authz, cookie string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header["Authorization"] = []string{authz}
		r.Header["Cookie"] = []string{cookie}
		tok, ok := Credential(r, "sessionid")
		if ok && !tokenShaped(tok) {
			t.Fatalf("credential accepted %q", tok)
		}
		if !ok && tok != "" && tokenShaped(tok) {
			t.Fatalf("credential refused well-shaped %q", tok)
		}
	})
}

func BenchmarkCredential(b *testing.B) {
	r := httptest.NewRequest("GET", "/ws/myapp/1/", nil)
	r.Header.Set("Cookie", "csrftoken=abc; sessionid=wISXoPAn1KUkyp2RJQtJ4CxJXrAUx59HGX5mTCTuHjk; theme=dark")
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := Credential(r, "sessionid"); !ok {
			b.Fatal("no credential")
		}
	}
}
