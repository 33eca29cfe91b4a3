package edge

import (
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
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
			got, ok := credential(r)
			if ok != tc.ok || (ok && got != tc.want) {
				t.Fatalf("credential = %q, %v; want %q, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

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

func TestOriginAllowed(t *testing.T) {
	same := &Server{}
	list := &Server{cfg: Config{AllowedOrigins: []string{"https://app.example.com", "http://localhost:3000"}}}
	list.cfg.setDefaults()
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
		if got := tc.srv.originAllowed(r); got != tc.want {
			t.Errorf("origin %q to %s (allowed %v) = %v, want %v", tc.origin, tc.host, tc.srv.cfg.AllowedOrigins, got, tc.want)
		}
	}
}

func TestParseLoginForm(t *testing.T) {
	for _, tc := range []struct {
		name, ctype, body string
		user, pw          string
		err               error
	}{
		{"ok", "application/x-www-form-urlencoded", "username=alice&password=p%26w", "alice", "p&w", nil},
		{"missing password", "application/x-www-form-urlencoded", "username=alice", "alice", "", errFormIncomplete},
		{"empty", "application/x-www-form-urlencoded", "", "", "", errFormIncomplete},
		{"bad encoding", "application/x-www-form-urlencoded", "username=%zz", "", "", errFormUnreadable},
		{"too big", "application/x-www-form-urlencoded", "username=a&password=" + strings.Repeat("x", maxFormBytes), "", "", errFormUnreadable},
		{"json is not a form", "application/json", `{"username":"a","password":"b"}`, "", "", errFormIncomplete},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/login", strings.NewReader(tc.body))
			r.Header.Set("Content-Type", tc.ctype)
			user, pw, err := parseLoginForm(httptest.NewRecorder(), r)
			if err != tc.err || (err == nil && (user != tc.user || pw != tc.pw)) {
				t.Fatalf("parseLoginForm = %q, %q, %v; want %q, %q, %v", user, pw, err, tc.user, tc.pw, tc.err)
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
		tok, ok := credential(r)
		if ok && !tokenShaped(tok) {
			t.Fatalf("credential accepted %q", tok)
		}
		if !ok && tok != "" && tokenShaped(tok) {
			t.Fatalf("credential refused well-shaped %q", tok)
		}
	})
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

func FuzzParseLoginForm(f *testing.F) {
	f.Add("username=alice&password=secret")
	f.Add("username=%ZZ")
	f.Add("password=&username=")
	f.Fuzz(func(t *testing.T, body string) {
		r := httptest.NewRequest("POST", "/login", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		user, pw, err := parseLoginForm(httptest.NewRecorder(), r)
		if err == nil && (user == "" || pw == "") {
			t.Fatalf("accepted an incomplete form: %q", body)
		}
		if err == nil && len(body) > maxFormBytes {
			t.Fatalf("accepted %d bytes", len(body))
		}
		if err == nil {
			v, perr := url.ParseQuery(body)
			if perr != nil || v.Get("username") != user || v.Get("password") != pw {
				t.Fatalf("parsed %q as %q/%q", body, user, pw)
			}
		}
	})
}

func BenchmarkCredential(b *testing.B) {
	r := httptest.NewRequest("GET", "/ws/myapp/1/", nil)
	r.Header.Set("Cookie", "csrftoken=abc; sessionid=wISXoPAn1KUkyp2RJQtJ4CxJXrAUx59HGX5mTCTuHjk; theme=dark")
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := credential(r); !ok {
			b.Fatal("no credential")
		}
	}
}

func TestTruncateUTF8(t *testing.T) {
	long := strings.Repeat("é", 100) // 200 bytes
	got := truncateUTF8(long, 123)
	if len(got) > 123 || !utf8.ValidString(got) || len(got) != 122 {
		t.Fatalf("truncateUTF8 = %d bytes, valid %v", len(got), utf8.ValidString(got))
	}
	if truncateUTF8("short", 123) != "short" {
		t.Fatal("short reason changed")
	}
}
