package registry

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
)

// nodeIDChars are what a node id is made of.
const nodeIDChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"

// ValidNodeID reports whether id can name a node as it is: 1–64 letters, digits, '-'
// and '_' (no '.', which separates it from the counter in connection ids).
func ValidNodeID(id string) bool {
	return id != "" && len(id) <= 64 && strings.Trim(id, nodeIDChars) == ""
}

// NodeID returns id made valid (other characters become '-', cut to 64), or, if id
// is empty, the host name made valid and 8 random hex digits: new at every start.
func NodeID(id string) string {
	if id != "" {
		return cleanNodeID(id, 64)
	}
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return cleanNodeID(host, 55) + "-" + hex.EncodeToString(b[:])
}

func cleanNodeID(id string, max int) string {
	out := []byte(id)
	for i, c := range out {
		if !strings.ContainsRune(nodeIDChars, rune(c)) {
			out[i] = '-'
		}
	}
	if len(out) > max {
		out = out[:max]
	}
	if len(out) == 0 {
		return "edge"
	}
	return string(out)
}

// IDs makes connection ids, "<node id>.<counter>": unique across the nodes sharing a
// layer and across restarts (a default node id is new at every start).
type IDs struct {
	node string
	seq  atomic.Uint64
}

// NewIDs returns the ids of node, which must be valid.
func NewIDs(node string) *IDs { return &IDs{node: node} }

// Next returns a new id.
func (i *IDs) Next() string { return i.node + "." + strconv.FormatUint(i.seq.Add(1), 10) }
