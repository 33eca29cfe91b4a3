package natslayer

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strconv"
	"strings"

	"github.com/gatehouse/gatehouse/edgesvc/internal/layer"
	"github.com/gatehouse/gatehouse/edgesvc/internal/registry"
)

// What the first byte of a message on the dispatcher's channel says it is.
const (
	opSend    = 's' // a Send, in the binary form below
	opControl = 'c' // a control request, JSON after the byte
)

// sendOverhead is room enough for a send's header (its target and a few excluded ids).
const sendOverhead = 4096

// maxKey is the longest session id a subject is made for: no session authsvc issues
// comes near it, so a longer one matches no connection anywhere.
const maxKey = 512

// subjects names what the layer publishes and subscribes to, under one prefix. No
// subject is built from unescaped input: user ids are decimal, session ids and group
// names are base64url (group names hold '.', NATS's separator), and node ids are
// made of letters, digits, '-' and '_' only.
type subjects struct{ prefix string }

func (s subjects) control() string            { return s.prefix + ".ctl" }
func (s subjects) heartbeat() string          { return s.prefix + ".hb" }
func (s subjects) replies(node string) string { return s.prefix + ".r." + node }
func (s subjects) node(node string) string    { return s.prefix + ".n." + node }

// target returns the subject a send to t goes to, or false when t can match no
// connection on any edge (nothing needs to be sent).
func (s subjects) target(t layer.Target) (string, bool) {
	switch t.Kind {
	case layer.User:
		return s.prefix + ".u." + strconv.FormatInt(t.User, 10), t.User > 0
	case layer.Session:
		return s.prefix + ".s." + base64.RawURLEncoding.EncodeToString([]byte(t.ID)), t.ID != "" && len(t.ID) <= maxKey
	case layer.Group:
		return s.prefix + ".g." + base64.RawURLEncoding.EncodeToString([]byte(t.ID)), registry.ValidGroup(t.ID)
	case layer.Connection:
		node, _, ok := cutLast(t.ID, '.')
		if !ok || !registry.ValidNodeID(node) {
			return "", false
		}
		return s.node(node), true
	}
	return "", false
}

// cutLast cuts s around the last sep.
func cutLast(s string, sep byte) (before, after string, found bool) {
	if i := strings.LastIndexByte(s, sep); i >= 0 {
		return s[:i], s[i+1:], true
	}
	return s, "", false
}

// ValidPrefix reports whether p can prefix the layer's subjects: dot-separated
// tokens of letters, digits, '-' and '_' (no wildcards, no empty token).
func ValidPrefix(p string) bool {
	if p == "" || len(p) > 64 {
		return false
	}
	for _, tok := range strings.Split(p, ".") {
		if !registry.ValidNodeID(tok) {
			return false
		}
	}
	return true
}

// origin says which edge (a run of it) published a send, and where in its order.
type origin struct {
	instance [8]byte // random per start of the edge
	seq      uint64  // 0: not set yet (see stamp)
}

// sendHeader is the bytes before a send's target: opSend, the origin's instance and
// sequence number.
const sendHeader = 1 + 8 + 8

// encodeSend encodes m: opSend, the origin (instance; sequence number left 0 for
// stamp), the kind, flags (1: binary), the user, the id, the excluded ids, then the
// data to the end.
func encodeSend(m layer.Send, instance [8]byte) []byte {
	n := sendHeader + 2 + binary.MaxVarintLen64*(3+len(m.Exclude)) + len(m.To.ID) + len(m.Data)
	for _, id := range m.Exclude {
		n += len(id)
	}
	b := make([]byte, 0, n)
	var flags byte
	if m.Binary {
		flags = 1
	}
	b = append(b, opSend)
	b = append(b, instance[:]...)
	b = append(b, make([]byte, 8)...)
	b = append(b, byte(m.To.Kind), flags)
	b = binary.AppendUvarint(b, uint64(m.To.User))
	b = appendString(b, m.To.ID)
	b = binary.AppendUvarint(b, uint64(len(m.Exclude)))
	for _, id := range m.Exclude {
		b = appendString(b, id)
	}
	return append(b, m.Data...)
}

// stamp sets an encoded send's sequence number.
func stamp(b []byte, seq uint64) { binary.BigEndian.PutUint64(b[9:sendHeader], seq) }

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

var errMalformed = errors.New("malformed message")

// decodeSend decodes what encodeSend made; anything else is errMalformed.
func decodeSend(b []byte) (layer.Send, origin, error) {
	var m layer.Send
	var o origin
	if len(b) < sendHeader+2 || b[0] != opSend {
		return m, o, errMalformed
	}
	copy(o.instance[:], b[1:9])
	o.seq = binary.BigEndian.Uint64(b[9:sendHeader])
	b = b[sendHeader:]
	if b[0] < byte(layer.User) || b[0] > byte(layer.Group) || b[1] > 1 {
		return m, o, errMalformed
	}
	m.To.Kind, m.Binary = layer.Kind(b[0]), b[1] == 1
	b = b[2:]
	user, n := binary.Uvarint(b)
	if n <= 0 || user > 1<<63-1 {
		return m, o, errMalformed
	}
	m.To.User, b = int64(user), b[n:]
	var ok bool
	if m.To.ID, b, ok = readString(b); !ok {
		return m, o, errMalformed
	}
	count, n := binary.Uvarint(b)
	if n <= 0 || count > uint64(len(b)) {
		return m, o, errMalformed
	}
	b = b[n:]
	for range count { // each id is read before the next is made room for
		var id string
		if id, b, ok = readString(b); !ok {
			return m, o, errMalformed
		}
		m.Exclude = append(m.Exclude, id)
	}
	m.Data = string(b)
	return m, o, nil
}

func readString(b []byte) (string, []byte, bool) {
	l, n := binary.Uvarint(b)
	if n <= 0 || l > uint64(len(b)-n) {
		return "", nil, false
	}
	return string(b[n : n+int(l)]), b[n+int(l):], true
}
