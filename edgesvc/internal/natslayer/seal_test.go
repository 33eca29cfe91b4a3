package natslayer

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

var (
	testKey  = []byte("0123456789abcdef0123456789abcdef-test-key")
	otherKey = []byte("fedcba9876543210fedcba9876543210-other-key")
)

func mustKeyring(t testing.TB, key []byte, fallbacks ...[]byte) *keyring {
	t.Helper()
	k, err := newKeyring(key, fallbacks)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealOpens(t *testing.T) {
	s := &sealer{k: mustKeyring(t, testKey)}
	m := meta{instance: [8]byte{1, 2, 3, 4, 5, 6, 7, 8}, counter: 42, sent: time.Now().UnixNano()}
	msg := s.seal(nil, "gatehouse.u.7", "gatehouse.r.a", m, []byte("hello"))
	if len(msg) != sealOverhead+5 {
		t.Fatalf("sealed %d bytes, want %d", len(msg), sealOverhead+5)
	}
	if bytes.Contains(msg, []byte("hello")) {
		t.Fatal("the payload is readable in the sealed message")
	}
	got, payload, err := s.open("gatehouse.u.7", "gatehouse.r.a", bytes.Clone(msg))
	if err != nil || got != m || string(payload) != "hello" {
		t.Fatalf("open: %v %+v %q", err, got, payload)
	}
	// Two seals of one message differ: the nonce is random.
	if again := s.seal(nil, "gatehouse.u.7", "gatehouse.r.a", m, []byte("hello")); bytes.Equal(again, msg) {
		t.Fatal("two seals are the same bytes")
	}
}

// TestSealRefuses: what was not sealed with a key of the ring, for this subject and
// reply, as it was, does not open.
func TestSealRefuses(t *testing.T) {
	s := &sealer{k: mustKeyring(t, testKey)}
	m := meta{instance: [8]byte{9}, counter: 1, sent: time.Now().UnixNano()}
	msg := s.seal(nil, "gatehouse.g.bG9iYnk", "", m, []byte(`{"op":"disconnect"}`))
	other := &sealer{k: mustKeyring(t, otherKey)}
	cases := map[string]struct {
		s              *sealer
		subject, reply string
		msg            []byte
	}{
		"another key":      {other, "gatehouse.g.bG9iYnk", "", msg},
		"another subject":  {s, "gatehouse.g.b3RoZXI", "", msg},
		"a reply added":    {s, "gatehouse.g.bG9iYnk", "gatehouse.r.x", msg},
		"unsealed":         {s, "gatehouse.g.bG9iYnk", "", []byte(`c{"op":"disconnect","code":4401}`)},
		"empty":            {s, "gatehouse.g.bG9iYnk", "", nil},
		"cut short":        {s, "gatehouse.g.bG9iYnk", "", msg[:len(msg)-1]},
		"another version":  {s, "gatehouse.g.bG9iYnk", "", append([]byte{2}, msg[1:]...)},
		"a bit flipped":    {s, "gatehouse.g.bG9iYnk", "", flip(msg, envelopeHead+3)},
		"nonce changed":    {s, "gatehouse.g.bG9iYnk", "", flip(msg, 1+keyIDSize)},
		"key id changed":   {s, "gatehouse.g.bG9iYnk", "", flip(msg, 1)},
		"tag changed":      {s, "gatehouse.g.bG9iYnk", "", flip(msg, len(msg)-1)},
		"header only":      {s, "gatehouse.g.bG9iYnk", "", msg[:sealOverhead-1]},
		"garbage of size":  {s, "gatehouse.g.bG9iYnk", "", bytes.Repeat([]byte{1}, len(msg))},
		"zeros of sealLen": {s, "gatehouse.g.bG9iYnk", "", make([]byte, sealOverhead)},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if _, _, err := c.s.open(c.subject, c.reply, bytes.Clone(c.msg)); err == nil {
				t.Fatal("opened")
			}
		})
	}
}

func flip(b []byte, i int) []byte {
	b = bytes.Clone(b)
	b[i] ^= 1
	return b
}

// TestSealFallbacks: a fallback key opens what it sealed, and never seals.
func TestSealFallbacks(t *testing.T) {
	old := &sealer{k: mustKeyring(t, otherKey)}
	rotated := &sealer{k: mustKeyring(t, testKey, otherKey)}
	fresh := &sealer{k: mustKeyring(t, testKey)}
	m := meta{instance: [8]byte{3}, counter: 1, sent: time.Now().UnixNano()}
	if _, p, err := rotated.open("s", "", old.seal(nil, "s", "", m, []byte("x"))); err != nil || string(p) != "x" {
		t.Fatalf("a fallback does not open what the old key sealed: %v", err)
	}
	sealed := rotated.seal(nil, "s", "", m, []byte("y"))
	if _, _, err := old.open("s", "", bytes.Clone(sealed)); err == nil {
		t.Fatal("a ring sealed with its fallback")
	}
	if _, _, err := fresh.open("s", "", sealed); err != nil {
		t.Fatalf("the current key does not open what the rotated ring sealed: %v", err)
	}
}

