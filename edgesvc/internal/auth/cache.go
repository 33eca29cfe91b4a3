package auth

import (
	"sync"
	"sync/atomic"
	"time"
)

// sessionCache remembers ValidateSession answers, so that a handshake of a session the
// edge has seen recently needs no call to authsvc and no query.
//
// It never accepts a session after the call that ended it has returned, which is what
// the handshake table promises ("revoked session → 401"). Three rules give that:
//   - Every session-ended event removes the session; losing or regaining the event
//     feed empties the cache.
//   - An answer is stored only if no event and no feed change happened while it was
//     being fetched (gen), so an answer that raced its session's end is dropped.
//   - Entries are used only under a lease: a SyncSessionEvents marker requested at q
//     and seen on the live feed proves every end committed before q has been applied,
//     and authsvc makes every call that ends sessions wait cache_lease after its
//     commit, so until q + cache_lease no such call can have returned unseen. Without
//     a current lease (feed down, authsvc slow, caching off) every handshake asks
//     authsvc, as it would with no cache.
type sessionCache struct {
	max    int           // entries; when full, an arbitrary entry is dropped
	maxAge time.Duration // an entry is asked for again after this long
	start  time.Time     // monotonic base for validUntil and lastUse

	validUntil atomic.Int64 // ns since start; entries may be used before it
	lastUse    atomic.Int64 // ns since start of the last lookup
	wake       chan struct{}

	mu        sync.Mutex
	byToken   map[string]*cachedSession
	bySession map[string]string // session id → token
	gen       uint64            // bumped by every event and every feed change
	epoch     uint64            // bumped by every feed change
	live      bool              // the feed is live in this epoch
}

type cachedSession struct {
	user    User
	session Session
	stored  int64 // ns since start
}

// cacheMaxAge bounds how long an answer is reused: sessions end by events, but an
// occasional fresh look keeps anything an event cannot announce (a session row deleted
// by hand) from living in the cache for ever.
const cacheMaxAge = 5 * time.Minute

func newSessionCache(max int) *sessionCache {
	return &sessionCache{
		max: max, maxAge: cacheMaxAge, start: time.Now(),
		wake:    make(chan struct{}, 1),
		byToken: map[string]*cachedSession{}, bySession: map[string]string{},
	}
}

func (c *sessionCache) now() int64 { return int64(time.Since(c.start)) }

// get returns the cached answer for tok, if there is one and the lease is current.
func (c *sessionCache) get(tok string) (User, Session, bool) {
	if c == nil {
		return User{}, Session{}, false
	}
	now := c.now()
	c.lastUse.Store(now)
	if now >= c.validUntil.Load() {
		select { // the lease keeper may be asleep: wake it
		case c.wake <- struct{}{}:
		default:
		}
		return User{}, Session{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.byToken[tok]
	if e == nil {
		return User{}, Session{}, false
	}
	if now-e.stored > int64(c.maxAge) || !time.Now().Before(e.session.ExpiresAt) {
		c.removeLocked(e.session.ID)
		return User{}, Session{}, false
	}
	return e.user, e.session, true
}

// generation is taken before asking authsvc; pass it to put.
func (c *sessionCache) generation() uint64 {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// put stores authsvc's answer for tok unless an event or a feed change happened since
// gen was taken.
func (c *sessionCache) put(tok string, gen uint64, u User, s Session) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen || !c.live {
		return
	}
	if old, ok := c.bySession[s.ID]; ok {
		delete(c.byToken, old)
	}
	if len(c.byToken) >= c.max {
		for _, e := range c.byToken { // map order is random enough to spread evictions
			c.removeLocked(e.session.ID)
			break
		}
	}
	c.byToken[tok] = &cachedSession{user: u, session: s, stored: c.now()}
	c.bySession[s.ID] = tok
}

// end forgets a session that ended.
func (c *sessionCache) end(sessionID string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.removeLocked(sessionID)
}

func (c *sessionCache) removeLocked(sessionID string) {
	if tok, ok := c.bySession[sessionID]; ok {
		delete(c.byToken, tok)
		delete(c.bySession, sessionID)
	}
}

// feedChanged empties the cache and ends the lease: the feed was lost (live false), or
// a new subscription is live (live true) and events before it may have been missed.
func (c *sessionCache) feedChanged(live bool) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.epoch++
	c.live = live
	c.validUntil.Store(0)
	clear(c.byToken)
	clear(c.bySession)
}

// leaseStart is called just before asking for a marker: it returns the time the lease
// would count from and the epoch it is valid in, or false while the feed is down.
func (c *sessionCache) leaseStart() (at int64, epoch uint64, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now(), c.epoch, c.live
}

// extend makes entries usable until at+lease, once the marker asked for at at has
// arrived on the feed of epoch, unless the feed changed meanwhile.
func (c *sessionCache) extend(at int64, epoch uint64, lease time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if epoch != c.epoch || !c.live {
		return
	}
	if until := at + int64(lease); until > c.validUntil.Load() {
		c.validUntil.Store(until)
	}
}

// drop ends the lease (authsvc refused to grant one).
func (c *sessionCache) drop() { c.validUntil.Store(0) }

// idleFor reports how long no handshake has looked in the cache.
func (c *sessionCache) idleFor() time.Duration {
	return time.Duration(c.now() - c.lastUse.Load())
}

// size is the number of entries.
func (c *sessionCache) size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.byToken)
}
