package registry

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/edgesvc/internal/layer"
)

type conn struct{ name string }

func names(es []*Entry[*conn]) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Conn.name)
	}
	slices.Sort(out)
	return out
}

func mustAdd(t *testing.T, r *Registry[*conn], name string, user int64, session string) *Entry[*conn] {
	t.Helper()
	e, err := r.Add(&conn{name}, Info{ID: "node." + name, User: user, Session: session})
	if err != nil {
		t.Fatalf("Add %s refused: %v", name, err)
	}
	return e
}

func check(t *testing.T, what string, got []*Entry[*conn], want ...string) {
	t.Helper()
	if g := names(got); !slices.Equal(g, want) {
		t.Fatalf("%s = %v, want %v", what, g, want)
	}
}

func TestRegistryIndexes(t *testing.T) {
	r := New[*conn]()
	a1 := mustAdd(t, r, "a1", 1, "sa")
	mustAdd(t, r, "a2", 1, "sa")
	mustAdd(t, r, "b1", 1, "sb")
	c1 := mustAdd(t, r, "c1", 2, "sc")
	check(t, "session sa", r.Session("sa"), "a1", "a2")
	check(t, "user 1", r.User(1), "a1", "a2", "b1")
	check(t, "user 2", r.User(2), "c1")
	check(t, "user 3", r.User(3))
	if e := r.ByID("node.b1"); e == nil || e.Conn.name != "b1" || e.User != 1 || e.Session != "sb" {
		t.Fatalf("ByID(node.b1) = %+v", e)
	}
	if r.ByID("node.zz") != nil {
		t.Fatal("ByID found an unknown id")
	}
	if n := len(r.OnePerSession()); n != 3 {
		t.Fatalf("OnePerSession: %d connections, want one for each of 3 sessions", n)
	}

	r.Remove(a1)
	r.Remove(a1) // twice: no effect
	check(t, "session sa after removing a1", r.Session("sa"), "a2")
	check(t, "user 1 after removing a1", r.User(1), "a2", "b1")
	if r.ByID("node.a1") != nil {
		t.Fatal("a removed entry is still found by id")
	}
	r.Remove(c1)
	check(t, "user 2 after removing its only connection", r.User(2))
	if _, ok := r.byUser[2]; ok {
		t.Fatal("an empty user entry was kept")
	}
	if _, ok := r.bySession["sc"]; ok {
		t.Fatal("an empty session entry was kept")
	}
}

