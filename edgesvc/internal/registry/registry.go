// Package registry keeps the edge's live connections, indexed by id, session, user and
// group, and remembers sessions that ended recently, so that a connection whose
// handshake raced its session's end is still refused.
package registry

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gatehouse/gatehouse/edgesvc/internal/layer"
	"github.com/gatehouse/gatehouse/edgesvc/internal/socket"
)

// MaxGroups is how many groups one connection may belong to.
const MaxGroups = 100

// ErrTooManyGroups is returned by Join for a connection already in MaxGroups groups.
var ErrTooManyGroups = errors.New("the connection is in too many groups")

// ErrInvalidGroup is returned for a group name that is not 1–100 characters of ASCII
// letters, digits, '-', '_' and '.'.
var ErrInvalidGroup = errors.New("group names are 1 to 100 characters of ASCII letters, digits, '-', '_' and '.'")

// ValidGroup reports whether name is a valid group name (see ErrInvalidGroup).
func ValidGroup(name string) bool {
	if name == "" || len(name) > 100 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// Info is what Add records about a connection.
type Info struct {
	ID       string // unique
	User     int64
	Username string
	Session  string
	Path     string       // the handshake's path
	Addr     string       // the client's address, counted when sockets per address are limited
	Sock     *socket.Conn // what sends and closes go to
}

// Entry is one registered connection. Its fields are set by Add and never change.
type Entry[C any] struct {
	Info
	Conn     C
	Since    time.Time // when it was registered, wall clock only (page tokens carry it)
	accepted atomic.Bool
	groups   []membership // guarded by the registry's lock
}

// Accept marks the connection live: its consumer accepted it, so pushes and listings
// include it from now on.
func (e *Entry[C]) Accept() { e.accepted.Store(true) }

// Accepted reports whether Accept was called.
func (e *Entry[C]) Accepted() bool { return e.accepted.Load() }

// membership is one group of an entry, and the entry's place in that group's list.
type membership struct {
	group string
	index int
}

// Registry holds connections of type C. Its methods are safe for concurrent use; none
// calls anything on a connection, so callers act on the ones it returns outside its
// lock.
type Registry[C any] struct {
	mu        sync.Mutex
	byID      map[string]*Entry[C]
	bySession map[string][]*Entry[C] // slices, not sets: a session or user has few sockets, and a map each costs ~300 B
	byUser    map[int64][]*Entry[C]
	byGroup   map[string][]*Entry[C] // each member knows its index, so leaving is O(1) in a large group
	byAddr    map[string]int         // sockets per client address, when limited
	limits    Limits
	ended     map[string]ended
	lastPrune time.Time
	closing   bool
	wg        sync.WaitGroup // one per entry not yet removed
	watch     func(t layer.Target, on bool)
}

type ended struct {
	reason string
	at     time.Time
}

// endedTTL is how long an ended session is remembered: far longer than any
// handshake takes between its validation and its registration here.
const endedTTL = 5 * time.Minute

// New returns an empty Registry.
func New[C any]() *Registry[C] {
	return &Registry[C]{
		byID: map[string]*Entry[C]{}, bySession: map[string][]*Entry[C]{}, byUser: map[int64][]*Entry[C]{},
		byGroup: map[string][]*Entry[C]{}, byAddr: map[string]int{}, ended: map[string]ended{},
	}
}

// Limits caps the sockets Add takes: per user, per client address (Info.Addr) and in
// all. Zero means no limit.
type Limits struct {
	PerUser, PerAddress, Total int
}

// SetLimits sets the caps for the sockets added from now on.
func (r *Registry[C]) SetLimits(l Limits) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.limits = l
}

// SetWatch makes the registry call watch when a user, session or group gains its
// first connection here (on) and when it loses its last (!on): a layer between edges
// subscribes to what reaches them. watch is called under the registry's lock, in the
// order of the changes, so it must be quick and must not call the Registry. Set it
// before the first Add.
func (r *Registry[C]) SetWatch(watch func(t layer.Target, on bool)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.watch = watch
}

