package edge

import (
	"sync"

	"golang.org/x/time/rate"

	"github.com/gatehouse/gatehouse/edgesvc/internal/budget"
	"github.com/gatehouse/gatehouse/edgesvc/internal/socket"
)

// shares are the bounds the sockets on this edge share: the edge's budgets, and
// each user's budgets and message rate, kept while the user has a socket here.
type shares struct {
	cfg        Config
	read, send *budget.Budget // the edge's
	mu         sync.Mutex
	users      map[int64]*userShares
}

type userShares struct {
	read, send *budget.Budget
	rate       *rate.Limiter // nil: no bound
	refs       int
}

func newShares(cfg Config) *shares {
	return &shares{cfg: cfg, read: budget.New(cfg.ReadBuffer), send: budget.New(cfg.SendBufferTotal), users: map[int64]*userShares{}}
}

// acquire returns what a new socket of user shares, until release.
func (s *shares) acquire(user int64) socket.Shares {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.users[user]
	if u == nil {
		u = &userShares{read: budget.New(s.cfg.ReadBufferPerUser), send: budget.New(s.cfg.SendBufferPerUser)}
		if n := s.cfg.MaxMessagesPerSecondPerUser; n > 0 {
			u.rate = rate.NewLimiter(rate.Limit(n), max(s.cfg.MessageBurst, n))
		}
		s.users[user] = u
	}
	u.refs++
	return socket.Shares{Read: budget.Pair{User: u.read, Edge: s.read}, Send: budget.Pair{User: u.send, Edge: s.send}, UserRate: u.rate}
}

// release says a socket of user acquired before has ended.
func (s *shares) release(user int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.users[user]; u != nil {
		if u.refs--; u.refs <= 0 {
			delete(s.users, user)
		}
	}
}