func TestRegistryGroups(t *testing.T) {
	r := New[*conn]()
	a, b, c := mustAdd(t, r, "a", 1, "s1"), mustAdd(t, r, "b", 2, "s2"), mustAdd(t, r, "c", 3, "s3")
	for _, e := range []*Entry[*conn]{a, b, c} {
		if err := r.Join(e, "chat.lobby"); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Join(a, "chat.lobby"); err != nil { // again: nothing changes
		t.Fatal(err)
	}
	if err := r.Join(a, "news"); err != nil {
		t.Fatal(err)
	}
	check(t, "chat.lobby", r.Group("chat.lobby"), "a", "b", "c")
	check(t, "news", r.Group("news"), "a")
	if g := r.Groups(a); !slices.Equal(g, []string{"chat.lobby", "news"}) {
		t.Fatalf("Groups(a) = %v", g)
	}

	r.Leave(a, "chat.lobby") // a was first: c moves into its place
	r.Leave(a, "chat.lobby") // not a member: nothing
	check(t, "chat.lobby after a left", r.Group("chat.lobby"), "b", "c")
	r.Leave(c, "chat.lobby") // the moved member can still leave
	check(t, "chat.lobby after c left", r.Group("chat.lobby"), "b")

	r.Remove(a) // removing a connection takes it out of every group
	check(t, "news after a closed", r.Group("news"))
	if _, ok := r.byGroup["news"]; ok {
		t.Fatal("an empty group was kept")
	}
	if err := r.Join(a, "news"); err != nil || len(r.Group("news")) != 0 {
		t.Fatalf("Join of a removed entry = %v, group %v; want nothing done", err, names(r.Group("news")))
	}
}

func TestRegistryGroupRules(t *testing.T) {
	r := New[*conn]()
	a := mustAdd(t, r, "a", 1, "s")
	for _, bad := range []string{"", strings.Repeat("x", 101), "a b", "room/1", "é", "a*", "x\x00"} {
		if err := r.Join(a, bad); err != ErrInvalidGroup {
			t.Errorf("Join(%q) = %v, want ErrInvalidGroup", bad, err)
		}
	}
	if err := r.Join(a, strings.Repeat("x", 100)); err != nil {
		t.Fatalf("a 100-character name: %v", err)
	}
	for i := 1; i < MaxGroups; i++ {
		if err := r.Join(a, fmt.Sprintf("g%d", i)); err != nil {
			t.Fatalf("group %d: %v", i+1, err)
		}
	}
	if err := r.Join(a, "one-too-many"); err != ErrTooManyGroups {
		t.Fatalf("group %d: %v, want ErrTooManyGroups", MaxGroups+1, err)
	}
	if err := r.Join(a, "g1"); err != nil {
		t.Fatalf("re-joining a group at the limit: %v", err)
	}
	r.Leave(a, "g1")
	if err := r.Join(a, "one-more"); err != nil {
		t.Fatalf("after leaving one: %v", err)
	}
}

// TestRegistryGroupIndexes: under random joins, leaves and removals, every group's
// members and every entry's memberships agree.
func TestRegistryGroupIndexes(t *testing.T) {
	r := New[*conn]()
	rng := rand.New(rand.NewPCG(1, 2))
	var live []*Entry[*conn]
	for i := range 2000 {
		switch op := rng.IntN(10); {
		case op < 3 || len(live) == 0:
			live = append(live, mustAdd(t, r, fmt.Sprint(i), int64(rng.IntN(5)), fmt.Sprint(rng.IntN(20))))
		case op < 7:
			_ = r.Join(live[rng.IntN(len(live))], fmt.Sprint("g", rng.IntN(8)))
		case op < 9:
			r.Leave(live[rng.IntN(len(live))], fmt.Sprint("g", rng.IntN(8)))
		default:
			j := rng.IntN(len(live))
			r.Remove(live[j])
			live = slices.Delete(live, j, j+1)
		}
	}
	n := 0
	for g, members := range r.byGroup {
		for i, e := range members {
			k := slices.IndexFunc(e.groups, func(m membership) bool { return m.group == g })
			if k < 0 || e.groups[k].index != i {
				t.Fatalf("group %s member %d (%s): memberships %+v", g, i, e.Conn.name, e.groups)
			}
			n++
		}
	}
	m := 0
	for _, e := range live {
		m += len(e.groups)
	}
	if n != m {
		t.Fatalf("%d group slots, %d memberships", n, m)
	}
}

func TestRegistryEndedSession(t *testing.T) {
	r := New[*conn]()
	a := mustAdd(t, r, "a", 1, "s")
	got := r.End("s", "revoked")
	if len(got) != 1 || got[0] != a {
		t.Fatalf("End returned %v, want the live connection", names(got))
	}
	// A handshake that validated before the end and registers after it is refused.
	var ee *EndedError
	if e, err := r.Add(&conn{"b"}, Info{ID: "node.b", User: 1, Session: "s"}); e != nil || !errors.As(err, &ee) || ee.Reason != "revoked" {
		t.Fatalf("Add after End = %v, %v; want refused with the end reason", e, err)
	}
	// Another session of the same user is not affected.
	mustAdd(t, r, "c", 1, "other")
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
	a, b := mustAdd(t, r, "a", 1, "s"), mustAdd(t, r, "b", 2, "t")
	live := r.Shutdown()
	if g := names(live); !slices.Equal(g, []string{"a", "b"}) {
		t.Fatalf("Shutdown returned %v", g)
	}
	if e, err := r.Add(&conn{"late"}, Info{ID: "node.late", User: 3, Session: "u"}); e != nil || err != ErrShuttingDown {
		t.Fatalf("Add during shutdown = %v, %v; want ErrShuttingDown", e, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	if err := r.Wait(ctx); err == nil {
		t.Fatal("Wait returned with two entries registered")
	}
	var wg sync.WaitGroup
	for _, e := range []*Entry[*conn]{a, b} {
		wg.Go(func() { r.Remove(e) })
	}
	if err := r.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
}

func FuzzValidGroup(f *testing.F) {
	for _, s := range []string{"chat.lobby", "", "a b", "x-y_z.0", strings.Repeat("a", 101)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		ok := ValidGroup(name)
		want := len(name) >= 1 && len(name) <= 100 && strings.Trim(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") == ""
		if ok != want {
			t.Fatalf("ValidGroup(%q) = %v, want %v", name, ok, want)
		}
	})
}

// TestLimits: sockets are capped per user, per client address and in total; a
// refusal says which limit; a socket that ends frees its place.
func TestLimits(t *testing.T) {
	r := New[*conn]()
	r.SetLimits(Limits{PerUser: 2, PerAddress: 3, Total: 5})
	add := func(name string, user int64, addr string) (*Entry[*conn], error) {
		return r.Add(&conn{name}, Info{ID: "node." + name, User: user, Session: name, Addr: addr})
	}
	wantLimit := func(err error, which string, limit int) {
		t.Helper()
		var le *LimitError
		if !errors.As(err, &le) || le.Which != which || le.Limit != limit {
			t.Fatalf("%v, want the %s limit of %d", err, which, limit)
		}
	}
	a1, _ := add("a1", 1, "10.0.0.1")
	if _, err := add("a2", 1, "10.0.0.2"); err != nil {
		t.Fatal(err)
	}
	_, err := add("a3", 1, "10.0.0.3")
	wantLimit(err, "user", 2)
	if _, err := add("b1", 2, "10.0.0.1"); err != nil {
		t.Fatal(err)
	}
	if _, err := add("c1", 3, "10.0.0.1"); err != nil {
		t.Fatal(err)
	}
	_, err = add("d1", 4, "10.0.0.1")
	wantLimit(err, "address", 3)
	if _, err := add("d2", 4, "10.0.0.4"); err != nil {
		t.Fatal(err)
	}
	_, err = add("e1", 5, "10.0.0.5")
	wantLimit(err, "total", 5)
	r.Remove(a1)
	if _, err := add("e2", 5, "10.0.0.1"); err != nil {
		t.Fatalf("after a socket ended, its place was not freed: %v", err)
	}
	if n := len(r.byAddr); n != 3 { // .1 (b1, c1, e2), .2, .4
		t.Fatalf("%d addresses counted, want 3", n)
	}
}

// TestWatch: the watcher hears each user, session and group gain its first
// connection and lose its last, once each, in order.
func TestWatch(t *testing.T) {
	r := New[*conn]()
	var got []string
	r.SetWatch(func(tg layer.Target, on bool) {
		got = append(got, fmt.Sprintf("%v %d %d %s", on, tg.Kind, tg.User, tg.ID))
	})
	expect := func(want ...string) {
		t.Helper()
		if !slices.Equal(got, want) {
			t.Fatalf("watch heard %q, want %q", got, want)
		}
		got = nil
	}
	a := mustAdd(t, r, "a", 1, "s1")
	expect("true 2 0 s1", "true 1 1 ")
	b := mustAdd(t, r, "b", 1, "s1")
	expect()
	_ = r.Join(a, "room")
	expect("true 4 0 room")
	_ = r.Join(b, "room")
	_ = r.Join(b, "room")
	expect()
	r.Leave(a, "room")
	expect()
	r.Remove(a)
	expect()
	r.Remove(b) // its last group goes with it
	expect("false 2 0 s1", "false 1 1 ", "false 4 0 room")
	r.Remove(b)
	expect()
}