// notify tells the watcher, if any, that t gained or lost its connections here.
func (r *Registry[C]) notify(t layer.Target, on bool) {
	if r.watch != nil {
		r.watch(t, on)
	}
}

// Why Add refuses a connection.
var ErrShuttingDown = errors.New("the edge is shutting down")

// EndedError: the connection's session ended since it was authorised.
type EndedError struct{ Reason string }

func (e *EndedError) Error() string { return "session ended: " + e.Reason }

// LimitError: a socket limit (Which: "user", "address" or "total") is reached.
type LimitError struct {
	Which string
	Limit int
}

func (e *LimitError) Error() string {
	if e.Which == "total" {
		return fmt.Sprintf("this edge holds its limit of %d sockets", e.Limit)
	}
	return fmt.Sprintf("too many sockets for this %s (limit %d)", e.Which, e.Limit)
}

// Add registers c, described by info, and returns its entry (not yet accepted), or
// why c must be refused instead: ErrShuttingDown, an *EndedError or a *LimitError.
// Wait waits for every entry until Remove.
func (r *Registry[C]) Add(c C, info Info) (*Entry[C], error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing {
		return nil, ErrShuttingDown
	}
	if e, ok := r.ended[info.Session]; ok {
		return nil, &EndedError{e.reason}
	}
	switch l := r.limits; {
	case l.PerUser > 0 && len(r.byUser[info.User]) >= l.PerUser:
		return nil, &LimitError{"user", l.PerUser}
	case l.PerAddress > 0 && r.byAddr[info.Addr] >= l.PerAddress:
		return nil, &LimitError{"address", l.PerAddress}
	case l.Total > 0 && len(r.byID) >= l.Total:
		return nil, &LimitError{"total", l.Total}
	}
	if r.limits.PerAddress <= 0 {
		info.Addr = "" // not counted, not kept
	}
	e := &Entry[C]{Info: info, Conn: c, Since: time.Now().Round(0)}
	r.byID[e.ID] = e
	if len(r.bySession[e.Session]) == 0 {
		r.notify(layer.Target{Kind: layer.Session, ID: e.Session}, true)
	}
	if len(r.byUser[e.User]) == 0 {
		r.notify(layer.Target{Kind: layer.User, User: e.User}, true)
	}
	r.bySession[e.Session] = append(r.bySession[e.Session], e)
	r.byUser[e.User] = append(r.byUser[e.User], e)
	if e.Addr != "" {
		r.byAddr[e.Addr]++
	}
	r.wg.Add(1)
	return e, nil
}

// Remove unregisters e and takes it out of every group. Call it once per entry.
func (r *Registry[C]) Remove(e *Entry[C]) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byID[e.ID] != e {
		return
	}
	delete(r.byID, e.ID)
	if remove(r.bySession, e.Session, e) {
		r.notify(layer.Target{Kind: layer.Session, ID: e.Session}, false)
	}
	if remove(r.byUser, e.User, e) {
		r.notify(layer.Target{Kind: layer.User, User: e.User}, false)
	}
	if e.Addr != "" {
		if r.byAddr[e.Addr]--; r.byAddr[e.Addr] == 0 {
			delete(r.byAddr, e.Addr)
		}
	}
	for len(e.groups) > 0 {
		r.leaveLocked(e, len(e.groups)-1)
	}
	r.wg.Done()
}

// remove takes e out of m[k] (order is not kept), and reports whether it was the last.
func remove[K comparable, C any](m map[K][]*Entry[C], k K, e *Entry[C]) (emptied bool) {
	list := m[k]
	i := slices.Index(list, e)
	if i < 0 {
		return false
	}
	last := len(list) - 1
	list[i] = list[last]
	list[last] = nil
	if last == 0 {
		delete(m, k)
		return true
	}
	m[k] = list[:last]
	return false
}

