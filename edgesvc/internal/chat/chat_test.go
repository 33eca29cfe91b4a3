package chat

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseMessage(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		err      error
	}{
		{`{"message": "hello"}`, "hello", nil},
		{` {"message":"héllo \u00e9"} `, "héllo é", nil},
		{`{"message": "` + strings.Repeat("é", 2048) + `"}`, strings.Repeat("é", 2048), nil},
		{`{"message": "` + strings.Repeat("x", 4097) + `"}`, "", errTooLong},
		{`{"message": ""}`, "", errEmpty},
		{`{"message": 42}`, "", errShape},
		{`{"message": null}`, "", errShape},
		{`{"message": "a", "extra": 1}`, "", errShape},
		{`{"msg": "a"}`, "", errShape},
		{`{"message": "a", "message": "b"}`, "", errShape},
		{`{}`, "", errShape},
		{`hello`, "", errNotJSON},
		{``, "", errNotJSON},
		{`["message", "a"]`, "", errNotJSON},
		{`"a"`, "", errNotJSON},
		{`null`, "", errNotJSON},
		{`{"message": "a"} {"message": "b"}`, "", errNotJSON},
		{`{"message": "a"}x`, "", errNotJSON},
	} {
		got, err := ParseMessage(tc.in)
		if got != tc.want || err != tc.err {
			t.Errorf("ParseMessage(%.40q) = %.20q, %v; want %.20q, %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestValidRoom(t *testing.T) {
	for name, want := range map[string]bool{
		"lobby": true, "a": true, "room-1_b.c": true, strings.Repeat("r", 95): true,
		"": false, strings.Repeat("r", 96): false, "a b": false, "é": false, "a/b": false, ".": false, "..": false, "...": true,
	} {
		if ValidRoom(name) != want {
			t.Errorf("ValidRoom(%q) = %v", name, !want)
		}
	}
}

// FuzzParseMessage: whatever a client sends, a message accepted is exactly the one
// string of an object with the one key "message", 1–4096 bytes of UTF-8.
func FuzzParseMessage(f *testing.F) {
	for _, s := range []string{`{"message":"hi"}`, `{"message":"a","message":"b"}`, `{"message":"\ud800"}`, `[1]`, `{"message":"x"}  `} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := ParseMessage(in)
		if err != nil {
			if got != "" {
				t.Fatalf("refused with a message %q", got)
			}
			return
		}
		if got == "" || len(got) > MaxMessage || !utf8.ValidString(got) {
			t.Fatalf("accepted %q", got)
		}
		var obj map[string]any
		if json.Unmarshal([]byte(in), &obj) != nil || len(obj) != 1 || obj["message"] != got {
			t.Fatalf("accepted %q from %q, which is not {\"message\": %q}", got, in, got)
		}
	})
}