func TestKeyringRefusesShortKeys(t *testing.T) {
	for name, c := range map[string]struct {
		key       []byte
		fallbacks [][]byte
		want      string
	}{
		"no key":         {nil, nil, "the layer key is 0 bytes"},
		"short key":      {[]byte(strings.Repeat("k", MinKeyBytes-1)), nil, "at least 32"},
		"short fallback": {testKey, [][]byte{[]byte("short")}, "fallback layer key 1"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := newKeyring(c.key, c.fallbacks); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error saying %q", err, c.want)
			}
		})
	}
	if k, err := newKeyring(testKey, [][]byte{testKey}); err != nil || len(k.keys) != 1 {
		t.Fatalf("a fallback equal to the key: %v", err)
	}
}

func TestReplayGuard(t *testing.T) {
	start := time.Now()
	g := newReplayGuard(start)
	now := start.Add(time.Second) // within the first window: the start counts
	a, b := [8]byte{'a'}, [8]byte{'b'}
	at := func(d time.Duration) int64 { return now.Add(d).UnixNano() }
	steps := []struct {
		name string
		m    meta
		want bool
	}{
		{"first from a", meta{a, 5, at(0)}, true},
		{"a again", meta{a, 5, at(0)}, false},
		{"a earlier", meta{a, 4, at(0)}, false},
		{"a later, with a gap", meta{a, 9, at(0)}, true},
		{"b, its own counter", meta{b, 1, at(0)}, true},
		{"counter 0", meta{[8]byte{'c'}, 0, at(0)}, false},
		{"sent too long ago", meta{[8]byte{'d'}, 1, at(-replayWindow - time.Second)}, false},
		{"a little behind, after the start", meta{[8]byte{'h'}, 1, start.Add(-startSkew + time.Millisecond).UnixNano()}, true},
		{"sent in the future", meta{[8]byte{'e'}, 1, at(replayWindow + time.Second)}, false},
		{"sent before this run listened", meta{[8]byte{'f'}, 1, start.Add(-startSkew - time.Millisecond).UnixNano()}, false},
		{"a little ahead", meta{[8]byte{'g'}, 1, at(time.Second)}, true},
	}
	for _, s := range steps {
		if got := g.accept(s.m, now); got != s.want {
			t.Fatalf("%s: accepted %v, want %v", s.name, got, s.want)
		}
	}
	// Past the first window, the start no longer counts (the wall clock may have been
	// set back since); the window alone does.
	later := start.Add(replayWindow + time.Second)
	g.since = later.UnixNano() + int64(time.Minute) // as if the wall clock had been set back a minute since
	if !g.accept(meta{[8]byte{'i'}, 1, later.Add(-time.Second).UnixNano()}, later) {
		t.Fatal("a message within the window refused for predating the start, a window after it")
	}
	g.sweep(later.Add(2 * replayWindow))
	if len(g.last) != 0 {
		t.Fatalf("%d instances remembered past the window", len(g.last))
	}
}

// FuzzOpen: whatever arrives on NATS, open refuses it or returns a payload inside it,
// and never panics.
func FuzzOpen(f *testing.F) {
	s := &sealer{k: mustKeyring(f, testKey)}
	f.Add(s.seal(nil, "p.ctl", "p.r.a", meta{counter: 1}, []byte("c{}")))
	f.Add([]byte{1, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, msg []byte) {
		n := len(msg)
		_, p, err := s.open("p.ctl", "p.r.a", msg)
		if err == nil && len(p) != n-sealOverhead {
			t.Fatalf("payload of %d bytes from %d", len(p), n)
		}
	})
}

func BenchmarkSeal(b *testing.B) {
	s := &sealer{k: mustKeyring(b, testKey)}
	payload := bytes.Repeat([]byte("x"), 200)
	var buf []byte
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		buf = s.seal(buf, "gatehouse.g.bG9iYnk", "", meta{counter: 1}, payload)
	}
}

func BenchmarkOpen(b *testing.B) {
	s := &sealer{k: mustKeyring(b, testKey)}
	payload := bytes.Repeat([]byte("x"), 200)
	msg := s.seal(nil, "gatehouse.g.bG9iYnk", "", meta{counter: 1}, payload)
	buf := make([]byte, len(msg))
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		copy(buf, msg)
		if _, _, err := s.open("gatehouse.g.bG9iYnk", "", buf); err != nil {
			b.Fatal(err)
		}
	}
}
