package auth

import (
	"fmt"
	"testing"
	"time"
)

// leased returns a cache on a live feed with a lease of d from now.
func leased(t *testing.T, max int, d time.Duration) *sessionCache {
	t.Helper()
	c := newSessionCache(max)
	c.feedChanged(true)
	at, epoch, live := c.leaseStart()
	if !live {
		t.Fatal("feed not live")
	}
	c.extend(at, epoch, d)
	return c
}

func sess(id string) Session { return Session{ID: id, ExpiresAt: time.Now().Add(time.Hour)} }

func TestSessionCacheRules(t *testing.T) {
	alice := User{ID: 1, Username: "alice"}
	has := func(c *sessionCache, tok string) bool { _, _, ok := c.get(tok); return ok }

	t.Run("hit under a lease, miss without one", func(t *testing.T) {
		c := leased(t, 10, time.Hour)
		c.put("tok", c.generation(), alice, sess("s1"))
		u, s, ok := c.get("tok")
		if !ok || u != alice || s.ID != "s1" {
			t.Fatalf("get = %v %v %v", u, s, ok)
		}
		c.drop()
		if has(c, "tok") {
			t.Error("hit after the lease ended")
		}
	})
	t.Run("a lease ends on time", func(t *testing.T) {
		c := leased(t, 10, 30*time.Millisecond)
		c.put("tok", c.generation(), alice, sess("s1"))
		if !has(c, "tok") {
			t.Fatal("miss under the lease")
		}
		time.Sleep(40 * time.Millisecond)
		if has(c, "tok") {
			t.Error("hit after the lease ran out")
		}
	})
	t.Run("an event removes the session", func(t *testing.T) {
		c := leased(t, 10, time.Hour)
		c.put("tok", c.generation(), alice, sess("s1"))
		c.put("other", c.generation(), alice, sess("s2"))
		c.end("s1")
		if has(c, "tok") || !has(c, "other") {
			t.Error("end removed the wrong sessions")
		}
	})
	t.Run("an answer that raced an event is not stored", func(t *testing.T) {
		c := leased(t, 10, time.Hour)
		gen := c.generation()
		c.end("s1") // the session ended while ValidateSession was in flight
		c.put("tok", gen, alice, sess("s1"))
		if has(c, "tok") {
			t.Error("stale answer stored")
		}
	})
	t.Run("a feed change empties the cache and ends the lease", func(t *testing.T) {
		for _, live := range []bool{false, true} {
			c := leased(t, 10, time.Hour)
			c.put("tok", c.generation(), alice, sess("s1"))
			gen := c.generation()
			at, epoch, _ := c.leaseStart()
			c.feedChanged(live)
			c.extend(at, epoch, time.Hour) // a marker asked for on the old feed
			c.put("late", gen, alice, sess("s2"))
			if c.size() != 0 || c.validUntil.Load() != 0 {
				t.Errorf("after feedChanged(%v): %d entries, lease until %d", live, c.size(), c.validUntil.Load())
			}
		}
	})
	t.Run("nothing is stored while the feed is down", func(t *testing.T) {
		c := newSessionCache(10)
		c.put("tok", c.generation(), alice, sess("s1"))
		if c.size() != 0 {
			t.Error("stored without a feed")
		}
	})
	t.Run("expired sessions and old answers miss", func(t *testing.T) {
		c := leased(t, 10, time.Hour)
		c.put("expired", c.generation(), alice, Session{ID: "s1", ExpiresAt: time.Now().Add(-time.Second)})
		c.maxAge = 20 * time.Millisecond
		c.put("old", c.generation(), alice, sess("s2"))
		time.Sleep(30 * time.Millisecond)
		if has(c, "expired") || has(c, "old") {
			t.Error("hit on an expired session or an answer past maxAge")
		}
		if c.size() != 0 {
			t.Errorf("%d entries left", c.size())
		}
	})
	t.Run("bounded", func(t *testing.T) {
		c := leased(t, 3, time.Hour)
		for i := range 10 {
			c.put(fmt.Sprint("tok", i), c.generation(), alice, sess(fmt.Sprint("s", i)))
		}
		if c.size() != 3 || len(c.bySession) != 3 {
			t.Errorf("size %d/%d, want 3", c.size(), len(c.bySession))
		}
		if !has(c, "tok9") {
			t.Error("the newest entry was evicted")
		}
	})
	t.Run("off", func(t *testing.T) {
		var c *sessionCache
		c.put("tok", c.generation(), alice, sess("s1"))
		c.end("s1")
		c.feedChanged(true)
		if has(c, "tok") {
			t.Error("a nil cache hit")
		}
	})
}

func BenchmarkSessionCacheHit(b *testing.B) {
	c := newSessionCache(100_000)
	c.feedChanged(true)
	at, epoch, _ := c.leaseStart()
	c.extend(at, epoch, time.Hour)
	for i := range 1000 {
		c.put(fmt.Sprint("token-", i), c.generation(), User{ID: 1}, sess(fmt.Sprint("s", i)))
	}
	for b.Loop() {
		if _, _, ok := c.get("token-500"); !ok {
			b.Fatal("miss")
		}
	}
}
