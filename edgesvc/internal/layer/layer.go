// Package layer carries what one edge asks of the connections of every edge — sends,
// group changes, kicks — as Channels' channel layer does. Local is the layer of a
// single edge (nothing to run); a layer between several edges implements the same
// Layer interface, so consumers and the API do not change.
package layer

import (
	"context"
	"errors"
	"time"
)

// Kind says what a Target names.
type Kind uint8

// The kinds of target.
const (
	User       Kind = iota + 1 // every connection of a user
	Session                    // every connection of a session
	Connection                 // one connection, by id
	Group                      // every member of a group
)

// Target selects connections: Kind, with User for a user and ID for the others.
type Target struct {
	Kind Kind
	User int64
	ID   string
}

// Send is one message — text, or binary if Binary — for every connection To matches,
// except those whose ids are in Exclude.
type Send struct {
	To      Target
	Data    string
	Binary  bool
	Exclude []string
}

// Edge is one edge's connections, as a layer delivers to them. Its methods never
// block on a client: a connection that cannot take a message is closed (1013).
type Edge interface {
	// Deliver queues m on every matching local connection.
	Deliver(m Send)
	// GroupAdd puts every matching local connection (To is not a group) in group; it
	// fails if one of them is in too many groups already (the others join).
	GroupAdd(group string, to Target) error
	// GroupDiscard takes every matching local connection out of group.
	GroupDiscard(group string, to Target)
	// Disconnect closes every matching local connection with code and reason.
	Disconnect(to Target, code int, reason string)
	// List returns up to q.Limit of the edge's connections q matches, in order.
	List(q ListQuery) []ConnInfo
	// Presence returns the users with connections in group, ordered by id.
	Presence(group string) []PresentUser
}

// ErrUnavailable is returned by a layer between edges that cannot reach the others:
// nothing was delivered or applied, so the call may be retried. Local never returns it.
var ErrUnavailable = errors.New("the layer between edges is unavailable")

// ErrTooLarge is returned for a message larger than the layer between edges carries.
var ErrTooLarge = errors.New("the message is larger than the layer between edges carries")

// requireAllKey marks a context made by RequireAll.
type requireAllKey struct{}

// RequireAll returns a context under which a layer between edges that cannot reach
// the others fails with ErrUnavailable, delivering and applying nothing, so that
// the caller may retry without duplicates (the edge API's calls). Under any other
// context, it reaches this edge's connections only (consumers' sends: the chat room
// goes on locally).
func RequireAll(ctx context.Context) context.Context {
	return context.WithValue(ctx, requireAllKey{}, true)
}

// AllRequired reports whether ctx was made by RequireAll.
func AllRequired(ctx context.Context) bool { return ctx.Value(requireAllKey{}) != nil }

// Layer reaches the connections of every edge. Sends made through one Layer reach
// every connection in the order they were made; GroupAdd, GroupDiscard and Disconnect
// return once every live edge has applied them. List and Presence gather every edge's
// answer; partial reports that an edge did not answer in time.
type Layer interface {
	Send(ctx context.Context, m Send) error
	GroupAdd(ctx context.Context, group string, to Target) error
	GroupDiscard(ctx context.Context, group string, to Target) error
	Disconnect(ctx context.Context, to Target, code int, reason string) error
	List(ctx context.Context, q ListQuery) (Page, error)
	Presence(ctx context.Context, group string) (users []PresentUser, partial bool, err error)
}

// Local is the layer of one edge: every call is applied to that edge before it
// returns, so order and "applied everywhere" hold trivially.
type Local struct{ Edge Edge }

var _ Layer = Local{}

// Send delivers m to the edge's matching connections; it never fails.
func (l Local) Send(_ context.Context, m Send) error {
	l.Edge.Deliver(m)
	return nil
}

// GroupAdd applies GroupAdd to the edge; it fails as Edge.GroupAdd does.
func (l Local) GroupAdd(_ context.Context, group string, to Target) error {
	return l.Edge.GroupAdd(group, to)
}

// GroupDiscard applies GroupDiscard to the edge; it never fails.
func (l Local) GroupDiscard(_ context.Context, group string, to Target) error {
	l.Edge.GroupDiscard(group, to)
	return nil
}

// Disconnect applies Disconnect to the edge; it never fails.
func (l Local) Disconnect(_ context.Context, to Target, code int, reason string) error {
	l.Edge.Disconnect(to, code, reason)
	return nil
}

// Cursor is a place in the order of connections: by ConnectedAt, then ID. The zero
// Cursor is before the first.
type Cursor struct {
	At time.Time
	ID string
}

// Before reports whether c comes before d.
func (c Cursor) Before(d Cursor) bool {
	if !c.At.Equal(d.At) {
		return c.At.Before(d.At)
	}
	return c.ID < d.ID
}

// ListQuery asks for up to Limit connections that To matches (nil: all), after After.
type ListQuery struct {
	To    *Target
	After Cursor
	Limit int
}

// ConnInfo describes one connection.
type ConnInfo struct {
	ID          string
	User        int64
	Username    string
	Session     string
	Path        string
	Groups      []string
	ConnectedAt time.Time
	Edge        string
}

// Cursor returns the connection's place in the order.
func (i ConnInfo) Cursor() Cursor { return Cursor{At: i.ConnectedAt, ID: i.ID} }

// PresentUser is a user with Count connections in a group.
type PresentUser struct {
	ID       int64
	Username string
	Count    int
}

// Page is a layer's answer to a ListQuery.
type Page struct {
	Conns   []ConnInfo // up to the query's Limit, in order
	Partial bool       // an edge did not answer in time: its connections are missing
	Cut     bool       // there may be more after the last, however few Conns holds
}

// List returns the edge's answer; it never fails.
func (l Local) List(_ context.Context, q ListQuery) (Page, error) {
	return Page{Conns: l.Edge.List(q)}, nil
}

// Presence returns the edge's answer; it never fails.
func (l Local) Presence(_ context.Context, group string) ([]PresentUser, bool, error) {
	return l.Edge.Presence(group), false, nil
}

// MaxReason is the longest close reason, in bytes, that Disconnect takes.
const MaxReason = 120

// SessionEnded is the close code of a session that ended (4401): only the edge's
// session authority closes with it, never a layer, an API call or a consumer.
const SessionEnded = 4401

// ValidCloseCode reports whether Disconnect may close with code: an application's
// code, 4000–4999, but not SessionEnded.
func ValidCloseCode(code int) bool { return code >= 4000 && code <= 4999 && code != SessionEnded }
