// Package registry keeps the edge's live connections, indexed by session and by user,
// and remembers sessions that ended recently, so that a connection whose handshake
// raced its session's end is still refused.
package registry

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Registry holds connections of type C (a pointer). Its methods are safe for
// concurrent use; none calls anything on a connection, so callers close the ones it
// returns outside its lock.
type Registry[C comparable] struct {
	mu        sync.Mutex
	bySession map[string][]C // slices, not sets: a session or user has few sockets, and a map each costs ~300 B
	byUser    map[int64][]C
	ended     map[string]ended
	lastPrune time.Time
	closing   bool
	wg        sync.WaitGroup // one per reservation not yet removed
}

type ended struct {
	reason string
	at     time.Time
}

// endedTTL is how long an ended session is remembered: far longer than any
// handshake takes between its validation and its registration here.
const endedTTL = 5 * time.Minute

// New returns an empty Registry.
func New[C comparable]() *Registry[C] {
	return &Registry[C]{bySession: map[string][]C{}, byUser: map[int64][]C{}, ended: map[string]ended{}}
}

// Reserve admits a connection that is being set up: Wait waits for it until Remove.
// It returns false once Shutdown has begun (admit nothing more).
func (r *Registry[C]) Reserve() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing {
		return false
	}
	r.wg.Add(1)
	return true
}

// Add registers c, of user and session, which holds a reservation. It returns false
// and a reason if c must be closed at once instead: its session has ended (the end
// reason), or the registry is shutting down ("").
func (r *Registry[C]) Add(c C, user int64, session string) (bool, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing {
		return false, ""
	}
	if e, ok := r.ended[session]; ok {
		return false, e.reason
	}
	r.bySession[session] = append(r.bySession[session], c)
	r.byUser[user] = append(r.byUser[user], c)
	return true, ""
}

// Remove unregisters c, of user and session, if it was added, and releases its
// reservation: call it exactly once for each Reserve, when the connection is done.
func (r *Registry[C]) Remove(c C, user int64, session string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if remove(r.bySession, session, c) {
		remove(r.byUser, user, c)
	}
	r.wg.Done()
}

// remove takes c out of m[k] (order is not kept) and reports whether it was there.
func remove[K comparable, C comparable](m map[K][]C, k K, c C) bool {
	conns := m[k]
	i := slices.Index(conns, c)
	if i < 0 {
		return false
	}
	last := len(conns) - 1
	conns[i] = conns[last]
	var zero C
	conns[last] = zero
	if last == 0 {
		delete(m, k)
	} else {
		m[k] = conns[:last]
	}
	return true
}

// End records that session ended for reason (Add refuses its connections from now
// on) and returns its live connections.
func (r *Registry[C]) End(session, reason string) []C {
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

// Session returns the live connections of session.
func (r *Registry[C]) Session(session string) []C {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.bySession[session])
}

// User returns the live connections of user.
func (r *Registry[C]) User(user int64) []C {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.byUser[user])
}

// OnePerSession returns one live connection of each session.
func (r *Registry[C]) OnePerSession() []C {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]C, 0, len(r.bySession))
	for _, conns := range r.bySession {
		out = append(out, conns[0])
	}
	return out
}

// Shutdown makes Add refuse every connection from now on and returns every live one.
func (r *Registry[C]) Shutdown() []C {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closing = true
	var out []C
	for _, conns := range r.bySession {
		out = append(out, conns...)
	}
	return out
}

// Wait waits until every reservation has been removed, or ctx ends (its error).
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
