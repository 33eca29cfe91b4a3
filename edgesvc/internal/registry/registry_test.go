package registry

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

type conn struct{ name string }

func sorted(cs []*conn) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.name)
	}
	slices.Sort(out)
	return out
}

func TestRegistryIndexes(t *testing.T) {
	r := New[*conn]()
	a1, a2, b1, c1 := &conn{"a1"}, &conn{"a2"}, &conn{"b1"}, &conn{"c1"}
	for _, add := range []struct {
		c    *conn
		user int64
		sess string
	}{{a1, 1, "sa"}, {a2, 1, "sa"}, {b1, 1, "sb"}, {c1, 2, "sc"}} {
		r.Reserve()
		if ok, reason := r.Add(add.c, add.user, add.sess); !ok {
			t.Fatalf("Add %s refused (%q)", add.c.name, reason)
		}
	}
	check := func(what string, got []*conn, want ...string) {
		t.Helper()
		if g := sorted(got); !slices.Equal(g, want) {
			t.Fatalf("%s = %v, want %v", what, g, want)
		}
	}
	check("session sa", r.Session("sa"), "a1", "a2")
	check("user 1", r.User(1), "a1", "a2", "b1")
	check("user 2", r.User(2), "c1")
	check("user 3", r.User(3))
	if n := len(r.OnePerSession()); n != 3 {
		t.Fatalf("OnePerSession: %d connections, want one for each of 3 sessions", n)
	}

	r.Remove(a1, 1, "sa")
	check("session sa after removing a1", r.Session("sa"), "a2")
	check("user 1 after removing a1", r.User(1), "a2", "b1")
	r.Remove(c1, 2, "sc")
	check("user 2 after removing its only connection", r.User(2))
	if _, ok := r.byUser[2]; ok {
		t.Fatal("an empty user entry was kept")
	}
	if _, ok := r.bySession["sc"]; ok {
		t.Fatal("an empty session entry was kept")
	}
	if n := len(r.Shutdown()); n != 2 {
		t.Fatalf("%d connections left, want 2", n)
	}
}

func TestRegistryEndedSession(t *testing.T) {
	r := New[*conn]()
	a, b := &conn{"a"}, &conn{"b"}
	r.Reserve()
	r.Add(a, 1, "s")
	got := r.End("s", "revoked")
	if len(got) != 1 || got[0] != a {
		t.Fatalf("End returned %v, want the live connection", sorted(got))
	}
	// A handshake that validated before the end and registers after it is refused.
	if ok, reason := r.Add(b, 1, "s"); ok || reason != "revoked" {
		t.Fatalf("Add after End = %v, %q; want refused with the end reason", ok, reason)
	}
	// Another session of the same user is not affected.
	if ok, _ := r.Add(b, 1, "other"); !ok {
		t.Fatal("Add of another session refused")
	}
	// Ends are forgotten after endedTTL (pruned at most once a minute).
	r.ended["s"] = ended{reason: "revoked", at: time.Now().Add(-endedTTL - time.Second)}
	r.lastPrune = time.Time{}
	r.End("x", "logout")
	if _, ok := r.ended["s"]; ok {
		t.Fatal("an end older than endedTTL was kept")
	}
}

func TestRegistryShutdownWaits(t *testing.T) {
	r := New[*conn]()
	a, b, pending := &conn{"a"}, &conn{"b"}, &conn{"pending"}
	for range 3 {
		if !r.Reserve() {
			t.Fatal("Reserve refused before Shutdown")
		}
	}
	r.Add(a, 1, "s")
	r.Add(b, 2, "t")
	live := r.Shutdown()
	if g := sorted(live); !slices.Equal(g, []string{"a", "b"}) {
		t.Fatalf("Shutdown returned %v", g)
	}
	if r.Reserve() {
		t.Fatal("Reserve admitted a connection during shutdown")
	}
	// A connection reserved before Shutdown and registering after it is refused.
	if ok, reason := r.Add(pending, 3, "u"); ok || reason != "" {
		t.Fatalf("Add during shutdown = %v, %q; want refused with no reason", ok, reason)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	if err := r.Wait(ctx); err == nil {
		t.Fatal("Wait returned with three reservations held")
	}
	var wg sync.WaitGroup
	for _, rm := range []struct {
		c    *conn
		user int64
		sess string
	}{{a, 1, "s"}, {b, 2, "t"}, {pending, 3, "u"}} {
		wg.Go(func() { r.Remove(rm.c, rm.user, rm.sess) })
	}
	if err := r.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
}
