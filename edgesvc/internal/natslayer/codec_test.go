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
		got, err := decodeSend(encodeSend(m))
		if err != nil || !reflect.DeepEqual(got, m) {
			t.Errorf("round trip of %+v: %+v, %v", m, got, err)
		}
	}
}

// TestDecodeRefuses: what is not an encoded send is refused, never a panic.
func TestDecodeRefuses(t *testing.T) {
	good := encodeSend(layer.Send{To: layer.Target{Kind: layer.Group, ID: "g"}, Data: "d", Exclude: []string{"x.1"}})
	const header = 11       // 's', kind, flags, user, "g", one excluded "x.1"; then "d"
	for i := range header { // every cut inside the header
		if m, err := decodeSend(good[:i]); err == nil {
			t.Errorf("a send cut to %d bytes decoded: %+v", i, m)
		}
	}
	for _, b := range [][]byte{nil, {opSend}, {opSend, 9, 0}, {opSend, 1, 7}, {'x', 1, 0, 0, 0, 0}, {opSend, 4, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}, {opSend, 1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}} {
		if m, err := decodeSend(b); err == nil {
			t.Errorf("decodeSend(%q) = %+v", b, m)
		}
	}
}

func FuzzDecodeSend(f *testing.F) {
	f.Add(encodeSend(layer.Send{To: layer.Target{Kind: layer.User, User: 1}, Data: "x", Exclude: []string{"a"}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := decodeSend(b); err == nil {
			if again, err := decodeSend(encodeSend(m)); err != nil || !reflect.DeepEqual(again, m) {
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
