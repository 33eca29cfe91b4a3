package natslayer

import (
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

// Every message an edge publishes is sealed with XChaCha20-Poly1305 under a key
// derived from the layer key, so that a NATS client without the key can neither
// read what the edges say nor make them do anything. A sealed message is:
//
//	version (1) | key id (4) | nonce (24, random) | ciphertext of
//	    instance (8) | counter (8, big-endian) | sent (8, unix ns, big-endian) | payload
//	| tag (16)
//
// The associated data is the version, the key id, the subject and the reply subject:
// a message cannot be moved to another subject, or its answers sent elsewhere. The
// instance names one run of one edge; its counter grows by one per message it
// publishes. NATS hands one connection's messages, on every subject, to a subscriber
// in the order they were published, and an edge reads all of its subscriptions in
// that order (one channel): so a message whose counter is not above the last one
// heard from its instance is a replay, as is one sent outside the replay window.

const (
	// MinKeyBytes is the shortest layer key accepted.
	MinKeyBytes = 32

	sealVersion  = 1
	keyIDSize    = 4
	envelopeHead = 1 + keyIDSize + chacha20poly1305.NonceSizeX
	innerHead    = 8 + 8 + 8
	// sealOverhead is what sealing adds to a payload.
	sealOverhead = envelopeHead + innerHead + chacha20poly1305.Overhead

	// replayWindow bounds how far a message's send time may be from the receiver's
	// clock: the edges' clocks must agree within it.
	replayWindow = 30 * time.Second
	// startSkew is how long before a receiver started a message may have been sent
	// and still be taken (it was in flight, or the sender's clock is a little behind).
	startSkew = 5 * time.Second
)

// HKDF-SHA256 infos: the seal key and its public id are derived from the layer key
// apart, so that the id says nothing of the key.
const (
	infoSeal  = "gatehouse layer v1 seal"
	infoKeyID = "gatehouse layer v1 key id"
)

// meta is what a sealed message says of its sender, inside the seal.
type meta struct {
	instance [8]byte // the run of the edge that sent it
	counter  uint64  // its place among that run's messages, from 1
	sent     int64   // unix ns, the sender's clock
}

// keyring holds the layer key (sealing, and opening) and its fallbacks (opening only).
type keyring struct {
	keys    []sealKey // keys[0] seals
	secrets [][]byte  // the keys as given, without repeats, the current one first
}

type sealKey struct {
	id   [keyIDSize]byte
	aead cipher.AEAD
}

// newKeyring derives the keys; every key must be at least MinKeyBytes long.
func newKeyring(key []byte, fallbacks [][]byte) (*keyring, error) {
	k := &keyring{}
	all := append([][]byte{key}, fallbacks...)
	for i, secret := range all {
		if len(secret) < MinKeyBytes {
			what := "the layer key"
			if i > 0 {
				what = fmt.Sprintf("fallback layer key %d", i)
			}
			return nil, fmt.Errorf("%s is %d bytes: at least %d are needed", what, len(secret), MinKeyBytes)
		}
		sk, err := hkdf.Key(sha256.New, secret, nil, infoSeal, chacha20poly1305.KeySize)
		if err != nil {
			return nil, err
		}
		id, err := hkdf.Key(sha256.New, secret, nil, infoKeyID, keyIDSize)
		if err != nil {
			return nil, err
		}
		if slices.ContainsFunc(k.keys, func(o sealKey) bool { return o.id == [keyIDSize]byte(id) }) {
			if slices.ContainsFunc(all[:i], func(o []byte) bool { return string(o) == string(secret) }) {
				continue // the same key twice
			}
			return nil, fmt.Errorf("two layer keys share an id (one chance in 2^32): make another key")
		}
		aead, err := chacha20poly1305.NewX(sk)
		if err != nil {
			return nil, err
		}
		k.keys = append(k.keys, sealKey{id: [keyIDSize]byte(id), aead: aead})
		k.secrets = append(k.secrets, secret)
	}
	return k, nil
}

// sealer seals and opens for one goroutine at a time (it reuses its buffers).
type sealer struct {
	k  *keyring
	ad []byte
}

// associated returns the associated data of a message whose envelope starts with head.
func (s *sealer) associated(head []byte, subject, reply string) []byte {
	s.ad = append(append(append(append(s.ad[:0], head[:1+keyIDSize]...), subject...), 0), reply...)
	return s.ad
}

// seal returns payload sealed for subject and reply, in dst's storage when it is
// large enough.
func (s *sealer) seal(dst []byte, subject, reply string, m meta, payload []byte) []byte {
	key := s.k.keys[0]
	dst = slices.Grow(dst[:0], sealOverhead+len(payload))
	dst = append(dst, sealVersion)
	dst = append(dst, key.id[:]...)
	dst = dst[:envelopeHead]
	_, _ = rand.Read(dst[1+keyIDSize : envelopeHead])
	dst = append(dst, m.instance[:]...)
	dst = binary.BigEndian.AppendUint64(dst, m.counter)
	dst = binary.BigEndian.AppendUint64(dst, uint64(m.sent))
	dst = append(dst, payload...)
	ad := s.associated(dst, subject, reply)
	return key.aead.Seal(dst[:envelopeHead], dst[1+keyIDSize:envelopeHead], dst[envelopeHead:], ad)
}

var errOpen = errors.New("does not open with the layer key or a fallback")

// open authenticates and decrypts msg, received on subject with reply, in place, and
// returns its sender and payload (which shares msg's storage).
func (s *sealer) open(subject, reply string, msg []byte) (meta, []byte, error) {
	var m meta
	if len(msg) < sealOverhead || msg[0] != sealVersion {
		return m, nil, errOpen
	}
	id := [keyIDSize]byte(msg[1 : 1+keyIDSize])
	nonce := msg[1+keyIDSize : envelopeHead]
	for _, key := range s.k.keys { // no two share an id (newKeyring)
		if key.id != id {
			continue
		}
		ad := s.associated(msg, subject, reply)
		plain, err := key.aead.Open(msg[envelopeHead:envelopeHead], nonce, msg[envelopeHead:], ad)
		if err != nil {
			return m, nil, errOpen
		}
		m.instance = [8]byte(plain[:8])
		m.counter = binary.BigEndian.Uint64(plain[8:16])
		m.sent = int64(binary.BigEndian.Uint64(plain[16:innerHead]))
		return m, plain[innerHead:], nil
	}
	return m, nil, errOpen
}

// replayGuard drops what was heard before, or sent outside the replay window: it
// keeps, for each sending instance heard within the window, the last counter.
type replayGuard struct {
	started time.Time // with its monotonic reading
	since   int64     // unix ns: messages sent earlier were not meant for this run
	mu      sync.Mutex
	last    map[[8]byte]heardFrom
}

type heardFrom struct {
	counter uint64
	sent    int64
}

// maxInstances bounds the instances remembered: each is an edge's run that sealed a
// message with the layer key within the window.
const maxInstances = 4 * maxPeers

func newReplayGuard(started time.Time) *replayGuard {
	return &replayGuard{started: started, since: started.Add(-startSkew).UnixNano(), last: map[[8]byte]heardFrom{}}
}

// accept reports whether m is new: sent within the window of now (and, during the
// first window of this run, not before it started listening: later, the window alone
// says so, whatever the wall clock did meanwhile), with a counter above the last
// heard from its instance.
func (g *replayGuard) accept(m meta, now time.Time) bool {
	n := now.UnixNano()
	w := replayWindow.Nanoseconds()
	if m.sent < n-w || m.sent > n+w || m.counter == 0 {
		return false
	}
	if m.sent < g.since && now.Sub(g.started) < replayWindow {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	h, ok := g.last[m.instance]
	if ok && m.counter <= h.counter {
		return false
	}
	if !ok && len(g.last) >= maxInstances {
		g.sweepLocked(n)
		if len(g.last) >= maxInstances {
			return false
		}
	}
	g.last[m.instance] = heardFrom{counter: m.counter, sent: m.sent}
	return true
}

// sweep forgets the instances not heard from within the window: anything they sent
// is outside it by now, so it would be refused anyway.
func (g *replayGuard) sweep(now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.sweepLocked(now.UnixNano())
}

func (g *replayGuard) sweepLocked(now int64) {
	for inst, h := range g.last {
		if h.sent < now-replayWindow.Nanoseconds() {
			delete(g.last, inst)
		}
	}
}
