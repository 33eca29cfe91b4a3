package store_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/authsvc/internal/store"
	"github.com/gatehouse/gatehouse/authsvc/pgtest"
)

var dbURL string

func TestMain(m *testing.M) { pgtest.Main(m, &dbURL) }

// newStore opens a migrated store on a fresh database of its own.
func newStore(t *testing.T) *store.Store {
	t.Helper()
	st, _ := newStoreURL(t)
	return st
}

// newStoreURL is newStore that also returns the database's URL, for tests that need a
// connection of their own.
func newStoreURL(t *testing.T) (*store.Store, string) {
	t.Helper()
	db := pgtest.New(t)
	st, err := store.Open(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if err := st.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	return st, db
}

func mustUser(t *testing.T, st *store.Store, name string) store.User {
	t.Helper()
	u, err := st.CreateUser(t.Context(), name, "$argon2id$stub")
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func hashOf(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }

func mustSession(t *testing.T, st *store.Store, userID int64, token string, ttl time.Duration) store.Session {
	t.Helper()
	s, _, err := st.CreateSession(t.Context(), store.NewSession{
		ID: "sess-" + token, TokenHash: hashOf(token), UserID: userID, ExpiresAt: time.Now().Add(ttl),
	}, "$argon2id$stub")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestMigrateConcurrentlyAndTwice(t *testing.T) {
	u := pgtest.New(t)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			st, err := store.Open(t.Context(), u)
			if err != nil {
				errs <- err
				return
			}
			defer st.Close()
			errs <- st.Migrate(t.Context())
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent migrate: %v", err)
		}
	}
}

func TestUsers(t *testing.T) {
	st := newStore(t)
	ctx := t.Context()
	alice := mustUser(t, st, "Alice")
	if alice.ID != 1 || !alice.Active || alice.Username != "Alice" {
		t.Fatalf("first user = %+v, want id 1, active", alice)
	}
	if _, err := st.CreateUser(ctx, "aLiCe", "x"); !errors.Is(err, store.ErrUsernameTaken) {
		t.Fatalf("duplicate in other case: err = %v, want ErrUsernameTaken", err)
	}
	u, hash, err := st.UserForLogin(ctx, "ALICE")
	if err != nil || u.ID != alice.ID || hash != "$argon2id$stub" {
		t.Fatalf("UserForLogin = %+v %q %v", u, hash, err)
	}
	if _, _, err := st.UserForLogin(ctx, "bob"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("UserForLogin(unknown) err = %v", err)
	}
	if _, err := st.GetUser(ctx, 999); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetUser(999) err = %v", err)
	}
	for i := range 4 {
		mustUser(t, st, fmt.Sprintf("user%d", i))
	}
	page, err := st.ListUsers(ctx, 2, 2)
	if err != nil || len(page) != 2 || page[0].ID != 3 || page[1].ID != 4 {
		t.Fatalf("ListUsers(after 2, 2) = %+v, %v", page, err)
	}
	if n, _ := st.CountUsers(ctx); n != 5 {
		t.Fatalf("CountUsers = %d", n)
	}
}

func TestValidateSession(t *testing.T) {
	st := newStore(t)
	ctx := t.Context()
	u := mustUser(t, st, "alice")
	live := mustSession(t, st, u.ID, "live", time.Hour)
	mustSession(t, st, u.ID, "old", -time.Second)

	gu, gs, err := st.ValidateSession(ctx, hashOf("live"))
	if err != nil || gu.ID != u.ID || gu.Username != "alice" || gs.ID != live.ID {
		t.Fatalf("ValidateSession(live) = %+v %+v %v", gu, gs, err)
	}
	for name, tc := range map[string]struct {
		token string
		want  error
	}{
		"unknown": {"nope", store.ErrSessionUnknown},
		"expired": {"old", store.ErrSessionExpired},
	} {
		if _, _, err := st.ValidateSession(ctx, hashOf(tc.token)); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", name, err, tc.want)
		}
	}

	if err := st.EndSessionByToken(ctx, hashOf("live"), store.EndLogout); err != nil {
		t.Fatal(err)
	}
	if err := st.EndSessionByToken(ctx, hashOf("live"), store.EndLogout); err != nil {
		t.Fatalf("second logout: %v, want success", err)
	}
	if err := st.EndSessionByToken(ctx, hashOf("nope"), store.EndLogout); !errors.Is(err, store.ErrSessionUnknown) {
		t.Fatalf("logout unknown: %v", err)
	}
	if _, _, err := st.ValidateSession(ctx, hashOf("live")); !errors.Is(err, store.ErrSessionRevoked) {
		t.Fatalf("after logout: %v, want ErrSessionRevoked", err)
	}

	mustSession(t, st, u.ID, "second", time.Hour)
	if _, err := st.SetUserActive(ctx, u.ID, false); err != nil {
		t.Fatal(err)
	}
	// Deactivating ended the session; reactivating does not bring it back.
	if _, _, err := st.ValidateSession(ctx, hashOf("second")); !errors.Is(err, store.ErrSessionRevoked) {
		t.Fatalf("after deactivate: %v, want ErrSessionRevoked", err)
	}
	// A session whose user is inactive but that was not ended (as after a direct SQL
	// change) is still refused.
	if _, err := st.SetUserActive(ctx, u.ID, true); err != nil {
		t.Fatal(err)
	}
	mustSession(t, st, u.ID, "third", time.Hour)
	if err := st.Exec(ctx, `UPDATE users SET active = false WHERE id = $1`, u.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.ValidateSession(ctx, hashOf("third")); !errors.Is(err, store.ErrUserInactive) {
		t.Fatalf("inactive user: %v, want ErrUserInactive", err)
	}
	if _, err := st.SetUserActive(ctx, 999, true); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("SetUserActive(999): %v", err)
	}
}

