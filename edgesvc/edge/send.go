package edge

import (
	"context"
	"errors"
	"fmt"

	"github.com/gatehouse/gatehouse/edgesvc/internal/layer"
	"github.com/gatehouse/gatehouse/edgesvc/internal/registry"
)

// Errors of the group and push methods.
var (
	// ErrInvalidGroup: a group name must be 1–100 characters of ASCII letters,
	// digits, '-', '_' and '.'.
	ErrInvalidGroup = registry.ErrInvalidGroup
	// ErrTooManyGroups: a connection belongs to at most 100 groups.
	ErrTooManyGroups = registry.ErrTooManyGroups
	// ErrInvalidTarget: the target cannot be used here (an empty id, a user id that
	// is not positive, or a group where connections are meant).
	ErrInvalidTarget = errors.New("invalid target")
	// ErrInvalidCloseCode: Disconnect takes 4000–4399 or 4402–4999 (0 means 4000).
	ErrInvalidCloseCode = errors.New("close code must be 4000-4399 or 4402-4999 (0: 4000)")
	// ErrReasonTooLong: a close reason is at most 120 bytes.
	ErrReasonTooLong = errors.New("close reason over 120 bytes")
	// ErrPayloadTooLarge: a message sent is at most Config.ReadLimit bytes, as one
	// received is (and, with NATS, at most what NATS carries: its max_payload).
	ErrPayloadTooLarge = errors.New("message over the edge's read limit")
	// ErrLayerUnavailable: with several edges, the layer between them (NATS) is
	// unusable, or an edge did not apply a change in time. GroupAdd, GroupDiscard and
	// Disconnect fail with it; Send only for the edge API (a consumer's Send then
	// reaches this edge's connections only). Nothing was delivered or applied (a
	// change an edge did not answer was applied by the others: each is idempotent),
	// so the call may be retried. One edge on its own never returns it.
	ErrLayerUnavailable = layer.ErrUnavailable
)

// ValidGroup reports whether name is a valid group name: 1–100 characters of ASCII
// letters, digits, '-', '_' and '.'.
func ValidGroup(name string) bool { return registry.ValidGroup(name) }

// Target selects connections, on every edge: a user's, a session's, one connection,
// or a group's members. Make one with ToUser, ToSession, ToConnection or ToGroup.
type Target struct{ t layer.Target }

// ToUser targets every connection of user id (all their tabs and devices).
func ToUser(id int64) Target { return Target{layer.Target{Kind: layer.User, User: id}} }

// ToSession targets every connection opened with session id.
func ToSession(id string) Target { return Target{layer.Target{Kind: layer.Session, ID: id}} }

// ToConnection targets the connection whose Conn.ID is id.
func ToConnection(id string) Target { return Target{layer.Target{Kind: layer.Connection, ID: id}} }

// ToGroup targets every member of group.
func ToGroup(name string) Target { return Target{layer.Target{Kind: layer.Group, ID: name}} }

// check returns the error of an unusable target; groups are allowed only if
// allowGroup.
func (t Target) check(allowGroup bool) error {
	switch t.t.Kind {
	case layer.User:
		if t.t.User > 0 {
			return nil
		}
	case layer.Session, layer.Connection:
		if t.t.ID != "" {
			return nil
		}
	case layer.Group:
		if !allowGroup {
			return ErrInvalidTarget
		}
		if !registry.ValidGroup(t.t.ID) {
			return ErrInvalidGroup
		}
		return nil
	}
	return ErrInvalidTarget
}

// Send sends text, as one text message, to every connection to matches except those
// whose ids are in exclude, and returns without waiting for any client: delivery is
// at most once, and a connection whose send queue is full is closed with 1013 rather
// than waited for. Sends accepted by this edge reach every connection in the order
// they were accepted: a Send that returned before another began is delivered first.
// None matching is not an error. It fails with ErrInvalidTarget, ErrInvalidGroup or
// ErrPayloadTooLarge (over Config.ReadLimit).
func (s *Server) Send(ctx context.Context, to Target, text string, exclude ...string) error {
	return s.send(ctx, to, false, text, exclude)
}

// SendBinary is Send for one binary message; data is copied once, whatever the
// number of connections.
func (s *Server) SendBinary(ctx context.Context, to Target, data []byte, exclude ...string) error {
	return s.send(ctx, to, true, string(data), exclude)
}

func (s *Server) send(ctx context.Context, to Target, binary bool, data string, exclude []string) error {
	if err := to.check(true); err != nil {
		return err
	}
	if int64(len(data)) > s.cfg.ReadLimit {
		return ErrPayloadTooLarge
	}
	if err := s.layer.Send(ctx, layer.Send{To: to.t, Data: data, Binary: binary, Exclude: exclude}); err != nil {
		if errors.Is(err, layer.ErrTooLarge) {
			return fmt.Errorf("%w: %v", ErrPayloadTooLarge, err)
		}
		return err
	}
	s.metrics.Sends[to.t.Kind].Inc()
	return nil
}

// GroupAdd puts every connection to matches (a user, session or connection; not a
// group: ErrInvalidTarget) in group, and returns once they are members: a Send that
// begins after it returned reaches them. It fails with ErrInvalidGroup, or with
// ErrTooManyGroups when one of them is in 100 groups already (the others join).
func (s *Server) GroupAdd(ctx context.Context, group string, to Target) error {
	if err := to.check(false); err != nil {
		return err
	}
	if !registry.ValidGroup(group) {
		return ErrInvalidGroup
	}
	return s.layer.GroupAdd(ctx, group, to.t)
}

// GroupDiscard takes every connection to matches (not a group: ErrInvalidTarget)
// out of group. It fails with ErrInvalidGroup for a name that cannot be a group.
func (s *Server) GroupDiscard(ctx context.Context, group string, to Target) error {
	if err := to.check(false); err != nil {
		return err
	}
	if !registry.ValidGroup(group) {
		return ErrInvalidGroup
	}
	return s.layer.GroupDiscard(ctx, group, to.t)
}

// Disconnect closes every connection to matches with code and reason: an
// application's code, 4000–4399 or 4402–4999 (0 means 4000; 4401 is the edge's
// "session ended"), which tells the client not to reconnect. Connections close after
// what was sent to them before. It fails with ErrInvalidTarget, ErrInvalidGroup,
// ErrInvalidCloseCode or ErrReasonTooLong (over 120 bytes).
func (s *Server) Disconnect(ctx context.Context, to Target, code int, reason string) error {
	if err := to.check(true); err != nil {
		return err
	}
	if code == 0 {
		code = 4000
	}
	if !layer.ValidCloseCode(code) {
		return ErrInvalidCloseCode
	}
	if len(reason) > layer.MaxReason {
		return ErrReasonTooLong
	}
	return s.layer.Disconnect(ctx, to.t, code, reason)
}
