package metrics

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
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

// env is the real server, with its metrics on reg, served on loopback and backed by
// a fresh database.
type env struct {
	db    string
	reg   *prometheus.Registry
	grpc  *grpc.Server
	st    *store.Store
	auth  authv1.AuthServiceClient
	admin authv1.AdminServiceClient
}

func newEnv(t *testing.T, cfg server.Config) *env {
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
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	events := sessionevents.New()
	hasher := password.NewHasher(password.Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32})
	srv := server.New(st, hasher, events, cfg, log)
	reg := prometheus.NewRegistry()
	gm := New(reg, Parts{Server: srv, Hasher: hasher, Events: events, Store: st})
	g := grpc.NewServer(append(gm.ServerOptions(), srv.ServerOptions()...)...)
	srv.Register(g)
	healthpb.RegisterHealthServer(g, health.NewServer())
	gm.Initialize(g)

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go events.Run(ctx, st, log)
	for !events.Live() {
		time.Sleep(5 * time.Millisecond)
	}
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
	return &env{db: db, reg: reg, grpc: g, st: st, auth: authv1.NewAuthServiceClient(cc), admin: authv1.NewAdminServiceClient(cc)}
}

// value returns the series name{labels} (name, value pairs) of reg: a counter's or a
// gauge's value, a histogram's count of observations. It fails the test if there is
// no such series.
func value(t *testing.T, reg prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			if len(have) != len(labels)/2 {
				continue
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if v, ok := have[labels[i]]; !ok || v != labels[i+1] {
					continue series
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	t.Fatalf("no series %s%q", name, labels)
	return 0
}

// want checks the series name{labels} of reg.
func want(t *testing.T, reg prometheus.Gatherer, v float64, name string, labels ...string) {
	t.Helper()
	if got := value(t, reg, name, labels...); got != v {
		t.Errorf("%s%q = %v, want %v", name, labels, got, v)
	}
}

// eventually waits up to 10 s for the series to reach v.
func eventually(t *testing.T, reg prometheus.Gatherer, v float64, name string, labels ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for value(t, reg, name, labels...) != v {
		if time.Now().After(deadline) {
			t.Fatalf("%s%q = %v after 10 s, want %v", name, labels, value(t, reg, name, labels...), v)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func grpcLabels(typ, service, method, code string) []string {
	l := []string{"grpc_type", typ, "grpc_service", service, "grpc_method", method}
	if code != "" {
		l = append(l, "grpc_code", code)
	}
	return l
}

const (
	authService  = "gatehouse.auth.v1.AuthService"
	adminService = "gatehouse.auth.v1.AdminService"
	handled      = "grpc_server_handled_total"
	handling     = "grpc_server_handling_seconds"
	logins       = "gatehouse_auth_logins_total"
	limited      = "gatehouse_auth_rate_limited_total"
)

// TestSeriesFromStart: before any call, every labelled series is there at zero.
func TestSeriesFromStart(t *testing.T) {
	e := newEnv(t, server.Config{AdminToken: adminToken})
	var methods int
	for _, info := range e.grpc.GetServiceInfo() {
		methods += len(info.Methods)
	}
	for name, n := range map[string]int{
		handled: methods, handling: methods,
		logins: len(server.LoginOutcomes), limited: len(server.RateLimits),
		"gatehouse_auth_session_events_total": 5, "gatehouse_auth_db_connections": 3,
	} {
		if got, err := testutil.GatherAndCount(e.reg, name); err != nil || got != n {
			t.Errorf("%s: %d series (%v), want %d", name, got, err, n)
		}
	}
	want(t, e.reg, 0, handled, grpcLabels("unary", authService, "Login", "OK")...)
	want(t, e.reg, 0, handled, grpcLabels("server_stream", authService, "WatchSessionEvents", "OK")...)
	want(t, e.reg, 0, handled, grpcLabels("server_stream", "grpc.health.v1.Health", "Watch", "OK")...)
	want(t, e.reg, 0, handling, grpcLabels("unary", adminService, "CreateUser", "")...)
	for _, o := range server.LoginOutcomes {
		want(t, e.reg, 0, logins, "outcome", o)
	}
	for _, l := range server.RateLimits {
		want(t, e.reg, 0, limited, "limit", l)
	}
	for _, g := range []string{"gatehouse_auth_hashing_in_flight", "gatehouse_auth_hashing_waiting", "gatehouse_auth_logins_in_progress",
		"gatehouse_auth_event_subscribers", "gatehouse_auth_event_subscribers_waiting", "gatehouse_auth_event_feed_reconnects_total",
		"gatehouse_auth_event_subscribers_dropped_total", "gatehouse_auth_event_feed_lag_seconds"} {
		want(t, e.reg, 0, g)
	}
	want(t, e.reg, 1, "gatehouse_auth_event_feed_live")
	if n, err := testutil.GatherAndCount(e.reg, "go_goroutines", "process_start_time_seconds"); err != nil || n != 2 {
		t.Errorf("Go and process collectors: %d of 2 series (%v)", n, err)
	}

	rec := httptest.NewRecorder()
	Handler(e.reg).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `gatehouse_auth_logins_total{outcome="ok"} 0`) {
		t.Errorf("GET /metrics = %d:\n%.500s", rec.Code, rec.Body.String())
	}
	rec = httptest.NewRecorder()
	Handler(e.reg).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/debug/pprof/", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("GET /debug/pprof/ = %d, want 404: the listener serves metrics only", rec.Code)
	}
}

// TestLoginMetrics: each kind of Login outcome and refusal is counted once, under
// gatehouse_auth_* and gRPC's own series, and so is a call the admin check refused.
func TestLoginMetrics(t *testing.T) {
	e := newEnv(t, server.Config{AdminToken: adminToken, MaxFailuresPerUser: 1, MaxConcurrentLoginsPerAddress: 1})
	ctx := t.Context()
	if _, err := e.admin.CreateUser(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+adminToken),
		&authv1.CreateUserRequest{Username: "bob", Password: "right password"}); err != nil {
		t.Fatal(err)
	}
	login := func(user, pw string) (*authv1.LoginResponse, codes.Code) {
		resp, err := e.auth.Login(ctx, &authv1.LoginRequest{Username: user, Password: pw})
		return resp, status.Code(err)
	}
	ok, code := login("bob", "right password")
	if code != codes.OK {
		t.Fatalf("login: %v", code)
	}
	if _, code := login("bob", "wrong"); code != codes.Unauthenticated { // bob's first failure here: within the limit of 1
		t.Fatalf("wrong password: %v", code)
	}
	if _, code := login("bob", "wrong"); code != codes.ResourceExhausted { // the second: over it
		t.Fatalf("second wrong password: %v, want RESOURCE_EXHAUSTED", code)
	}
	if _, code := login("bob", ""); code != codes.InvalidArgument {
		t.Fatalf("empty password: %v", code)
	}
	if _, err := e.auth.ValidateSession(ctx, &authv1.ValidateSessionRequest{Token: ok.GetToken()}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.ListUsers(ctx, &authv1.ListUsersRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("ListUsers without the admin token: %v", err)
	}

	// A login held up in the database (a lock on this address's failure count) is in
	// progress; another from the address meanwhile is over the bound of 1.
	conn, err := pgx.Connect(ctx, e.db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO login_failures (key, failures, window_start) VALUES ('addr:127.0.0.1', 0, now())
		ON CONFLICT (key) DO UPDATE SET failures = login_failures.failures`); err != nil {
		t.Fatal(err)
	}
	held := make(chan codes.Code)
	go func() { _, code := login("carol", "unknown user"); held <- code }()
	eventually(t, e.reg, 1, "gatehouse_auth_logins_in_progress")
	if _, code := login("bob", "right password"); code != codes.ResourceExhausted {
		t.Fatalf("a login while another from the address is checked: %v, want RESOURCE_EXHAUSTED", code)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if code := <-held; code != codes.Unauthenticated {
		t.Fatalf("login of an unknown user: %v", code)
	}
	want(t, e.reg, 0, "gatehouse_auth_logins_in_progress")

	for outcome, n := range map[string]float64{"ok": 1, "invalid_credentials": 2, "rate_limited": 1, "busy": 1, "bad_request": 1, "error": 0} {
		want(t, e.reg, n, logins, "outcome", outcome)
	}
	for limit, n := range map[string]float64{"user_address": 1, "logins_per_address": 1, "user": 0, "address": 0, "logins_total": 0} {
		want(t, e.reg, n, limited, "limit", limit)
	}
	for c, n := range map[string]float64{"OK": 1, "Unauthenticated": 2, "ResourceExhausted": 2, "InvalidArgument": 1} {
		want(t, e.reg, n, handled, grpcLabels("unary", authService, "Login", c)...)
	}
	want(t, e.reg, 6, handling, grpcLabels("unary", authService, "Login", "")...)
	want(t, e.reg, 1, handled, grpcLabels("unary", authService, "ValidateSession", "OK")...)
	want(t, e.reg, 1, handling, grpcLabels("unary", authService, "ValidateSession", "")...)
	want(t, e.reg, 1, handled, grpcLabels("unary", adminService, "ListUsers", "Unauthenticated")...)
	want(t, e.reg, 1, handled, grpcLabels("unary", adminService, "CreateUser", "OK")...)
	want(t, e.reg, 0, "gatehouse_auth_hashing_in_flight")
	want(t, e.reg, 0, "gatehouse_auth_hashing_waiting")
}

// TestEventFeedMetrics: a stream is a subscriber while open; a session ended is an
// event by reason with its lag; losing the LISTEN connection is a reconnect, and the
// stream it ended is counted by gRPC when it ends.
func TestEventFeedMetrics(t *testing.T) {
	e := newEnv(t, server.Config{AdminToken: adminToken})
	ctx := t.Context()
	if _, err := e.admin.CreateUser(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+adminToken),
		&authv1.CreateUserRequest{Username: "dave", Password: "right password"}); err != nil {
		t.Fatal(err)
	}
	l, err := e.auth.Login(ctx, &authv1.LoginRequest{Username: "dave", Password: "right password"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := e.auth.WatchSessionEvents(ctx, &authv1.WatchSessionEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Header(); err != nil { // headers: subscribed
		t.Fatal(err)
	}
	want(t, e.reg, 1, "gatehouse_auth_event_subscribers")
	if _, err := e.auth.Logout(ctx, &authv1.LogoutRequest{Token: l.GetToken()}); err != nil {
		t.Fatal(err)
	}
	if ev, err := s.Recv(); err != nil || ev.GetSessionId() != l.GetSession().GetId() {
		t.Fatalf("event %v, %v; want the session logged out", ev, err)
	}
	want(t, e.reg, 1, "gatehouse_auth_session_events_total", "reason", "logout")
	want(t, e.reg, 0, "gatehouse_auth_session_events_total", "reason", "revoked")
	want(t, e.reg, 1, "gatehouse_auth_event_feed_lag_seconds")

	// Drop every connection but this one, the LISTEN connection among them, as a
	// database restart does.
	if err := e.st.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid()`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("stream after the feed dropped: %v, want UNAVAILABLE", err)
	}
	want(t, e.reg, 1, handled, grpcLabels("server_stream", authService, "WatchSessionEvents", "Unavailable")...)
	want(t, e.reg, 1, handling, grpcLabels("server_stream", authService, "WatchSessionEvents", "")...)
	want(t, e.reg, 0, "gatehouse_auth_event_subscribers")
	eventually(t, e.reg, 1, "gatehouse_auth_event_feed_reconnects_total")
	eventually(t, e.reg, 1, "gatehouse_auth_event_feed_live")
}

// TestPoolCollector: the pool's numbers are read at each scrape.
func TestPoolCollector(t *testing.T) {
	st, err := store.Open(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c := newPoolCollector(st.PoolStat)
	if n := testutil.CollectAndCount(c); n != 8 {
		t.Errorf("%d series, want 8", n)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	before := value(t, reg, "gatehouse_auth_db_acquires_total")
	if err := st.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	if value(t, reg, "gatehouse_auth_db_connections_max") <= 0 {
		t.Error("connections_max is not positive")
	}
	if after := value(t, reg, "gatehouse_auth_db_acquires_total"); after <= before {
		t.Errorf("acquires %v after a query, %v before", after, before)
	}
	if idle := value(t, reg, "gatehouse_auth_db_connections", "state", "idle"); idle < 1 {
		t.Errorf("idle connections %v after a query, want at least 1", idle)
	}
	want(t, reg, 0, "gatehouse_auth_db_connections", "state", "acquired")
	if value(t, reg, "gatehouse_auth_db_acquire_seconds_total") <= 0 {
		t.Error("no time spent acquiring")
	}
}
