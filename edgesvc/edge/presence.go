package edge

import (
	"context"
	"errors"
	"time"

	"github.com/gatehouse/gatehouse/edgesvc/internal/layer"
)

// ErrInvalidPageSize: a page of connections holds 0 (the default, 100) to 1000.
var ErrInvalidPageSize = errors.New("page size must not be negative")

// ConnectionInfo describes one connection, on any edge.
type ConnectionInfo struct {
	ID          string
	User        User
	SessionID   string
	Path        string    // the handshake's path, such as /ws/myapp/1/
	Groups      []string  // sorted
	ConnectedAt time.Time // when it was accepted
	Edge        string    // the node id of the edge holding it
}

// ConnectionPage is a page of ListConnections.
type ConnectionPage struct {
	Connections []ConnectionInfo // ordered by ConnectedAt, then ID
	More        bool             // there may be more: ask again with After the last one
	Partial     bool             // an edge did not answer in time: its connections are missing
}

// ListConnections returns up to limit connections (0: 100; over 1000: 1000) that to
// matches (nil: every connection), ordered by ConnectedAt then ID, starting after the
// connection after (nil: from the first; pass the last of a page for the next). It
// fails with ErrInvalidPageSize, or as Send does for the target.
func (s *Server) ListConnections(ctx context.Context, to *Target, after *ConnectionInfo, limit int) (ConnectionPage, error) {
	switch {
	case limit < 0:
		return ConnectionPage{}, ErrInvalidPageSize
	case limit == 0:
		limit = 100
	case limit > 1000:
		limit = 1000
	}
	q := layer.ListQuery{Limit: limit + 1} // one more, to know whether there are more
	if to != nil {
		if err := to.check(true); err != nil {
			return ConnectionPage{}, err
		}
		q.To = &to.t
	}
	if after != nil {
		q.After = layer.Cursor{At: after.ConnectedAt, ID: after.ID}
	}
	res, err := s.layer.List(ctx, q)
	if err != nil {
		return ConnectionPage{}, err
	}
	conns := res.Conns
	page := ConnectionPage{Partial: res.Partial, More: len(conns) > limit || res.Cut && len(conns) > 0}
	for _, c := range conns[:min(limit, len(conns))] {
		page.Connections = append(page.Connections, ConnectionInfo{
			ID: c.ID, User: User{ID: c.User, Username: c.Username}, SessionID: c.Session,
			Path: c.Path, Groups: c.Groups, ConnectedAt: c.ConnectedAt, Edge: c.Edge,
		})
	}
	return page, nil
}

// Presence says who is in a group, on every edge.
type Presence struct {
	Connections int           // member connections
	Users       []PresentUser // ordered by id
	Partial     bool          // an edge did not answer in time: its members are missing
}

// PresentUser is a user with Connections connections in a group.
type PresentUser struct {
	User
	Connections int
}

// GroupPresence returns who is in group. It fails with ErrInvalidGroup.
func (s *Server) GroupPresence(ctx context.Context, group string) (Presence, error) {
	if err := ToGroup(group).check(true); err != nil {
		return Presence{}, err
	}
	users, partial, err := s.layer.Presence(ctx, group)
	if err != nil {
		return Presence{}, err
	}
	p := Presence{Partial: partial, Users: make([]PresentUser, 0, len(users))}
	for _, u := range users {
		p.Users = append(p.Users, PresentUser{User: User{ID: u.ID, Username: u.Username}, Connections: u.Count})
		p.Connections += u.Count
	}
	return p, nil
}
