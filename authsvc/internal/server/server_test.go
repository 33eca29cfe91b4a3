package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/gatehouse/gatehouse/authsvc/internal/password"
	"github.com/gatehouse/gatehouse/authsvc/internal/server"
	"github.com/gatehouse/gatehouse/authsvc/internal/sessionevents"
	"github.com/gatehouse/gatehouse/authsvc/internal/store"
	"github.com/gatehouse/gatehouse/authsvc/pgtest"
)

var dbURL string

func TestMain(m *testing.M) { pgtest.Main(m, &dbURL) }

const adminToken = "test-admin-token"

type env struct {
	auth  authv1.AuthServiceClient
	admin authv1.AdminServiceClient
	cc    *grpc.ClientConn
	store *store.Store
	db    string
}

var cheap = password.Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}

// newEnv serves both services on a loopback TCP listener, backed by a fresh
// database, and returns clients for them.
func newEnv(t testing.TB, cfg server.Config) *env {
	t.Helper()
	db := pgtest.New(t)
	return serveOn(t, db, cfg)
}

func serveOn(t testing.TB, db string, cfg server.Config) *env {
	t.Helper()
	st, err := store.Open(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if err := st.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	events := sessionevents.New()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go events.Run(ctx, st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	for !events.Live() {
		time.Sleep(5 * time.Millisecond)
	}
	e := serve(t, st, events, cfg)
	e.db = db
	return e
}

// serve serves both services backed by st and events on a loopback TCP listener.
func serve(t testing.TB, st *store.Store, events *sessionevents.Fanout, cfg server.Config) *env {
	t.Helper()
	srv := server.New(st, password.NewHasher(cheap), events, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	g := grpc.NewServer(srv.ServerOptions()...)
	srv.Register(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return &env{auth: authv1.NewAuthServiceClient(cc), admin: authv1.NewAdminServiceClient(cc), cc: cc, store: st}
}

func withAdmin(ctx context.Context, tok string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
}

// wantCode checks the status code and the ErrorInfo reason and domain that every
// error carries; messages are for people and are not checked.
func wantCode(t *testing.T, err error, want codes.Code, reason string) *errdetails.ErrorInfo {
	t.Helper()
	st := status.Convert(err)
	var info *errdetails.ErrorInfo
	for _, d := range st.Details() {
		if i, ok := d.(*errdetails.ErrorInfo); ok {
			info = i
		}
	}
	if st.Code() != want || info == nil || info.GetReason() != reason || info.GetDomain() != server.ErrorDomain {
		t.Fatalf("status = %v %q %v, want %v with reason %s", st.Code(), st.Message(), info, want, reason)
	}
	return info
}

// retryDelay returns the RetryInfo delay of err, or 0.
func retryDelay(err error) time.Duration {
	for _, d := range status.Convert(err).Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok {
			return r.GetRetryDelay().AsDuration()
		}
	}
	return 0
}

func (e *env) createUser(t testing.TB, name, pw string) *authv1.User {
	t.Helper()
	resp, err := e.admin.CreateUser(withAdmin(t.Context(), adminToken), &authv1.CreateUserRequest{Username: name, Password: pw})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetUser()
}

func TestLogin(t *testing.T) {
	e := newEnv(t, server.Config{AdminToken: adminToken, MaxFailuresPerUser: 3, SessionTTL: time.Hour})
	ctx := t.Context()
	u := e.createUser(t, "alice", "password1")
	if u.GetId() != 1 {
		t.Fatalf("first user id = %d, want 1", u.GetId())
	}

	resp, err := e.auth.Login(ctx, &authv1.LoginRequest{Username: "ALICE", Password: "password1", UserAgent: "test-agent", ClientAddress: "203.0.113.9"})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetToken()) < 43 || strings.ContainsAny(resp.GetToken(), "+/=") {
		t.Fatalf("token %q is not 256 bits of URL-safe base64", resp.GetToken())
	}
	if resp.GetSession().GetId() == resp.GetToken() || resp.GetSession().GetUserAgent() != "test-agent" || resp.GetSession().GetClientAddress() != "203.0.113.9" {
		t.Fatalf("session = %v", resp.GetSession())
	}
	if ttl := resp.GetSession().GetExpiresAt().AsTime().Sub(resp.GetSession().GetCreatedAt().AsTime()); ttl < 59*time.Minute || ttl > 61*time.Minute {
		t.Fatalf("session lifetime %v, want the 1h TTL", ttl)
	}

	for _, tc := range []struct {
		name   string
		req    *authv1.LoginRequest
		code   codes.Code
		reason string
	}{
		{"empty username", &authv1.LoginRequest{Password: "x"}, codes.InvalidArgument, "CREDENTIALS_REQUIRED"},
		{"empty password", &authv1.LoginRequest{Username: "alice"}, codes.InvalidArgument, "CREDENTIALS_REQUIRED"},
		{"username too long", &authv1.LoginRequest{Username: strings.Repeat("a", 151), Password: "x"}, codes.InvalidArgument, "CREDENTIALS_TOO_LONG"},
		{"password too long", &authv1.LoginRequest{Username: "alice", Password: strings.Repeat("a", 1025)}, codes.InvalidArgument, "CREDENTIALS_TOO_LONG"},
		{"unknown user", &authv1.LoginRequest{Username: "nobody", Password: "password1"}, codes.Unauthenticated, "INVALID_CREDENTIALS"},
		{"client address not an IP", &authv1.LoginRequest{Username: "alice", Password: "password1", ClientAddress: "example.com"}, codes.InvalidArgument, "INVALID_CLIENT_ADDRESS"},
		{"client address huge", &authv1.LoginRequest{Username: "alice", Password: "password1", ClientAddress: strings.Repeat("1", 5000)}, codes.InvalidArgument, "INVALID_CLIENT_ADDRESS"},
		// Refused before the database, which would fail on a NUL (INTERNAL before).
		{"NUL in username", &authv1.LoginRequest{Username: "ali\x00ce", Password: "password1"}, codes.InvalidArgument, "INVALID_USERNAME"},
		{"control character in username", &authv1.LoginRequest{Username: "alice\n", Password: "password1"}, codes.InvalidArgument, "INVALID_USERNAME"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.auth.Login(ctx, tc.req)
			wantCode(t, err, tc.code, tc.reason)
		})
	}

	t.Run("a user agent with control characters is kept without them", func(t *testing.T) {
		resp, err := e.auth.Login(ctx, &authv1.LoginRequest{Username: "alice", Password: "password1", UserAgent: "bad\x00agent\x1b[31m"})
		if err != nil {
			t.Fatal(err)
		}
		if ua := resp.GetSession().GetUserAgent(); ua != "badagent[31m" {
			t.Fatalf("user agent kept as %q", ua)
		}
	})

	t.Run("wrong password, then rate limited even with the right one", func(t *testing.T) {
		for range 3 {
			_, err := e.auth.Login(ctx, &authv1.LoginRequest{Username: "alice", Password: "wrong"})
			wantCode(t, err, codes.Unauthenticated, "INVALID_CREDENTIALS")
		}
		_, err := e.auth.Login(ctx, &authv1.LoginRequest{Username: "Alice", Password: "password1"})
		wantCode(t, err, codes.ResourceExhausted, "RATE_LIMITED")
		if d := retryDelay(err); d < time.Second || d > time.Hour {
			t.Fatalf("RetryInfo delay %v, want the rest of the window (up to 15m)", d)
		}
	})

	t.Run("inactive user cannot log in", func(t *testing.T) {
		bob := e.createUser(t, "bob", "password2")
		if _, err := e.admin.SetUserActive(withAdmin(ctx, adminToken), &authv1.SetUserActiveRequest{UserId: bob.GetId()}); err != nil {
			t.Fatal(err)
		}
		_, err := e.auth.Login(ctx, &authv1.LoginRequest{Username: "bob", Password: "password2"})
		wantCode(t, err, codes.Unauthenticated, "INVALID_CREDENTIALS")
	})
}

func TestLoginPerAddressLimit(t *testing.T) {
	e := newEnv(t, server.Config{AdminToken: adminToken, MaxFailuresPerAddress: 2})
	e.createUser(t, "carol", "password3")
	for i := range 2 {
		_, err := e.auth.Login(t.Context(), &authv1.LoginRequest{Username: fmt.Sprint("guess", i), Password: "x"})
		wantCode(t, err, codes.Unauthenticated, "INVALID_CREDENTIALS")
	}
	_, err := e.auth.Login(t.Context(), &authv1.LoginRequest{Username: "carol", Password: "password3"})
	wantCode(t, err, codes.ResourceExhausted, "RATE_LIMITED")
	// Another address is not limited.
	if _, err := e.auth.Login(t.Context(), &authv1.LoginRequest{Username: "carol", Password: "password3", ClientAddress: "198.51.100.7"}); err != nil {
		t.Fatal(err)
	}
}

// TestLoginLimitUnderConcurrency: a burst of parallel guesses gets no more tries
// than the limit.
func TestLoginLimitUnderConcurrency(t *testing.T) {
	e := newEnv(t, server.Config{AdminToken: adminToken, MaxFailuresPerUser: 3})
	e.createUser(t, "erin", "password5")
	codesSeen := make(chan codes.Code, 30)
	var wg sync.WaitGroup
	for range 30 {
		wg.Go(func() {
			_, err := e.auth.Login(t.Context(), &authv1.LoginRequest{Username: "erin", Password: "guess"})
			codesSeen <- status.Code(err)
		})
	}
	wg.Wait()
	close(codesSeen)
	n := map[codes.Code]int{}
	for c := range codesSeen {
		n[c]++
	}
	if n[codes.Unauthenticated] != 3 || n[codes.ResourceExhausted] != 27 {
		t.Fatalf("30 parallel guesses answered %v; want 3 checked and 27 refused", n)
	}
}

// TestLoginLimitAcrossReplicas: failures counted by one replica count at another.
func TestLoginLimitAcrossReplicas(t *testing.T) {
	cfg := server.Config{AdminToken: adminToken, MaxFailuresPerUser: 2}
	a := newEnv(t, cfg)
	b := serveOn(t, a.db, cfg)
	a.createUser(t, "dave", "password4")
	_, err := a.auth.Login(t.Context(), &authv1.LoginRequest{Username: "dave", Password: "bad"})
	wantCode(t, err, codes.Unauthenticated, "INVALID_CREDENTIALS")
	_, err = b.auth.Login(t.Context(), &authv1.LoginRequest{Username: "dave", Password: "bad"})
	wantCode(t, err, codes.Unauthenticated, "INVALID_CREDENTIALS")
	_, err = a.auth.Login(t.Context(), &authv1.LoginRequest{Username: "dave", Password: "password4"})
	wantCode(t, err, codes.ResourceExhausted, "RATE_LIMITED")
}

func TestValidateAndLogout(t *testing.T) {
	e := newEnv(t, server.Config{AdminToken: adminToken, SessionTTL: time.Second})
	ctx := t.Context()
	e.createUser(t, "alice", "password1")
	login := func() *authv1.LoginResponse {
		r, err := e.auth.Login(ctx, &authv1.LoginRequest{Username: "alice", Password: "password1"})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	l := login()
	v, err := e.auth.ValidateSession(ctx, &authv1.ValidateSessionRequest{Token: l.GetToken()})
	if err != nil || v.GetUser().GetUsername() != "alice" || v.GetSession().GetId() != l.GetSession().GetId() || !v.GetUser().GetActive() {
		t.Fatalf("ValidateSession = %v, %v", v, err)
	}
	for _, tc := range []struct {
		name, token, reason string
	}{
		{"empty", "", "TOKEN_REQUIRED"},
		{"unknown", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "SESSION_UNKNOWN"},
		{"huge", strings.Repeat("A", 10000), "SESSION_UNKNOWN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.auth.ValidateSession(ctx, &authv1.ValidateSessionRequest{Token: tc.token})
			wantCode(t, err, codes.Unauthenticated, tc.reason)
			_, err = e.auth.Logout(ctx, &authv1.LogoutRequest{Token: tc.token})
			wantCode(t, err, codes.Unauthenticated, tc.reason)
		})
	}
	t.Run("logout ends the session and is idempotent", func(t *testing.T) {
		if _, err := e.auth.Logout(ctx, &authv1.LogoutRequest{Token: l.GetToken()}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.auth.Logout(ctx, &authv1.LogoutRequest{Token: l.GetToken()}); err != nil {
			t.Fatalf("second logout: %v", err)
		}
		_, err := e.auth.ValidateSession(ctx, &authv1.ValidateSessionRequest{Token: l.GetToken()})
		if info := wantCode(t, err, codes.Unauthenticated, "SESSION_REVOKED"); info.GetMetadata()["end_reason"] != "logout" {
			t.Fatalf("end_reason = %v, want logout", info.GetMetadata())
		}
	})
	t.Run("expired", func(t *testing.T) {
		l := login()
		time.Sleep(1100 * time.Millisecond)
		_, err := e.auth.ValidateSession(ctx, &authv1.ValidateSessionRequest{Token: l.GetToken()})
		wantCode(t, err, codes.Unauthenticated, "SESSION_EXPIRED")
	})
	t.Run("inactive user", func(t *testing.T) {
		l := login()
		// Deactivate behind the API's back so the session itself stays unrevoked.
		if _, err := e.store.SetUserActive(ctx, 1, false); err != nil {
			t.Fatal(err)
		}
		_, err := e.auth.ValidateSession(ctx, &authv1.ValidateSessionRequest{Token: l.GetToken()})
		if info := wantCode(t, err, codes.Unauthenticated, "SESSION_REVOKED"); info.GetMetadata()["end_reason"] != "user_disabled" {
			t.Fatalf("end_reason = %v, want user_disabled", info.GetMetadata())
		}
	})
}

func TestValidateInactiveUser(t *testing.T) {
	e := newEnv(t, server.Config{AdminToken: adminToken})
	u := e.createUser(t, "alice", "password1")
	l, err := e.auth.Login(t.Context(), &authv1.LoginRequest{Username: "alice", Password: "password1"})
	if err != nil {
		t.Fatal(err)
	}
	// Deactivated behind the API's back, so the session itself was not ended.
	if err := e.store.Exec(t.Context(), `UPDATE users SET active = false WHERE id = $1`, u.GetId()); err != nil {
		t.Fatal(err)
	}
	_, err = e.auth.ValidateSession(t.Context(), &authv1.ValidateSessionRequest{Token: l.GetToken()})
	wantCode(t, err, codes.Unauthenticated, "USER_INACTIVE")
}

// TestWatchWithoutFeed: while authsvc is not listening to the database, a subscription
// waits without headers (it is not live, so no one takes it for live), and goes live
// the moment the feed does, delivering what ends from then on.
func TestWatchWithoutFeed(t *testing.T) {
	db := pgtest.New(t)
	st, err := store.Open(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	if err := st.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	feed := sessionevents.New() // not listening yet
	e := serve(t, st, feed, server.Config{AdminToken: adminToken})
	short, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	_, err = trySubscribe(short, e.auth)
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a subscription while the feed is down = %v, want it to wait (DEADLINE_EXCEEDED at its deadline)", err)
	}
	type result struct {
		s   authv1.AuthService_WatchSessionEventsClient
		err error
	}
	waiting := make(chan result, 1)
	go func() {
		s, err := trySubscribe(t.Context(), e.auth)
		waiting <- result{s, err}
	}()
	time.Sleep(100 * time.Millisecond)
	ctx, stop := context.WithCancel(t.Context())
	t.Cleanup(stop)
	go feed.Run(ctx, st, slog.New(slog.DiscardHandler))
	r := <-waiting
	if r.err != nil {
		t.Fatalf("the waiting subscription: %v", r.err)
	}
	e.createUser(t, "alice", "password1")
	l, err := e.auth.Login(t.Context(), &authv1.LoginRequest{Username: "alice", Password: "password1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.auth.Logout(t.Context(), &authv1.LogoutRequest{Token: l.GetToken()}); err != nil {
		t.Fatal(err)
	}
	ev, err := r.s.Recv()
	if err != nil || ev.GetSessionId() != l.GetSession().GetId() {
		t.Fatalf("event = %v, %v; want the logout of %s", ev, err, l.GetSession().GetId())
	}
}

func TestAdminAuth(t *testing.T) {
	ctx := t.Context()
	t.Run("no admin token configured", func(t *testing.T) {
		e := newEnv(t, server.Config{})
		_, err := e.admin.ListUsers(withAdmin(ctx, "anything"), &authv1.ListUsersRequest{})
		wantCode(t, err, codes.Unauthenticated, "ADMIN_API_DISABLED")
	})
	e := newEnv(t, server.Config{AdminToken: adminToken})
	for name, tc := range map[string]struct {
		ctx    context.Context
		reason string
	}{
		"missing":     {ctx, "ADMIN_TOKEN_REQUIRED"},
		"wrong":       {withAdmin(ctx, "wrong-token"), "ADMIN_TOKEN_INVALID"},
		"prefix":      {withAdmin(ctx, adminToken[:5]), "ADMIN_TOKEN_INVALID"},
		"not bearer":  {metadata.AppendToOutgoingContext(ctx, "authorization", "Basic "+adminToken), "ADMIN_TOKEN_REQUIRED"},
		"token alone": {metadata.AppendToOutgoingContext(ctx, "authorization", adminToken), "ADMIN_TOKEN_REQUIRED"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := e.admin.CreateUser(tc.ctx, &authv1.CreateUserRequest{Username: "mallory", Password: "password1"})
			wantCode(t, err, codes.Unauthenticated, tc.reason)
		})
	}
	if _, err := e.admin.GetUser(withAdmin(ctx, adminToken), &authv1.GetUserRequest{UserId: 1}); status.Code(err) != codes.NotFound {
		t.Fatalf("nothing was created by refused calls: GetUser(1) = %v", err)
	}
}

func TestAdminUsers(t *testing.T) {
	e := newEnv(t, server.Config{AdminToken: adminToken})
	ctx := withAdmin(t.Context(), adminToken)
	for _, tc := range []struct {
		name, user, pw, reason string
	}{
		{"empty username", "", "password1", "INVALID_USERNAME"},
		{"space in username", "a b", "password1", "INVALID_USERNAME"},
		{"username too long", strings.Repeat("a", 151), "password1", "INVALID_USERNAME"},
		{"short password", "alice", "short", "INVALID_PASSWORD"},
		{"long password", "alice", strings.Repeat("p", 1025), "INVALID_PASSWORD"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.admin.CreateUser(ctx, &authv1.CreateUserRequest{Username: tc.user, Password: tc.pw})
			wantCode(t, err, codes.InvalidArgument, tc.reason)
		})
	}
	alice := e.createUser(t, "alice.o'x"[:7], "password1") // "alice.o": dots are allowed
	_, err := e.admin.CreateUser(ctx, &authv1.CreateUserRequest{Username: "ALICE.O", Password: "password1"})
	wantCode(t, err, codes.AlreadyExists, "USERNAME_TAKEN")
	e.createUser(t, "Ünïcode_user@x+y-z", "password1")
	for i := range 5 {
		e.createUser(t, fmt.Sprint("u", i), "password1")
	}

	got, err := e.admin.GetUser(ctx, &authv1.GetUserRequest{UserId: alice.GetId()})
	if err != nil || got.GetUser().GetUsername() != "alice.o" {
		t.Fatalf("GetUser = %v, %v", got, err)
	}
	_, err = e.admin.GetUser(ctx, &authv1.GetUserRequest{UserId: 999})
	wantCode(t, err, codes.NotFound, "USER_NOT_FOUND")
	_, err = e.admin.GetUser(ctx, &authv1.GetUserRequest{UserId: 0})
	wantCode(t, err, codes.InvalidArgument, "INVALID_USER_ID")

	var ids []int64
	tok := ""
	for {
		resp, err := e.admin.ListUsers(ctx, &authv1.ListUsersRequest{PageSize: 3, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range resp.GetUsers() {
			ids = append(ids, u.GetId())
		}
		if tok = resp.GetNextPageToken(); tok == "" {
			break
		}
	}
	// Ids ascend across pages with none missed (a refused insert may leave a gap).
	if len(ids) != 7 || ids[0] != 1 {
		t.Fatalf("paged ids = %v, want 7 users from id 1", ids)
	}
	for i := 1; i < len(ids); i++ {
		if ids[i] <= ids[i-1] {
			t.Fatalf("paged ids not ascending: %v", ids)
		}
	}
	for name, tc := range map[string]struct {
		req    *authv1.ListUsersRequest
		reason string
	}{
		"garbage token":      {&authv1.ListUsersRequest{PageToken: "%%%"}, "INVALID_PAGE_TOKEN"},
		"token of sessions":  {&authv1.ListUsersRequest{PageToken: "c2Vzc2lvbnM6MTox"}, "INVALID_PAGE_TOKEN"},
		"negative page size": {&authv1.ListUsersRequest{PageSize: -1}, "INVALID_PAGE_SIZE"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := e.admin.ListUsers(ctx, tc.req)
			wantCode(t, err, codes.InvalidArgument, tc.reason)
		})
	}

	_, err = e.admin.SetPassword(ctx, &authv1.SetPasswordRequest{UserId: alice.GetId(), Password: "short"})
	wantCode(t, err, codes.InvalidArgument, "INVALID_PASSWORD")
	_, err = e.admin.SetPassword(ctx, &authv1.SetPasswordRequest{UserId: 999, Password: "password9"})
	wantCode(t, err, codes.NotFound, "USER_NOT_FOUND")
	if _, err := e.admin.SetPassword(ctx, &authv1.SetPasswordRequest{UserId: alice.GetId(), Password: "password9"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.auth.Login(t.Context(), &authv1.LoginRequest{Username: "alice.o", Password: "password9"}); err != nil {
		t.Fatalf("login with the new password: %v", err)
	}
	_, err = e.admin.SetUserActive(ctx, &authv1.SetUserActiveRequest{UserId: 999})
	wantCode(t, err, codes.NotFound, "USER_NOT_FOUND")
	r, err := e.admin.SetUserActive(ctx, &authv1.SetUserActiveRequest{UserId: alice.GetId(), Active: false})
	if err != nil || r.GetUser().GetActive() {
		t.Fatalf("SetUserActive(false) = %v, %v", r, err)
	}
}

func TestAdminSessions(t *testing.T) {
	e := newEnv(t, server.Config{AdminToken: adminToken})
	ctx := withAdmin(t.Context(), adminToken)
	u := e.createUser(t, "alice", "password1")
	other := e.createUser(t, "bob", "password1")
	var logins []*authv1.LoginResponse
	for range 5 {
		l, err := e.auth.Login(t.Context(), &authv1.LoginRequest{Username: "alice", Password: "password1"})
		if err != nil {
			t.Fatal(err)
		}
		logins = append(logins, l)
	}
	var seen []string
	tok := ""
	for {
		resp, err := e.admin.ListSessions(ctx, &authv1.ListSessionsRequest{UserId: u.GetId(), PageSize: 2, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range resp.GetSessions() {
			seen = append(seen, s.GetId())
		}
		if tok = resp.GetNextPageToken(); tok == "" {
			break
		}
		// A page token is bound to its user.
		_, err = e.admin.ListSessions(ctx, &authv1.ListSessionsRequest{UserId: other.GetId(), PageToken: tok})
		wantCode(t, err, codes.InvalidArgument, "INVALID_PAGE_TOKEN")
	}
	if len(seen) != 5 || seen[0] != logins[4].GetSession().GetId() {
		t.Fatalf("sessions newest first = %v", seen)
	}
	_, err := e.admin.ListSessions(ctx, &authv1.ListSessionsRequest{UserId: 999})
	wantCode(t, err, codes.NotFound, "USER_NOT_FOUND")
	_, err = e.admin.ListSessions(ctx, &authv1.ListSessionsRequest{UserId: u.GetId(), PageToken: "bm9wZQ"})
	wantCode(t, err, codes.InvalidArgument, "INVALID_PAGE_TOKEN")

	_, err = e.admin.RevokeSession(ctx, &authv1.RevokeSessionRequest{})
	wantCode(t, err, codes.InvalidArgument, "SESSION_ID_REQUIRED")
	_, err = e.admin.RevokeSession(ctx, &authv1.RevokeSessionRequest{SessionId: "nope"})
	wantCode(t, err, codes.NotFound, "SESSION_NOT_FOUND")
	if _, err := e.admin.RevokeSession(ctx, &authv1.RevokeSessionRequest{SessionId: logins[0].GetSession().GetId()}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.RevokeSession(ctx, &authv1.RevokeSessionRequest{SessionId: logins[0].GetSession().GetId()}); err != nil {
		t.Fatalf("revoking twice: %v", err)
	}
	n, err := e.admin.RevokeUserSessions(ctx, &authv1.RevokeUserSessionsRequest{UserId: u.GetId()})
	if err != nil || n.GetRevokedCount() != 4 {
		t.Fatalf("RevokeUserSessions = %v, %v; want 4", n, err)
	}
	_, err = e.admin.RevokeUserSessions(ctx, &authv1.RevokeUserSessionsRequest{UserId: 999})
	wantCode(t, err, codes.NotFound, "USER_NOT_FOUND")
	_, err = e.admin.RevokeUserSessions(ctx, &authv1.RevokeUserSessionsRequest{UserId: -1})
	wantCode(t, err, codes.InvalidArgument, "INVALID_USER_ID")
	for _, l := range logins {
		_, err := e.auth.ValidateSession(t.Context(), &authv1.ValidateSessionRequest{Token: l.GetToken()})
		if info := wantCode(t, err, codes.Unauthenticated, "SESSION_REVOKED"); info.GetMetadata()["end_reason"] != "revoked" {
			t.Fatalf("end_reason = %v, want revoked", info.GetMetadata())
		}
	}
}

func TestWatchSessionEvents(t *testing.T) {
	e := newEnv(t, server.Config{AdminToken: adminToken})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	e.createUser(t, "alice", "password1")
	stream := subscribe(t, ctx, e.auth)
	l, err := e.auth.Login(ctx, &authv1.LoginRequest{Username: "alice", Password: "password1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.auth.Logout(ctx, &authv1.LogoutRequest{Token: l.GetToken()}); err != nil {
		t.Fatal(err)
	}
	ev, err := stream.Recv()
	if err != nil || ev.GetSessionId() != l.GetSession().GetId() || ev.GetReason() != authv1.SessionEndReason_SESSION_END_REASON_LOGOUT {
		t.Fatalf("event = %v, %v", ev, err)
	}

	t.Run("database connections dropped: stream ends UNAVAILABLE, resubscribe works", func(t *testing.T) {
		terminateBackends(t, e.db)
		_, err := stream.Recv()
		wantCode(t, err, codes.Unavailable, "EVENTS_MISSED")
		var s2 authv1.AuthService_WatchSessionEventsClient
		deadline := time.Now().Add(10 * time.Second)
		for s2 == nil {
			s2, err = trySubscribe(ctx, e.auth)
			if err != nil {
				if time.Now().After(deadline) {
					t.Fatalf("resubscribe: %v", err)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		// The pool reconnects too; the first calls may fail while it does.
		var l2 *authv1.LoginResponse
		for l2 == nil {
			l2, err = e.auth.Login(ctx, &authv1.LoginRequest{Username: "alice", Password: "password1"})
			if err != nil {
				if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
					t.Fatalf("login after reconnect: %v", err)
				}
			}
		}
		if _, err := e.admin.RevokeSession(withAdmin(ctx, adminToken), &authv1.RevokeSessionRequest{SessionId: l2.GetSession().GetId()}); err != nil {
			t.Fatal(err)
		}
		ev, err := s2.Recv()
		if err != nil || ev.GetSessionId() != l2.GetSession().GetId() || ev.GetReason() != authv1.SessionEndReason_SESSION_END_REASON_REVOKED {
			t.Fatalf("event after reconnect = %v, %v", ev, err)
		}
	})
}

func withMarkers(r *authv1.WatchSessionEventsRequest) { r.IncludeMarkers = true }

// TestSyncSessionEvents checks the cache barrier: a marker reaches the streams that
// asked for markers, on every replica, after every end committed before the call; and
// every call that ends sessions waits the cache lease before it returns.
func TestSyncSessionEvents(t *testing.T) {
	const lease = 300 * time.Millisecond
	cfg := server.Config{AdminToken: adminToken, CacheLease: lease}
	a := newEnv(t, cfg)
	b := serveOn(t, a.db, cfg) // another replica on the same database
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	actx := withAdmin(ctx, adminToken)
	alice := a.createUser(t, "alice", "password1")
	login := func() *authv1.LoginResponse {
		t.Helper()
		l, err := a.auth.Login(ctx, &authv1.LoginRequest{Username: "alice", Password: "password1"})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	marked := subscribe(t, ctx, b.auth, withMarkers)
	plain := subscribe(t, ctx, b.auth)

	l1, l2 := login(), login()
	if _, err := a.admin.RevokeSession(actx, &authv1.RevokeSessionRequest{SessionId: l1.GetSession().GetId()}); err != nil {
		t.Fatal(err)
	}
	resp, err := a.auth.SyncSessionEvents(ctx, &authv1.SyncSessionEventsRequest{Marker: "m-1"})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetCacheLease().AsDuration(); got != lease {
		t.Errorf("cache_lease = %v, want %v", got, lease)
	}
	if _, err := a.admin.RevokeSession(actx, &authv1.RevokeSessionRequest{SessionId: l2.GetSession().GetId()}); err != nil {
		t.Fatal(err)
	}
	next := func(s authv1.AuthService_WatchSessionEventsClient) string {
		t.Helper()
		ev, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if ev.GetMarker() != "" {
			if ev.GetSessionId() != "" || ev.GetUserId() != 0 || ev.GetEndedAt() != nil {
				t.Errorf("marker message carries event fields: %v", ev)
			}
			return "marker " + ev.GetMarker()
		}
		return ev.GetSessionId()
	}
	if got, want := []string{next(marked), next(marked), next(marked)}, []string{l1.GetSession().GetId(), "marker m-1", l2.GetSession().GetId()}; !slices.Equal(got, want) {
		t.Errorf("stream with markers: %v, want %v", got, want)
	}
	if got, want := []string{next(plain), next(plain)}, []string{l1.GetSession().GetId(), l2.GetSession().GetId()}; !slices.Equal(got, want) {
		t.Errorf("stream without markers: %v, want %v", got, want)
	}

	t.Run("bad markers refused", func(t *testing.T) {
		for _, m := range []string{"", strings.Repeat("m", 65)} {
			_, err := a.auth.SyncSessionEvents(ctx, &authv1.SyncSessionEventsRequest{Marker: m})
			wantCode(t, err, codes.InvalidArgument, "MARKER_INVALID")
		}
	})

	t.Run("every call that ends sessions waits the lease", func(t *testing.T) {
		calls := map[string]func() error{
			"Logout": func() error {
				_, err := a.auth.Logout(ctx, &authv1.LogoutRequest{Token: login().GetToken()})
				return err
			},
			"RevokeSession": func() error {
				_, err := a.admin.RevokeSession(actx, &authv1.RevokeSessionRequest{SessionId: login().GetSession().GetId()})
				return err
			},
			"RevokeUserSessions": func() error {
				_, err := a.admin.RevokeUserSessions(actx, &authv1.RevokeUserSessionsRequest{UserId: alice.GetId()})
				return err
			},
			"SetPassword": func() error {
				_, err := a.admin.SetPassword(actx, &authv1.SetPasswordRequest{UserId: alice.GetId(), Password: "password1"})
				return err
			},
			"SetUserActive false": func() error {
				_, err := a.admin.SetUserActive(actx, &authv1.SetUserActiveRequest{UserId: alice.GetId(), Active: false})
				if err == nil {
					_, err = a.admin.SetUserActive(actx, &authv1.SetUserActiveRequest{UserId: alice.GetId(), Active: true})
				}
				return err
			},
		}
		for name, call := range calls {
			start := time.Now()
			if err := call(); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if took := time.Since(start); took < lease {
				t.Errorf("%s returned after %v, before the %v lease", name, took, lease)
			}
		}
	})
}

func subscribe(t *testing.T, ctx context.Context, c authv1.AuthServiceClient, opts ...func(*authv1.WatchSessionEventsRequest)) authv1.AuthService_WatchSessionEventsClient {
	t.Helper()
	s, err := trySubscribe(ctx, c, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// trySubscribe opens a stream and waits for its headers, which mean it is live.
func trySubscribe(ctx context.Context, c authv1.AuthServiceClient, opts ...func(*authv1.WatchSessionEventsRequest)) (authv1.AuthService_WatchSessionEventsClient, error) {
	req := &authv1.WatchSessionEventsRequest{}
	for _, o := range opts {
		o(req)
	}
	s, err := c.WatchSessionEvents(ctx, req)
	if err != nil {
		return nil, err
	}
	if md, _ := s.Header(); md == nil {
		_, err := s.Recv()
		return nil, err
	}
	return s, nil
}

// terminateBackends drops every server connection to the database, as a PostgreSQL
// restart does.
func terminateBackends(t *testing.T, db string) {
	t.Helper()
	st, err := store.Open(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	u, err := url.Parse(db)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	if err := st.Exec(t.Context(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, name); err != nil {
		t.Fatal(err)
	}
}

// TestSessionLimitPerUser: a login past MaxSessionsPerUser ends the user's oldest
// session, which then answers SESSION_REVOKED with end_reason session_limit.
func TestSessionLimitPerUser(t *testing.T) {
	e := newEnv(t, server.Config{AdminToken: adminToken, MaxSessionsPerUser: 2})
	ctx := t.Context()
	e.createUser(t, "carol", "password1")
	var toks []string
	for range 3 {
		resp, err := e.auth.Login(ctx, &authv1.LoginRequest{Username: "carol", Password: "password1"})
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, resp.GetToken())
		time.Sleep(2 * time.Millisecond)
	}
	_, err := e.auth.ValidateSession(ctx, &authv1.ValidateSessionRequest{Token: toks[0]})
	if info := wantCode(t, err, codes.Unauthenticated, "SESSION_REVOKED"); info.GetMetadata()["end_reason"] != "session_limit" {
		t.Fatalf("end_reason = %v, want session_limit", info.GetMetadata())
	}
	for _, tok := range toks[1:] {
		if _, err := e.auth.ValidateSession(ctx, &authv1.ValidateSessionRequest{Token: tok}); err != nil {
			t.Fatalf("a session within the limit: %v", err)
		}
	}
}

// TestClientAddressesNormalised: an address is recorded in one form (IPv4-mapped IPv6
// unmapped, zone dropped), and IPv6 failures are counted per /64, the block one host
// usually holds, so a host cannot get a fresh failure budget per address.
func TestClientAddressesNormalised(t *testing.T) {
	e := newEnv(t, server.Config{AdminToken: adminToken, MaxFailuresPerAddress: 2})
	e.createUser(t, "dave", "password4")
	for given, want := range map[string]string{"::ffff:203.0.113.9": "203.0.113.9", "fe80::1%eth0": "fe80::1", "2001:DB8::1": "2001:db8::1"} {
		resp, err := e.auth.Login(t.Context(), &authv1.LoginRequest{Username: "dave", Password: "password4", ClientAddress: given})
		if err != nil || resp.GetSession().GetClientAddress() != want {
			t.Fatalf("client_address %q recorded as %q (%v), want %q", given, resp.GetSession().GetClientAddress(), err, want)
		}
	}
	for i, addr := range []string{"2001:db8:0:1::1", "2001:db8:0:1::2"} {
		_, err := e.auth.Login(t.Context(), &authv1.LoginRequest{Username: fmt.Sprint("guess", i), Password: "x", ClientAddress: addr})
		wantCode(t, err, codes.Unauthenticated, "INVALID_CREDENTIALS")
	}
	_, err := e.auth.Login(t.Context(), &authv1.LoginRequest{Username: "dave", Password: "password4", ClientAddress: "2001:db8:0:1::3"})
	wantCode(t, err, codes.ResourceExhausted, "RATE_LIMITED") // the same /64
	if _, err := e.auth.Login(t.Context(), &authv1.LoginRequest{Username: "dave", Password: "password4", ClientAddress: "2001:db8:0:2::3"}); err != nil {
		t.Fatalf("another /64: %v", err)
	}
	// IPv4 is counted per address.
	for i := range 2 {
		_, err := e.auth.Login(t.Context(), &authv1.LoginRequest{Username: fmt.Sprint("v4guess", i), Password: "x", ClientAddress: "198.51.100.1"})
		wantCode(t, err, codes.Unauthenticated, "INVALID_CREDENTIALS")
	}
	if _, err := e.auth.Login(t.Context(), &authv1.LoginRequest{Username: "dave", Password: "password4", ClientAddress: "198.51.100.2"}); err != nil {
		t.Fatalf("the next IPv4 address: %v", err)
	}
}

// TestLockoutIsPerAddress: failed guesses lock a username out only at the address
// they came from; the owner signing in from another address is not refused, until
// the failures for that user from every address reach the far higher total.
func TestLockoutIsPerAddress(t *testing.T) {
	e := newEnv(t, server.Config{AdminToken: adminToken, MaxFailuresPerUser: 3, MaxFailuresPerUserTotal: 8})
	e.createUser(t, "erin", "password5")
	login := func(pw, addr string) error {
		_, err := e.auth.Login(t.Context(), &authv1.LoginRequest{Username: "erin", Password: pw, ClientAddress: addr})
		return err
	}
	for range 3 {
		wantCode(t, login("wrong", "203.0.113.66"), codes.Unauthenticated, "INVALID_CREDENTIALS")
	}
	wantCode(t, login("password5", "203.0.113.66"), codes.ResourceExhausted, "RATE_LIMITED") // the attacker's address
	if err := login("password5", "198.51.100.1"); err != nil {
		t.Fatalf("the owner at another address was refused because of failures elsewhere: %v", err)
	}
	// The total across addresses: 4 counted at the attacker's address (the refused
	// attempt too), the owner's success refunded, 4 more: 8, the total; the next is over.
	for i := range 4 {
		wantCode(t, login("wrong", fmt.Sprint("203.0.113.", 70+i)), codes.Unauthenticated, "INVALID_CREDENTIALS")
	}
	wantCode(t, login("password5", "198.51.100.2"), codes.ResourceExhausted, "RATE_LIMITED")
}