func TestRevokeAndList(t *testing.T) {
	st := newStore(t)
	ctx := t.Context()
	u := mustUser(t, st, "alice")
	other := mustUser(t, st, "bob")
	for i := range 5 {
		mustSession(t, st, u.ID, fmt.Sprint("t", i), time.Hour)
	}
	mustSession(t, st, other.ID, "b", time.Hour)
	mustSession(t, st, u.ID, "expired", -time.Minute)

	var all []store.Session
	var after *store.SessionCursor
	for {
		page, err := st.ListSessions(ctx, u.ID, after, 2)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page...)
		if len(page) < 2 {
			break
		}
		last := page[len(page)-1]
		after = &store.SessionCursor{CreatedAt: last.CreatedAt, ID: last.ID}
	}
	if len(all) != 5 {
		t.Fatalf("listed %d live sessions over pages, want 5: %+v", len(all), all)
	}
	for i := 1; i < len(all); i++ {
		if all[i].CreatedAt.After(all[i-1].CreatedAt) {
			t.Fatalf("sessions not newest first: %+v", all)
		}
	}
	if err := st.RevokeSession(ctx, all[0].ID, store.EndRevoked); err != nil {
		t.Fatal(err)
	}
	if err := st.RevokeSession(ctx, "missing", store.EndRevoked); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("RevokeSession(missing) = %v", err)
	}
	n, err := st.RevokeUserSessions(ctx, u.ID, store.EndRevoked)
	if err != nil || n != 4 {
		t.Fatalf("RevokeUserSessions = %d, %v; want 4", n, err)
	}
	if _, err := st.RevokeUserSessions(ctx, 999, store.EndRevoked); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("RevokeUserSessions(999) = %v", err)
	}
	if _, _, err := st.ValidateSession(ctx, hashOf("b")); err != nil {
		t.Fatalf("another user's session was touched: %v", err)
	}
	if _, err := st.ListSessions(ctx, 999, nil, 10); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("ListSessions(999) = %v", err)
	}
	deleted, err := st.DeleteExpired(ctx, 0, time.Hour)
	if err != nil || deleted != 1 {
		t.Fatalf("DeleteExpired = %d, %v; want 1", deleted, err)
	}
}

