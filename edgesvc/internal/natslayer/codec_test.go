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
		b := encodeSend(m, [8]byte{1, 2, 3, 4, 5, 6, 7, 8})
		stamp(b, 42)
		got, o, err := decodeSend(b)
		if err != nil || !reflect.DeepEqual(got, m) || o.seq != 42 || o.instance != [8]byte{1, 2, 3, 4, 5, 6, 7, 8} {
			t.Errorf("round trip of %+v: %+v %+v, %v", m, got, o, err)
		}
	}
}

// TestDecodeRefuses: what is not an encoded send is refused, never a panic.
func TestDecodeRefuses(t *testing.T) {
	good := encodeSend(layer.Send{To: layer.Target{Kind: layer.Group, ID: "g"}, Data: "d", Exclude: []string{"x.1"}}, [8]byte{})
	const header = sendHeader + 10 // origin, kind, flags, user, "g", one excluded "x.1"; then "d"
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
	f.Add(encodeSend(layer.Send{To: layer.Target{Kind: layer.User, User: 1}, Data: "x", Exclude: []string{"a"}}, [8]byte{}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, _, err := decodeSend(b); err == nil {
			if again, _, err := decodeSend(encodeSend(m, [8]byte{})); err != nil || !reflect.DeepEqual(again, m) {
				t.Fatalf("%+v does not round-trip: %+v %v", m, again, err)
			}
		}
	})
}

func TestSubjects(t *testing.T) {
	s := subjects{"gh"}
	for _, c := range []struct {
		t    layer.Target
		want string
	}{
		{layer.Target{Kind: layer.User, User: 7}, "gh.u.7"},
		{layer.Target{Kind: layer.Group, ID: "chat.a"}, "gh.g.Y2hhdC5h"},
		{layer.Target{Kind: layer.Session, ID: ">"}, "gh.s.Pg"},
		{layer.Target{Kind: layer.Connection, ID: "edge-a.12"}, "gh.n.edge-a"},
		{layer.Target{Kind: layer.Connection, ID: "host.with.dots.12"}, ""},
		{layer.Target{Kind: layer.Connection, ID: "*.1"}, ""},
		{layer.Target{Kind: layer.Connection, ID: "12"}, ""},
		{layer.Target{Kind: layer.Group, ID: "a.>"}, ""},
		{layer.Target{Kind: layer.User, User: -1}, ""},
		{layer.Target{Kind: layer.Session, ID: strings.Repeat("s", maxKey+1)}, ""},
	} {
		got, ok := s.target(c.t)
		if !ok {
			got = ""
		}
		if got != c.want {
			t.Errorf("subject of %+v = %q, want %q", c.t, got, c.want)
		}
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
