package djangohash

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// The vectors are Django's own (its test suite's, and one made with Django 5.2.7;
// shared/DJANGO.md): hashes of "lètmein" with the salt "seasalt", and of "secret".
func TestDjangoVectors(t *testing.T) {
	for name, c := range map[string]struct{ password, encoded string }{
		"pbkdf2_sha256, Django 3.2":   {"lètmein", "pbkdf2_sha256$260000$seasalt$YlZ2Vggtqdc61YjArZuoApoBh9JNGYoDRBUGu6tcJQo="},
		"pbkdf2_sha256, Django 4.2":   {"lètmein", "pbkdf2_sha256$600000$seasalt$OAXyhAQ/4ZDA9V5RMExt3C1OwQdUpLZ99vm1McFlLRA="},
		"pbkdf2_sha256, Django 5.2":   {"lètmein", "pbkdf2_sha256$1000000$seasalt$r1uLUxoxpP2Ued/qxvmje7UH9PUJBkRrvf9gGPL7Cps="},
		"scrypt, Django 5.2":          {"lètmein", "scrypt$16384$seasalt$8$5$ECMIUp+LMxMSK8xB/IVyba+KYGTI7FTnet025q/1f/vBAVnnP3hdYqJuRi+mJn6ji6ze3Fbb7JEFPKGpuEf5vw=="},
		"argon2id, Django's own test": {"secret", "argon2$argon2id$v=19$m=102400,t=2,p=8$Y041dExhNkljRUUy$TMa6A8fPJhCAUXRhJXCXdw"},
		// pbkdf2_sha1 is RFC 6070's own vectors, in Django's form.
		"pbkdf2_sha1, RFC 6070, c=1":    {"password", "pbkdf2_sha1$1$salt$" + b64hex(t, "0c60c80f961f0e71f3a9b524af6012062fe037a6")},
		"pbkdf2_sha1, RFC 6070, c=4096": {"password", "pbkdf2_sha1$4096$salt$" + b64hex(t, "4b007901b765489abead49d926f721d065a429c1")},
	} {
		t.Run(name, func(t *testing.T) {
			if ok, err := Verify(c.password, c.encoded); !ok || err != nil {
				t.Fatalf("the right password: %v, %v", ok, err)
			}
			if ok, err := Verify(c.password+"x", c.encoded); ok || err != nil {
				t.Fatalf("a wrong password: %v, %v", ok, err)
			}
		})
	}
}

// b64hex is the standard base64 of the bytes written in hex.
func b64hex(t *testing.T, h string) string {
	t.Helper()
	b, err := hex.DecodeString(h)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

// TestBcrypt: Django's bcrypt_sha256 hashes the hex SHA-256 of the password, bcrypt
// the password itself; both store bcrypt's string after "$".
func TestBcrypt(t *testing.T) {
	sum := sha256.Sum256([]byte("lètmein"))
	pre, err := bcrypt.GenerateFromPassword([]byte(hex.EncodeToString(sum[:])), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := bcrypt.GenerateFromPassword([]byte("lètmein"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	for _, encoded := range []string{"bcrypt_sha256$" + string(pre), "bcrypt$" + string(plain)} {
		if ok, err := Verify("lètmein", encoded); !ok || err != nil {
			t.Errorf("%s: the right password: %v, %v", encoded, ok, err)
		}
		if ok, err := Verify("letmein", encoded); ok || err != nil {
			t.Errorf("%s: a wrong password: %v, %v", encoded, ok, err)
		}
	}
	if ok, _ := Verify("lètmein", "bcrypt$"+string(pre)); ok {
		t.Error("bcrypt took a bcrypt_sha256 hash")
	}
}

// TestRefusals: what cannot match says so, and never matches.
func TestRefusals(t *testing.T) {
	for name, c := range map[string]struct {
		encoded string
		want    error
	}{
		"unusable":             {"!" + strings.Repeat("x", 40), nil},
		"empty":                {"", nil},
		"md5":                  {"md5$seasalt$f5531bef9f3687d0ccf0f617f0e25573", ErrUnknownAlgorithm},
		"no algorithm":         {"plaintext", ErrUnknownAlgorithm},
		"pbkdf2, no key":       {"pbkdf2_sha256$1000$salt$", ErrMalformed},
		"pbkdf2, bad count":    {"pbkdf2_sha256$-1$salt$AAAA", ErrMalformed},
		"pbkdf2, absurd count": {"pbkdf2_sha256$999999999$salt$AAAA", ErrMalformed},
		"pbkdf2, parts":        {"pbkdf2_sha256$1000$salt", ErrMalformed},
		"argon2, version":      {"argon2$argon2id$v=16$m=8,t=1,p=1$c2FsdHNhbHQ$AAAA", ErrMalformed},
		"argon2, huge memory":  {"argon2$argon2id$v=19$m=99999999,t=1,p=1$c2FsdHNhbHQ$AAAA", ErrMalformed},
		"argon2, variant":      {"argon2$argon2d$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$AAAA", ErrMalformed},
		"bcrypt, not bcrypt":   {"bcrypt$xyz", ErrMalformed},
		"scrypt, N not 2^k":    {"scrypt$1000$salt$8$1$AAAA", ErrMalformed},
		"scrypt, huge N":       {"scrypt$1073741824$salt$8$1$AAAA", ErrMalformed},
	} {
		t.Run(name, func(t *testing.T) {
			ok, err := Verify("anything", c.encoded)
			if ok || !errors.Is(err, c.want) || (c.want == nil && err != nil) {
				t.Fatalf("Verify = %v, %v; want false, %v", ok, err, c.want)
			}
		})
	}
	if Algorithm("pbkdf2_sha256$1$s$k") != "pbkdf2_sha256" || Algorithm("!x") != "" {
		t.Error("Algorithm")
	}
}

// FuzzVerify: whatever a row holds, Verify answers without a panic.
func FuzzVerify(f *testing.F) {
	f.Add("pbkdf2_sha256$1$seasalt$AAAA")
	f.Add("argon2$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$AAAA")
	f.Add("scrypt$16$salt$1$1$AAAA")
	f.Add("bcrypt_sha256$$2b$04$abcdefghijklmnopqrstuu")
	f.Fuzz(func(t *testing.T, encoded string) {
		if len(encoded) > 200 {
			return
		}
		_, _ = Verify("pw", encoded)
	})
}