func TestLoginAttempts(t *testing.T) {
	st := newStore(t)
	ctx := t.Context()
	keys := []string{"user:alice", "addr:127.0.0.1"}
	for i := 1; i <= 3; i++ {
		got, err := st.CountLoginAttempt(ctx, keys, time.Hour)
		if err != nil || got["user:alice"].N != i || got["addr:127.0.0.1"].N != i {
			t.Fatalf("attempt %d: counts = %v, %v", i, got, err)
		}
	}
	if err := st.RefundLoginAttempt(ctx, "user:alice", "addr:127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	got, _ := st.CountLoginAttempt(ctx, keys, time.Hour)
	if got["user:alice"].N != 1 || got["addr:127.0.0.1"].N != 3 {
		t.Fatalf("after refund and one more attempt = %v, want user 1 (cleared), address 3 (2+1)", got)
	}
	// A window that has passed starts again at 1.
	time.Sleep(20 * time.Millisecond)
	got, _ = st.CountLoginAttempt(ctx, keys[1:], 10*time.Millisecond)
	if got["addr:127.0.0.1"].N != 1 {
		t.Fatalf("after the window = %v, want a new window with 1", got)
	}
	// Concurrent attempts each get their own count.
	var wg sync.WaitGroup
	seen := make(chan int, 20)
	for range 20 {
		wg.Go(func() {
			got, err := st.CountLoginAttempt(ctx, []string{"user:bob"}, time.Hour)
			if err != nil {
				t.Error(err)
			}
			seen <- got["user:bob"].N
		})
	}
	wg.Wait()
	close(seen)
	distinct := map[int]bool{}
	for n := range seen {
		distinct[n] = true
	}
	if len(distinct) != 20 {
		t.Fatalf("20 concurrent attempts saw %d distinct counts", len(distinct))
	}
}

func TestCreateSessionOnlyForVerifiedHash(t *testing.T) {
	st := newStore(t)
	ctx := t.Context()
	u := mustUser(t, st, "alice")
	n := store.NewSession{ID: "s1", TokenHash: hashOf("t1"), UserID: u.ID, ExpiresAt: time.Now().Add(time.Hour)}
	if _, _, err := st.CreateSession(ctx, n, "$argon2id$other"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("session for a stale hash: %v, want ErrNotFound", err)
	}
	if _, err := st.SetUserActive(ctx, u.ID, false); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.CreateSession(ctx, n, "$argon2id$stub"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("session for an inactive user: %v, want ErrNotFound", err)
	}
	if err := st.UpdatePasswordHash(ctx, u.ID, "$argon2id$other", "$argon2id$new"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("rehash over a changed hash: %v, want ErrNotFound", err)
	}
}

// TestListenNoticesHalfOpen: a LISTEN connection whose server goes silent without
// closing it (a half-open TCP connection) is noticed by the idle check: Listen
// returns, so the caller listens again and re-checks what it holds.
func TestListenNoticesHalfOpen(t *testing.T) {
	old := store.ListenIdleCheck
	store.ListenIdleCheck = 200 * time.Millisecond
	t.Cleanup(func() { store.ListenIdleCheck = old })
	viaProxy, proxy := pgtest.ProxyURL(t, pgtest.New(t))
	st, err := store.Open(t.Context(), viaProxy)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- st.Listen(t.Context(), func() { close(ready) }, func(store.Event) {}) }()
	<-ready
	time.Sleep(500 * time.Millisecond) // idle checks pass while the server answers
	select {
	case err := <-done:
		t.Fatalf("Listen ended while the connection was fine: %v", err)
	default:
	}
	proxy.Silence(true)
	start := time.Now()
	select {
	case err := <-done:
		t.Logf("a silent LISTEN connection noticed after %s: %v", time.Since(start).Round(10*time.Millisecond), err)
	case <-time.After(10 * time.Second):
		t.Fatal("Listen still waits on a silent connection after 10 s")
	}
}

