// Package djangohash verifies passwords against the hashes Django stores in
// auth_user.password, for authsvc's Django mode: pbkdf2_sha256 and pbkdf2_sha1 at any
// iteration count, argon2 (argon2id and argon2i), bcrypt_sha256, bcrypt and scrypt, as
// Django 3.2 to 5.2 write them. It never writes a hash: Django owns them.
package djangohash

import (
	"crypto/pbkdf2"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/crypto/scrypt"
)

// ErrUnknownAlgorithm is Verify's error for a hash of an algorithm it does not know
// (Django's own hashers for MD5, crypt or unsalted SHA-1, or a custom one).
var ErrUnknownAlgorithm = errors.New("unknown Django password hash algorithm")

// ErrMalformed is Verify's error for a hash of a known algorithm that cannot be read.
var ErrMalformed = errors.New("malformed Django password hash")

// Bounds on the costs a stored hash may ask for: a hash is data in the site's
// database, and a row written with absurd parameters must not stall authsvc.
const (
	maxPBKDF2Iterations = 10_000_000
	maxArgon2Memory     = 1 << 20 // KiB: 1 GiB
	maxArgon2Time       = 100
	maxScryptN          = 1 << 20
)

// Verify reports whether password matches encoded, a value of auth_user.password. An
// unusable password (Django's "!" followed by random characters, or an empty value)
// never matches and is no error. It fails with ErrUnknownAlgorithm or ErrMalformed,
// never matching then.
func Verify(password, encoded string) (bool, error) {
	if encoded == "" || strings.HasPrefix(encoded, "!") {
		return false, nil
	}
	algorithm, rest, ok := strings.Cut(encoded, "$")
	if !ok {
		return false, ErrUnknownAlgorithm
	}
	switch algorithm {
	case "pbkdf2_sha256":
		return verifyPBKDF2(sha256.New, password, rest)
	case "pbkdf2_sha1":
		return verifyPBKDF2(sha1.New, password, rest)
	case "argon2":
		return verifyArgon2(password, rest)
	case "bcrypt_sha256":
		sum := sha256.Sum256([]byte(password))
		return verifyBcrypt(hex.EncodeToString(sum[:]), rest)
	case "bcrypt":
		return verifyBcrypt(password, rest)
	case "scrypt":
		return verifyScrypt(password, rest)
	}
	return false, fmt.Errorf("%w: %q", ErrUnknownAlgorithm, algorithm)
}

// Algorithm returns the algorithm of encoded, for logs ("" for an unusable password).
func Algorithm(encoded string) string {
	if encoded == "" || strings.HasPrefix(encoded, "!") {
		return ""
	}
	a, _, _ := strings.Cut(encoded, "$")
	return a
}

// verifyPBKDF2 checks "<iterations>$<salt>$<base64 key>".
func verifyPBKDF2(h func() hash.Hash, password, rest string) (bool, error) {
	parts := strings.Split(rest, "$")
	if len(parts) != 3 {
		return false, ErrMalformed
	}
	iterations, err := strconv.Atoi(parts[0])
	if err != nil || iterations < 1 || iterations > maxPBKDF2Iterations || parts[1] == "" {
		return false, ErrMalformed
	}
	want, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(want) == 0 {
		return false, ErrMalformed
	}
	got, err := pbkdf2.Key(h, password, []byte(parts[1]), iterations, len(want))
	if err != nil {
		return false, ErrMalformed
	}
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// verifyArgon2 checks "argon2id$v=19$m=…,t=…,p=…$<salt>$<key>" (or argon2i), salt and
// key in base64 without padding.
func verifyArgon2(password, rest string) (bool, error) {
	parts := strings.Split(rest, "$")
	if len(parts) != 5 || parts[1] != "v=19" {
		return false, ErrMalformed
	}
	var m, t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[2], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil || m == 0 || t == 0 || p == 0 ||
		m > maxArgon2Memory || t > maxArgon2Time || fmt.Sprintf("m=%d,t=%d,p=%d", m, t, p) != parts[2] {
		return false, ErrMalformed
	}
	salt, err1 := base64.RawStdEncoding.DecodeString(parts[3])
	want, err2 := base64.RawStdEncoding.DecodeString(parts[4])
	if err1 != nil || err2 != nil || len(want) == 0 {
		return false, ErrMalformed
	}
	var got []byte
	switch parts[0] {
	case "argon2id":
		got = argon2.IDKey([]byte(password), salt, t, m, p, uint32(len(want)))
	case "argon2i":
		got = argon2.Key([]byte(password), salt, t, m, p, uint32(len(want)))
	default:
		return false, ErrMalformed
	}
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// verifyBcrypt checks bcrypt's own string, "$2b$<cost>$…", which Django stores after
// its algorithm's name and "$" (hence the "$$" in "bcrypt$$2b$…").
func verifyBcrypt(password, hashed string) (bool, error) {
	if !strings.HasPrefix(hashed, "$2") {
		return false, ErrMalformed
	}
	switch err := bcrypt.CompareHashAndPassword([]byte(hashed), []byte(password)); {
	case err == nil:
		return true, nil
	case errors.Is(err, bcrypt.ErrMismatchedHashAndPassword):
		return false, nil
	case errors.Is(err, bcrypt.ErrPasswordTooLong):
		return false, nil // bcrypt reads 72 bytes; Django's bcrypt (not _sha256) fails such passwords too
	default:
		return false, ErrMalformed
	}
}

// verifyScrypt checks "<N>$<salt>$<r>$<p>$<base64 key>".
func verifyScrypt(password, rest string) (bool, error) {
	parts := strings.Split(rest, "$")
	if len(parts) != 5 {
		return false, ErrMalformed
	}
	n, err1 := strconv.Atoi(parts[0])
	r, err2 := strconv.Atoi(parts[2])
	p, err3 := strconv.Atoi(parts[3])
	if err1 != nil || err2 != nil || err3 != nil || n < 2 || n > maxScryptN || n&(n-1) != 0 || r < 1 || r > 32 || p < 1 || p > 16 || parts[1] == "" {
		return false, ErrMalformed
	}
	want, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(want) == 0 {
		return false, ErrMalformed
	}
	got, err := scrypt.Key([]byte(password), []byte(parts[1]), n, r, p, len(want))
	if err != nil {
		return false, ErrMalformed
	}
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}
