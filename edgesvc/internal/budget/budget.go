// Package budget bounds what many sockets hold at once: bytes of messages being read
// or waiting to be sent, shared by one user's sockets or by all of an edge's.
package budget

import "sync/atomic"

// Budget is a bound on bytes held by many holders at once. A nil *Budget, or one whose
// limit is 0, bounds nothing. Its methods are safe for concurrent use.
type Budget struct {
	limit int64
	used  atomic.Int64
}

// New returns a Budget of limit bytes; 0 bounds nothing.
func New(limit int64) *Budget { return &Budget{limit: max(limit, 0)} }

// Take reserves n bytes and reports true, or reserves nothing and reports false when
// that would take the budget past its limit.
func (b *Budget) Take(n int64) bool {
	if b == nil {
		return true
	}
	if u := b.used.Add(n); b.limit > 0 && u > b.limit && n > 0 {
		b.used.Add(-n)
		return false
	}
	return true
}

// Give returns n bytes taken before.
func (b *Budget) Give(n int64) {
	if b != nil {
		b.used.Add(-n)
	}
}

// Used returns the bytes held now.
func (b *Budget) Used() int64 {
	if b == nil {
		return 0
	}
	return b.used.Load()
}

// Pair is the two budgets a socket's bytes count against: its user's and its edge's.
type Pair struct{ User, Edge *Budget }

// Scope says which of a Pair refused.
type Scope int

// The scopes of a Pair.
const (
	None Scope = iota
	User
	Edge
)

func (s Scope) String() string {
	switch s {
	case User:
		return "user"
	case Edge:
		return "edge"
	}
	return ""
}

// Take reserves n bytes of both budgets, or of neither: it returns the scope that
// refused (None when both took them).
func (p Pair) Take(n int64) Scope {
	if !p.User.Take(n) {
		return User
	}
	if !p.Edge.Take(n) {
		p.User.Give(n)
		return Edge
	}
	return None
}

// Give returns n bytes to both budgets.
func (p Pair) Give(n int64) {
	p.User.Give(n)
	p.Edge.Give(n)
}
