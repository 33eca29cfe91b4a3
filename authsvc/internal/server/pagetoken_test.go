package server

import (
	"strconv"
	"testing"
	"time"
)

func TestSessionCursorRoundTrip(t *testing.T) {
	at := time.UnixMicro(1_764_000_000_123_456)
	tok := encodePageToken("sessions", "7:"+strconv.FormatInt(at.UnixMicro(), 10)+":abc")
	c := sessionCursor(tok, 7)
	if c == nil || !c.CreatedAt.Equal(at) || c.ID != "abc" {
		t.Fatalf("cursor = %+v", c)
	}
	if sessionCursor(tok, 8) != nil {
		t.Fatal("a token for user 7 was accepted for user 8")
	}
	if _, ok := decodePageToken(tok, "users"); ok {
		t.Fatal("a sessions token was accepted as a users token")
	}
}

// FuzzPageToken: page tokens come from clients; decoding never panics, and whatever
// decodes re-encodes to the same token.
func FuzzPageToken(f *testing.F) {
	f.Add(encodePageToken("users", "42"))
	f.Add(encodePageToken("sessions", "1:1764000000123456:abc"))
	f.Add("%%%")
	f.Add("")
	f.Fuzz(func(t *testing.T, tok string) {
		for _, kind := range []string{"users", "sessions"} {
			if pos, ok := decodePageToken(tok, kind); ok && encodePageToken(kind, pos) != tok {
				t.Fatalf("%q decoded as %s %q, which encodes differently", tok, kind, pos)
			}
		}
		if c := sessionCursor(tok, 1); c != nil && c.ID == "" {
			t.Fatalf("cursor with empty id from %q", tok)
		}
	})
}
