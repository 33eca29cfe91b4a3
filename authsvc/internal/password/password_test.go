package password

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
)

// cheap keeps the tests fast; the format and the checks are the same at any cost.
var cheap = Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}

func TestHashVerify(t *testing.T) {
	h := NewHasher(cheap)
	enc, err := h.Hash(t.Context(), "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(enc, "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Fatalf("hash %q does not carry its parameters", enc)
	}
	for _, tc := range []struct {
		pw   string
		want bool
	}{{"correct horse", true}, {"correct horsf", false}, {"", false}, {"Correct horse", false}} {
		ok, err := h.Verify(t.Context(), enc, tc.pw)
		if err != nil || ok != tc.want {
			t.Errorf("Verify(%q) = %v, %v; want %v", tc.pw, ok, err, tc.want)
		}
	}
	enc2, _ := h.Hash(t.Context(), "correct horse")
	if enc2 == enc {
		t.Error("two hashes of one password are equal: salt is not random")
	}
}

func TestVerifyUsesStoredParams(t *testing.T) {
	old := NewHasher(Params{Memory: 128, Time: 2, Threads: 2, SaltLen: 16, KeyLen: 32})
	enc, _ := old.Hash(t.Context(), "pw")
	h := NewHasher(cheap)
	if ok, err := h.Verify(t.Context(), enc, "pw"); !ok || err != nil {
		t.Fatalf("Verify with other params = %v, %v", ok, err)
	}
	if !h.NeedsRehash(enc) {
		t.Error("NeedsRehash = false for other params")
	}
	enc2, _ := h.Hash(t.Context(), "pw")
	if h.NeedsRehash(enc2) {
		t.Error("NeedsRehash = true for own params")
	}
}

func TestDecodeRefuses(t *testing.T) {
	for name, enc := range map[string]string{
		"empty":        "",
		"pbkdf2":       "pbkdf2_sha256$600000$salt$hash",
		"argon2i":      "$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$a2V5a2V5a2V5a2V5a2V5a2V5",
		"version":      "$argon2id$v=16$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$a2V5a2V5a2V5a2V5a2V5a2V5",
		"param order":  "$argon2id$v=19$t=1,m=64,p=1$c2FsdHNhbHRzYWx0$a2V5a2V5a2V5a2V5a2V5a2V5",
		"huge memory":  "$argon2id$v=19$m=4294967295,t=1,p=1$c2FsdHNhbHRzYWx0$a2V5a2V5a2V5a2V5a2V5a2V5",
		"zero time":    "$argon2id$v=19$m=64,t=0,p=1$c2FsdHNhbHRzYWx0$a2V5a2V5a2V5a2V5a2V5a2V5",
		"bad salt":     "$argon2id$v=19$m=64,t=1,p=1$!!!$a2V5a2V5a2V5a2V5a2V5a2V5",
		"short key":    "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$a2V5",
		"extra fields": "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$a2V5a2V5a2V5a2V5a2V5a2V5$x",
	} {
		t.Run(name, func(t *testing.T) {
			if _, _, _, err := Decode(enc); !errors.Is(err, ErrMalformed) {
				t.Fatalf("Decode(%q) err = %v, want ErrMalformed", enc, err)
			}
			h := NewHasher(cheap)
			if ok, err := h.Verify(t.Context(), enc, "pw"); ok || err == nil {
				t.Fatalf("Verify(%q) = %v, %v; want refusal", enc, ok, err)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	h := NewHasher(cheap)
	enc, _ := h.Hash(f.Context(), "seed")
	f.Add(enc)
	f.Add("$argon2id$v=19$m=64,t=1,p=1$$")
	f.Add("$argon2id$v=19$m=,t=,p=$x$y")
	f.Fuzz(func(t *testing.T, s string) {
		p, salt, key, err := Decode(s)
		if err != nil {
			return
		}
		// Whatever Decode accepts must be within the limits and re-encode to itself.
		if p.Memory > maxMemory || p.Time > maxTime || len(key) > maxKeyLen || len(salt) > maxSaltLen {
			t.Fatalf("Decode(%q) accepted out-of-range parameters %+v", s, p)
		}
		p2, salt2, key2, err := Decode(encode(p, salt, key))
		if err != nil || p2 != p || string(salt2) != string(salt) || string(key2) != string(key) {
			t.Fatalf("Decode(encode(Decode(%q))) differs: %+v %v", s, p2, err)
		}
	})
}

// TestInFlightWaiting: the gauges count slots taken and callers blocked for one, and
// a caller that gives up stops being counted.
func TestInFlightWaiting(t *testing.T) {
	h := NewHasher(cheap)
	if h.InFlight() != 0 || h.Waiting() != 0 {
		t.Fatalf("idle hasher: in flight %d, waiting %d", h.InFlight(), h.Waiting())
	}
	for range cap(h.slots) { // every slot busy, as with GOMAXPROCS long hashes
		if err := h.acquire(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() {
		_, err := h.Hash(ctx, "queued")
		done <- err
	}()
	for h.Waiting() != 1 { // the goroutine reaches acquire
		runtime.Gosched()
	}
	if h.InFlight() != cap(h.slots) {
		t.Errorf("in flight %d, want %d", h.InFlight(), cap(h.slots))
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Hash with every slot taken and ctx canceled = %v", err)
	}
	if h.Waiting() != 0 {
		t.Errorf("waiting %d after the caller gave up", h.Waiting())
	}
	for range cap(h.slots) {
		h.release()
	}
	if h.InFlight() != 0 {
		t.Errorf("in flight %d after every release", h.InFlight())
	}
}