// Join puts e in group; joining a group again does nothing. It fails with
// ErrInvalidGroup or ErrTooManyGroups, and does nothing for an entry removed already.
func (r *Registry[C]) Join(e *Entry[C], group string) error {
	if !ValidGroup(group) {
		return ErrInvalidGroup
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byID[e.ID] != e || slices.ContainsFunc(e.groups, func(m membership) bool { return m.group == group }) {
		return nil
	}
	if len(e.groups) >= MaxGroups {
		return ErrTooManyGroups
	}
	members := r.byGroup[group]
	// Every member keeps the name: share one copy, never the caller's string, which
	// may be a slice of a larger message.
	if len(members) == 0 {
		group = strings.Clone(group)
		r.notify(layer.Target{Kind: layer.Group, ID: group}, true)
	} else if i := slices.IndexFunc(members[0].groups, func(m membership) bool { return m.group == group }); i >= 0 {
		group = members[0].groups[i].group
	}
	e.groups = append(e.groups, membership{group: group, index: len(members)})
	r.byGroup[group] = append(members, e)
	return nil
}

// Leave takes e out of group; it does nothing if e is not in it.
func (r *Registry[C]) Leave(e *Entry[C], group string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i := slices.IndexFunc(e.groups, func(m membership) bool { return m.group == group }); i >= 0 {
		r.leaveLocked(e, i)
	}
}

// leaveLocked takes e out of its i-th group: the group's last member moves into e's
// place, and learns its new index.
func (r *Registry[C]) leaveLocked(e *Entry[C], i int) {
	m := e.groups[i]
	members := r.byGroup[m.group]
	last := len(members) - 1
	if moved := members[last]; moved != e {
		members[m.index] = moved
		for j := range moved.groups {
			if moved.groups[j].group == m.group {
				moved.groups[j].index = m.index
				break
			}
		}
	}
	members[last] = nil
	if last == 0 {
		delete(r.byGroup, m.group)
		r.notify(layer.Target{Kind: layer.Group, ID: m.group}, false)
	} else {
		r.byGroup[m.group] = members[:last]
	}
	e.groups[i] = e.groups[len(e.groups)-1]
	e.groups = e.groups[:len(e.groups)-1]
}

// Groups returns the groups e belongs to, sorted.
func (r *Registry[C]) Groups(e *Entry[C]) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, len(e.groups))
	for i, m := range e.groups {
		out[i] = m.group
	}
	slices.Sort(out)
	return out
}

// End records that session ended for reason (Add refuses its connections from now
// on) and returns its live connections.
func (r *Registry[C]) End(session, reason string) []*Entry[C] {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if now.Sub(r.lastPrune) > time.Minute {
		for id, e := range r.ended {
			if now.Sub(e.at) > endedTTL {
				delete(r.ended, id)
			}
		}
		r.lastPrune = now
	}
	r.ended[session] = ended{reason: reason, at: now}
	return slices.Clone(r.bySession[session])
}

// ByID returns the entry of connection id, or nil.
func (r *Registry[C]) ByID(id string) *Entry[C] {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byID[id]
}

// Session returns the live connections of session.
func (r *Registry[C]) Session(session string) []*Entry[C] {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.bySession[session])
}

// User returns the live connections of user.
func (r *Registry[C]) User(user int64) []*Entry[C] {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.byUser[user])
}

// Group returns the members of group.
func (r *Registry[C]) Group(group string) []*Entry[C] {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.byGroup[group])
}

// All returns every live connection.
func (r *Registry[C]) All() []*Entry[C] {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*Entry[C], 0, len(r.byID))
	for _, e := range r.byID {
		out = append(out, e)
	}
	return out
}

// OnePerSession returns one live connection of each session.
func (r *Registry[C]) OnePerSession() []*Entry[C] {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*Entry[C], 0, len(r.bySession))
	for _, list := range r.bySession {
		out = append(out, list[0])
	}
	return out
}

// Shutdown makes Add refuse every connection from now on and returns every live one.
func (r *Registry[C]) Shutdown() []*Entry[C] {
	r.mu.Lock()
	r.closing = true
	r.mu.Unlock()
	return r.All()
}

// Stats returns how many groups have members, and how many memberships there are.
func (r *Registry[C]) Stats() (groups, memberships int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, members := range r.byGroup {
		memberships += len(members)
	}
	return len(r.byGroup), memberships
}

// Wait waits until every entry has been removed, or ctx ends (its error).
func (r *Registry[C]) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
