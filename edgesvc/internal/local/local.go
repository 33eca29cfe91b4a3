// Package local applies what the layer carries to this edge's own connections: it is
// the layer.Edge that the in-process layer (and a layer between edges, for what reaches
// this edge) calls. It resolves targets with the registry and acts on the sockets.
package local

import (
	"cmp"
	"runtime"
	"slices"

	"github.com/gatehouse/gatehouse/edgesvc/internal/layer"
	"github.com/gatehouse/gatehouse/edgesvc/internal/registry"
	"github.com/gatehouse/gatehouse/edgesvc/internal/socket"
)

// Edge is this edge's connections, registered in Conns, on the node named Node.
type Edge[C any] struct {
	Conns *registry.Registry[C]
	Node  string
}

var _ layer.Edge = (*Edge[struct{}])(nil)

// match returns the connections t matches.
func (l *Edge[C]) match(t layer.Target) []*registry.Entry[C] {
	switch t.Kind {
	case layer.User:
		return l.Conns.User(t.User)
	case layer.Session:
		return l.Conns.Session(t.ID)
	case layer.Connection:
		if e := l.Conns.ByID(t.ID); e != nil {
			return []*registry.Entry[C]{e}
		}
	case layer.Group:
		return l.Conns.Group(t.ID)
	}
	return nil
}

// Deliver queues m on each matching connection that its consumer has accepted (a push
// that does not fit closes that connection with 1013). For more than one, the frame
// is encoded once and shared, queued to every member first, then written to each
// member nobody was writing to, from one goroutine: no goroutine per member, and a
// member whose socket is full is left to its own writer, so it delays no one. When
// sends come faster than sockets take them, a member's frames go out together in
// one write.
func (l *Edge[C]) Deliver(m layer.Send) {
	entries := l.match(m.To)
	var exclude map[string]bool
	if len(m.Exclude) > 8 {
		exclude = make(map[string]bool, len(m.Exclude))
		for _, id := range m.Exclude {
			exclude[id] = true
		}
	}
	entries = slices.DeleteFunc(entries, func(e *registry.Entry[C]) bool {
		if !e.Accepted() {
			return true
		}
		if exclude != nil {
			return exclude[e.ID]
		}
		return len(m.Exclude) > 0 && slices.Contains(m.Exclude, e.ID)
	})
	switch len(entries) {
	case 0:
	case 1:
		_ = entries[0].Sock.Push(m.Binary, m.Data)
	default:
		p := socket.Prepare(m.Binary, m.Data)
		var mine []*socket.Conn
		for _, e := range entries {
			if ok, _ := e.Sock.Enqueue(p); ok {
				mine = append(mine, e.Sock)
			}
		}
		if len(mine) <= inlineFlushes {
			flush(mine)
		} else {
			go flush(mine) // the sender goes on; the next send's frames may join these
		}
	}
}

// inlineFlushes is how many members a sender writes to itself before returning;
// beyond it, a goroutine does.
const inlineFlushes = 8

// flush writes to each of conns. Every flushYield members it lets other goroutines
// run: a send that arrives meanwhile queues its frame behind this one on the members
// not yet reached, and they get both in one write.
func flush(conns []*socket.Conn) {
	for i, c := range conns {
		c.Flush()
		if i%flushYield == flushYield-1 {
			runtime.Gosched()
		}
	}
}

const flushYield = 64

// GroupAdd joins every matching connection to group; it reports
// registry.ErrTooManyGroups if one could not join (the others did).
func (l *Edge[C]) GroupAdd(group string, to layer.Target) error {
	var err error
	for _, e := range l.match(to) {
		if jerr := l.Conns.Join(e, group); jerr != nil {
			err = jerr
		}
	}
	return err
}

// GroupDiscard takes every matching connection out of group.
func (l *Edge[C]) GroupDiscard(group string, to layer.Target) {
	for _, e := range l.match(to) {
		l.Conns.Leave(e, group)
	}
}

// Disconnect closes every matching connection, after what was queued for it.
func (l *Edge[C]) Disconnect(to layer.Target, code int, reason string) {
	for _, e := range l.match(to) {
		e.Sock.Close(code, reason)
	}
}

// List returns up to q.Limit of the accepted connections q matches, in order.
func (l *Edge[C]) List(q layer.ListQuery) []layer.ConnInfo {
	var entries []*registry.Entry[C]
	if q.To != nil {
		entries = l.match(*q.To)
	} else {
		entries = l.Conns.All()
	}
	out := make([]layer.ConnInfo, 0, min(q.Limit, len(entries)))
	for _, e := range entries {
		if !e.Accepted() {
			continue
		}
		info := layer.ConnInfo{
			ID: e.ID, User: e.User, Username: e.Username, Session: e.Session,
			Path: e.Path, ConnectedAt: e.Since, Edge: l.Node,
		}
		if q.After.Before(info.Cursor()) {
			out = append(out, info)
		}
	}
	slices.SortFunc(out, func(a, b layer.ConnInfo) int {
		if a.Cursor().Before(b.Cursor()) {
			return -1
		}
		return 1
	})
	out = out[:min(q.Limit, len(out))]
	for i := range out {
		if e := l.Conns.ByID(out[i].ID); e != nil {
			out[i].Groups = l.Conns.Groups(e)
		}
	}
	return out
}

// Presence returns the users with connections in group, ordered by id.
func (l *Edge[C]) Presence(group string) []layer.PresentUser {
	byUser := map[int64]*layer.PresentUser{}
	for _, e := range l.Conns.Group(group) {
		u := byUser[e.User]
		if u == nil {
			u = &layer.PresentUser{ID: e.User, Username: e.Username}
			byUser[e.User] = u
		}
		u.Count++
	}
	out := make([]layer.PresentUser, 0, len(byUser))
	for _, u := range byUser {
		out = append(out, *u)
	}
	slices.SortFunc(out, func(a, b layer.PresentUser) int { return cmp.Compare(a.ID, b.ID) })
	return out
}
