package natslayer

import (
	"encoding/binary"
	"errors"
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

// sendHeader is the bytes before a send's target: opSend and the sequence number of
// the sending edge's sends (its instance is in the seal).
const sendHeader = 1 + 8

// encodeSend encodes m: opSend, the sequence number (left 0 for stamp), the kind,
// flags (1: binary), the user, the id, the excluded ids, then the data to the end.
func encodeSend(m layer.Send) []byte {
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
func stamp(b []byte, seq uint64) { binary.BigEndian.PutUint64(b[1:sendHeader], seq) }

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

var errMalformed = errors.New("malformed message")

// decodeSend decodes what encodeSend made, and its sequence number; anything else
// is errMalformed.
func decodeSend(b []byte) (m layer.Send, seq uint64, err error) {
	if len(b) < sendHeader+2 || b[0] != opSend {
		return m, 0, errMalformed
	}
	seq = binary.BigEndian.Uint64(b[1:sendHeader])
	b = b[sendHeader:]
	if b[0] < byte(layer.User) || b[0] > byte(layer.Group) || b[1] > 1 {
		return m, 0, errMalformed
	}
	m.To.Kind, m.Binary = layer.Kind(b[0]), b[1] == 1
	b = b[2:]
	user, n := binary.Uvarint(b)
	if n <= 0 || user > 1<<63-1 {
		return m, 0, errMalformed
	}
	m.To.User, b = int64(user), b[n:]
	var ok bool
	if m.To.ID, b, ok = readString(b); !ok {
		return m, 0, errMalformed
	}
	count, n := binary.Uvarint(b)
	if n <= 0 || count > uint64(len(b)) {
		return m, 0, errMalformed
	}
	b = b[n:]
	for range count { // each id is read before the next is made room for
		var id string
		if id, b, ok = readString(b); !ok {
			return m, 0, errMalformed
		}
		m.Exclude = append(m.Exclude, id)
	}
	m.Data = string(b)
	return m, seq, nil
}

func readString(b []byte) (string, []byte, bool) {
	l, n := binary.Uvarint(b)
	if n <= 0 || l > uint64(len(b)-n) {
		return "", nil, false
	}
	return string(b[n : n+int(l)]), b[n+int(l):], true
}
