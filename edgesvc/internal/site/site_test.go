package site

import (
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

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
