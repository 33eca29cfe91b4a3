package natslayer

import (
	"reflect"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/edgesvc/internal/layer"
)

func TestSendRoundTrip(t *testing.T) {
	for _, m := range []layer.Send{
		{To: layer.Target{Kind: layer.User, User: 42}, Data: "hello"},
		{To: layer.Target{Kind: layer.Group, ID: "chat.lobby"}, Data: "\x00\x01", Binary: true, Exclude: []string{"a.1", "b.2"}},
		{To: layer.Target{Kind: layer.Session, ID: "s"}, Data: ""},
		{To: layer.Target{Kind: layer.Connection, ID: "edge-a.7"}, Data: strings.Repeat("x", 70000)},
	} {
		b := encodeSend(m)
		stamp(b, 42)
		got, seq, err := decodeSend(b)
		if err != nil || !reflect.DeepEqual(got, m) || seq != 42 {
			t.Errorf("round trip of %+v: %+v %d, %v", m, got, seq, err)
		}
	}
}

// TestDecodeRefuses: what is not an encoded send is refused, never a panic.
func TestDecodeRefuses(t *testing.T) {
	good := encodeSend(layer.Send{To: layer.Target{Kind: layer.Group, ID: "g"}, Data: "d", Exclude: []string{"x.1"}})
	const header = sendHeader + 10 // sequence number, kind, flags, user, "g", one excluded "x.1"; then "d"
	for i := range header {        // every cut inside the header
		if m, _, err := decodeSend(good[:i]); err == nil {
			t.Errorf("a send cut to %d bytes decoded: %+v", i, m)
		}
	}
	hdr := make([]byte, sendHeader)
	hdr[0] = opSend
	for _, tail := range [][]byte{nil, {9, 0}, {1, 7}, {4, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}, {1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}} {
		b := append(append([]byte(nil), hdr...), tail...)
		if m, _, err := decodeSend(b); err == nil {
			t.Errorf("decodeSend(%q) = %+v", b, m)
		}
	}
}

func FuzzDecodeSend(f *testing.F) {
	f.Add(encodeSend(layer.Send{To: layer.Target{Kind: layer.User, User: 1}, Data: "x", Exclude: []string{"a"}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, _, err := decodeSend(b); err == nil {
			if again, _, err := decodeSend(encodeSend(m)); err != nil || !reflect.DeepEqual(again, m) {
				t.Fatalf("%+v does not round-trip: %+v %v", m, again, err)
			}
		}
	})
}

// TestSubjects: a target's subject is a keyed hash of it, the same on every edge with
// the key, another under another key or for another kind, and none is made for a
// target no connection can match.
func TestSubjects(t *testing.T) {
	s := newSubjects("gh", [][]byte{testKey, otherKey})
	other := newSubjects("gh", [][]byte{otherKey})
	for _, c := range []struct {
		t    layer.Target
		kind string
		id   string
	}{
		{layer.Target{Kind: layer.User, User: 7}, "u", "7"},
		{layer.Target{Kind: layer.Group, ID: "chat.a"}, "g", "chat.a"},
		{layer.Target{Kind: layer.Session, ID: ">"}, "s", ">"},
		{layer.Target{Kind: layer.Connection, ID: "edge-a.12"}, "n", "edge-a"},
		{layer.Target{Kind: layer.Connection, ID: "host.with.dots.12"}, "", ""},
		{layer.Target{Kind: layer.Connection, ID: "*.1"}, "", ""},
		{layer.Target{Kind: layer.Connection, ID: "12"}, "", ""},
		{layer.Target{Kind: layer.Group, ID: "a.>"}, "", ""},
		{layer.Target{Kind: layer.User, User: -1}, "", ""},
		{layer.Target{Kind: layer.Session, ID: strings.Repeat("s", maxKey+1)}, "", ""},
	} {
		got, ok := s.target(c.t)
		if c.kind == "" {
			if ok || s.targets(c.t) != nil {
				t.Errorf("a subject for %+v: %q", c.t, got)
			}
			continue
		}
		all := s.targets(c.t)
		if !ok || !strings.HasPrefix(got, "gh."+c.kind+".") || len(got) != len("gh.u.")+22 || (len(c.id) > 3 && strings.Contains(got[5:], c.id)) ||
			len(all) != 2 || all[0] != got || all[1] == got {
			t.Errorf("subject of %+v = %q (all %q)", c.t, got, all)
		}
		if again, _ := s.target(c.t); again != got {
			t.Errorf("subject of %+v not stable: %q, %q", c.t, got, again)
		}
		if o, _ := other.target(c.t); o != all[1] {
			t.Errorf("subject of %+v under the fallback %q, under that key alone %q", c.t, all[1], o)
		}
	}
	if s.node("a") == s.replies("a") || s.name(0, 'u', "1") == s.name(0, 'g', "1") {
		t.Error("two kinds share a subject")
	}
}

func TestValidPrefixAndRedact(t *testing.T) {
	for p, want := range map[string]bool{"gatehouse": true, "prod.gatehouse": true, "a-b_c": true, "": false, "a..b": false, "a.*": false, "a.>": false, "a b": false, ".a": false, strings.Repeat("a", 65): false} {
		if ValidPrefix(p) != want {
			t.Errorf("ValidPrefix(%q) = %v", p, !want)
		}
	}
	if got := redact("nats://user:secret@h1:4222, nats://h2:4222,tok@h3"); strings.Contains(got, "secret") || strings.Contains(got, "tok") || got != "nats://[redacted]@h1:4222,nats://h2:4222,[redacted]@h3" {
		t.Errorf("redact = %q", got)
	}
}
