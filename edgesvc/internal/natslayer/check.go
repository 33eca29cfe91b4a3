package natslayer

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/gatehouse/gatehouse/edgesvc/internal/layer"
	"github.com/gatehouse/gatehouse/edgesvc/internal/registry"
)

// What arrives from the layer is checked as the edge's API checks what it is asked:
// even a message sealed with the layer key (an edge of another version, or one that
// misbehaves) makes an edge do only what an API call could.

// maxListLimit is the most connections a listing asks one edge for (a page and one
// more, to tell whether there is a next page).
const maxListLimit = 1001

// validTarget reports whether t names connections the API could name: a positive
// user, a session or connection id no longer than any subject is made for, or (if
// allowGroup) a valid group.
func validTarget(t layer.Target, allowGroup bool) bool {
	switch t.Kind {
	case layer.User:
		return t.User > 0 && t.ID == ""
	case layer.Session, layer.Connection:
		return t.ID != "" && len(t.ID) <= maxKey && t.User == 0
	case layer.Group:
		return allowGroup && registry.ValidGroup(t.ID) && t.User == 0
	}
	return false
}

// checkSend returns why a send received may not be delivered, or nil. Its size is
// bounded by NATS's max_payload, not by this edge's read limit: edges may differ in
// theirs for a while (a rolling change), and the sender held it to its own.
func checkSend(m layer.Send) error {
	if !validTarget(m.To, true) {
		return errors.New("invalid target")
	}
	return nil
}

// checkRequest returns why a control request received on reply may not be applied
// or answered, or nil.
func checkRequest(r request, reply string, s subjects) error {
	if !registry.ValidNodeID(r.From) || r.ID == 0 {
		return errors.New("no sender")
	}
	if !slices.Contains(s.all('r', r.From), reply) {
		return errors.New("answers asked for elsewhere than the sender's replies subject")
	}
	switch r.Op {
	case opAdd, opDiscard:
		if r.To == nil || !validTarget(*r.To, false) {
			return errors.New("invalid target")
		}
		if !registry.ValidGroup(r.Group) {
			return errors.New("invalid group")
		}
	case opDisconnect:
		if r.To == nil || !validTarget(*r.To, true) {
			return errors.New("invalid target")
		}
		if !layer.ValidCloseCode(r.Code) {
			return fmt.Errorf("close code %d: the layer carries only 4000-4999 but 4401", r.Code)
		}
		if len(r.Reason) > layer.MaxReason || !utf8.ValidString(r.Reason) {
			return errors.New("close reason over 120 bytes or not UTF-8")
		}
	case opList:
		if r.To != nil && !validTarget(*r.To, true) {
			return errors.New("invalid target")
		}
		if r.Limit < 1 || r.Limit > maxListLimit {
			return fmt.Errorf("limit %d, want 1-%d", r.Limit, maxListLimit)
		}
	case opPresence:
		if !registry.ValidGroup(r.Group) {
			return errors.New("invalid group")
		}
	default:
		return fmt.Errorf("unknown operation %q", r.Op)
	}
	return nil
}

// checkAnswer returns why an answer from node to a request asking for limit
// connections (0: not a listing) may not be taken, or nil.
func checkAnswer(a answer, limit int) error {
	if len(a.Conns) > 0 && limit == 0 || len(a.Conns) > limit && limit > 0 {
		return fmt.Errorf("%d connections for a request of %d", len(a.Conns), limit)
	}
	for _, c := range a.Conns {
		if node, _, _ := cutLast(c.ID, '.'); node != a.Node || c.Edge != a.Node {
			return fmt.Errorf("connection %q listed by edge %s", c.ID, a.Node)
		}
	}
	for _, u := range a.Users {
		if u.ID <= 0 || u.Count <= 0 {
			return errors.New("a present user with no id or no connection")
		}
	}
	if len(a.Err) > 200 || strings.ContainsAny(a.Err, "\n\r") {
		return errors.New("an unreadable error")
	}
	return nil
}