func TestListenDeliversEveryEnd(t *testing.T) {
	// Idle checks every 50ms: events must still arrive between them.
	old := store.ListenIdleCheck
	store.ListenIdleCheck = 50 * time.Millisecond
	t.Cleanup(func() { store.ListenIdleCheck = old })
	st := newStore(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	u := mustUser(t, st, "alice")
	for _, tok := range []string{"a", "b", "c", "d"} {
		mustSession(t, st, u.ID, tok, time.Hour)
	}
	ready := make(chan struct{})
	events := make(chan store.Event, 16)
	go func() { _ = st.Listen(ctx, func() { close(ready) }, func(e store.Event) { events <- e }) }()
	<-ready
	time.Sleep(200 * time.Millisecond) // a few idle checks

	if err := st.EndSessionByToken(ctx, hashOf("a"), store.EndLogout); err != nil {
		t.Fatal(err)
	}
	if err := st.EndSessionByToken(ctx, hashOf("a"), store.EndLogout); err != nil { // no second event
		t.Fatal(err)
	}
	if err := st.RevokeSession(ctx, "sess-b", store.EndRevoked); err != nil {
		t.Fatal(err)
	}
	if err := st.SetPassword(ctx, u.ID, "$argon2id$new"); err != nil {
		t.Fatal(err)
	}
	want := []store.Event{
		{SessionID: "sess-a", UserID: u.ID, Reason: store.EndLogout},
		{SessionID: "sess-b", UserID: u.ID, Reason: store.EndRevoked},
		{SessionID: "sess-c", UserID: u.ID, Reason: store.EndPasswordChanged},
		{SessionID: "sess-d", UserID: u.ID, Reason: store.EndPasswordChanged},
	}
	got := map[string]store.Event{}
	for range want {
		select {
		case e := <-events:
			if e.EndedAt.IsZero() || time.Since(e.EndedAt) > time.Minute {
				t.Errorf("event %+v has a bad ended_at", e)
			}
			e.EndedAt = time.Time{}
			got[e.SessionID] = e
		case <-time.After(5 * time.Second):
			t.Fatalf("got %d events, want %d: %+v", len(got), len(want), got)
		}
	}
	for _, w := range want {
		if got[w.SessionID] != w {
			t.Errorf("event for %s = %+v, want %+v", w.SessionID, got[w.SessionID], w)
		}
	}
	// No extra event: a marker sent now comes back next (the feed is in commit order).
	if err := st.Mark(ctx, "end-of-test"); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-events:
		if e.Marker != "end-of-test" {
			t.Fatalf("unexpected extra event %+v", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the marker did not come back")
	}
}

func TestMarkArrivesAfterEarlierEnds(t *testing.T) {
	st := newStore(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	u := mustUser(t, st, "alice")
	for _, tok := range []string{"a", "b"} {
		mustSession(t, st, u.ID, tok, time.Hour)
	}
	ready := make(chan struct{})
	events := make(chan store.Event, 16)
	go func() { _ = st.Listen(ctx, func() { close(ready) }, func(e store.Event) { events <- e }) }()
	<-ready

	steps := []func() error{
		func() error { return st.RevokeSession(ctx, "sess-a", store.EndRevoked) },
		func() error { return st.Mark(ctx, "m1") },
		func() error { return st.RevokeSession(ctx, "sess-b", store.EndRevoked) },
		func() error { return st.Mark(ctx, "m2") },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for range steps {
		select {
		case e := <-events:
			got = append(got, e.SessionID+e.Marker)
		case <-time.After(5 * time.Second):
			t.Fatalf("got %v, want 4 events", got)
		}
	}
	if want := []string{"sess-a", "m1", "sess-b", "m2"}; !slices.Equal(got, want) {
		t.Fatalf("feed order %v, want %v", got, want)
	}
}

// TestLoginWaitsForDeactivation: a login racing a deactivation either fails or
// creates a session the deactivation then ends (with an event); never a live session
// of an inactive user.
func TestLoginWaitsForDeactivation(t *testing.T) {
	st, db := newStoreURL(t)
	u := mustUser(t, st, "alice")
	conn, err := pgx.Connect(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	// A deactivation in progress, as SetUserActive runs it: user row first.
	tx, err := conn.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(t.Context(), "UPDATE users SET active = false WHERE id = $1", u.ID); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := st.CreateSession(t.Context(), store.NewSession{
			ID: "sess-racer", TokenHash: hashOf("racer"), UserID: u.ID, ExpiresAt: time.Now().Add(time.Hour),
		}, "$argon2id$stub")
		done <- err
	}()
	// The login must wait: await it blocked on the user row's lock (or finishing,
	// which fails the test).
	for blocked := false; !blocked; {
		select {
		case err := <-done:
			t.Fatalf("login did not wait for the deactivation in progress: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
		// (conn is inside the transaction, where pg_stat_activity is a snapshot: clear it.)
		if _, err := conn.Exec(t.Context(), "SELECT pg_stat_clear_snapshot()"); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRow(t.Context(), `SELECT count(*) > 0 FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()`).Scan(&blocked); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tx.Exec(t.Context(), "UPDATE sessions SET revoked_at = now(), end_reason = 'user_disabled' WHERE user_id = $1 AND revoked_at IS NULL", u.ID); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("login after the deactivation: %v, want ErrNotFound", err)
	}
}

// TestSessionLimit: a session created past MaxLive ends the user's oldest live ones
// (session_limit, with an event), not other users' and not expired or ended ones.
func TestSessionLimit(t *testing.T) {
	st := newStore(t)
	ctx := t.Context()
	alice, bob := mustUser(t, st, "alice"), mustUser(t, st, "bob")
	mustSession(t, st, bob.ID, "b1", time.Hour)
	create := func(tok string) int {
		t.Helper()
		_, ended, err := st.CreateSession(ctx, store.NewSession{
			ID: "sess-" + tok, TokenHash: hashOf(tok), UserID: alice.ID, ExpiresAt: time.Now().Add(time.Hour), MaxLive: 3,
		}, "$argon2id$stub")
		if err != nil {
			t.Fatal(err)
		}
		return ended
	}
	for _, tok := range []string{"a1", "a2", "a3"} {
		if n := create(tok); n != 0 {
			t.Fatalf("%s ended %d sessions under the cap", tok, n)
		}
		time.Sleep(2 * time.Millisecond) // distinct created_at
	}
	if n := create("a4"); n != 1 {
		t.Fatalf("the 4th session of a cap of 3 ended %d, want 1", n)
	}
	if _, _, err := st.ValidateSession(ctx, hashOf("a1")); !errors.Is(err, store.ErrSessionRevoked) || !strings.Contains(err.Error(), "session_limit") {
		t.Fatalf("the oldest session: %v, want revoked with session_limit", err)
	}
	for _, tok := range []string{"a2", "a3", "a4", "b1"} {
		if _, _, err := st.ValidateSession(ctx, hashOf(tok)); err != nil {
			t.Fatalf("%s: %v", tok, err)
		}
	}
}
