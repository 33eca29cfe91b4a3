package natslayer

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strconv"

	"github.com/gatehouse/gatehouse/edgesvc/internal/layer"
	"github.com/gatehouse/gatehouse/edgesvc/internal/registry"
)

// subjects names what the layer publishes and subscribes to, under one prefix. A
// user, session, group or node is named by a keyed hash (HMAC-SHA256 under a key
// derived from the layer key, 128 bits, base64url): a NATS client without the key
// learns from a subject neither who is online, nor a session or group, nor an edge —
// only that two messages went to one name. No subject is built from raw input. During
// a rotation an edge subscribes under the names of every key it holds and publishes
// under the current one's.
type subjects struct {
	prefix string
	keys   [][]byte // keys[0] names what is published; every key names what is subscribed
}

const infoSubjects = "gatehouse layer v1 subjects"

// newSubjects derives the naming keys from the layer keys (the current one first).
func newSubjects(prefix string, secrets [][]byte) subjects {
	s := subjects{prefix: prefix}
	for _, secret := range secrets {
		k, err := hkdf.Key(sha256.New, secret, nil, infoSubjects, sha256.Size)
		if err != nil {
			panic(err) // only for a length SHA-256 cannot give
		}
		s.keys = append(s.keys, k)
	}
	return s
}

func (s subjects) control() string   { return s.prefix + ".ctl" }
func (s subjects) heartbeat() string { return s.prefix + ".hb" }

// replies is where a node's answers go; node is the node named by key i.
func (s subjects) replies(node string) string { return s.name(0, 'r', node) }
func (s subjects) node(node string) string    { return s.name(0, 'n', node) }

// name is the subject of what kind names id under key i: prefix.kind.hash.
func (s subjects) name(i int, kind byte, id string) string {
	m := hmac.New(sha256.New, s.keys[i])
	m.Write([]byte{kind})
	m.Write([]byte(id))
	var sum [sha256.Size]byte
	return s.prefix + "." + string(kind) + "." + base64.RawURLEncoding.EncodeToString(m.Sum(sum[:0])[:16])
}

// all returns the subjects of what kind names id under every key.
func (s subjects) all(kind byte, id string) []string {
	out := make([]string, len(s.keys))
	for i := range s.keys {
		out[i] = s.name(i, kind, id)
	}
	return out
}

// target returns the kind and id naming t's subject, or false when t can match no
// connection on any edge (nothing needs to be sent).
func targetName(t layer.Target) (kind byte, id string, ok bool) {
	switch t.Kind {
	case layer.User:
		return 'u', strconv.FormatInt(t.User, 10), t.User > 0
	case layer.Session:
		return 's', t.ID, t.ID != "" && len(t.ID) <= maxKey
	case layer.Group:
		return 'g', t.ID, registry.ValidGroup(t.ID)
	case layer.Connection:
		node, _, ok := cutLast(t.ID, '.')
		return 'n', node, ok && registry.ValidNodeID(node)
	}
	return 0, "", false
}

// target returns the subject a send to t is published to, or false when t can match
// no connection on any edge.
func (s subjects) target(t layer.Target) (string, bool) {
	kind, id, ok := targetName(t)
	if !ok {
		return "", false
	}
	return s.name(0, kind, id), true
}

// targets returns the subjects a send to t may come on (one per key).
func (s subjects) targets(t layer.Target) []string {
	kind, id, ok := targetName(t)
	if !ok {
		return nil
	}
	return s.all(kind, id)
}

// maxKey is the longest session id a subject is made for: no session authsvc issues
// comes near it, so a longer one matches no connection anywhere.
const maxKey = 512
