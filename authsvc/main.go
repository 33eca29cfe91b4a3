// Command authsvc is gatehouse's auth service: users, passwords and sessions in
// PostgreSQL, served over gRPC (gatehouse.auth.v1 AuthService and AdminService).
//
// Usage:
//
//	authsvc [flags]               migrate, then serve
//	authsvc migrate [flags]       apply pending migrations and exit
//	authsvc demo-user NAME        create user NAME with the password read from stdin,
//	                              only if no user exists yet (used by `make run`)
//
// Every flag can also be set by the environment variable named in its help.
package main

import (
	"bufio"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof" // served only on -debug-listen
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/gatehouse/gatehouse/authsvc/internal/metrics"
	"github.com/gatehouse/gatehouse/authsvc/internal/password"
	"github.com/gatehouse/gatehouse/authsvc/internal/server"
	"github.com/gatehouse/gatehouse/authsvc/internal/sessionevents"
	"github.com/gatehouse/gatehouse/authsvc/internal/store"
)

type config struct {
	maxSessions     int
	listen          string
	databaseURL     string
	adminToken      string
	adminTokenFile  string
	frontToken      string
	frontTokenFile  string
	frontNames      string
	maxStreams      int
	maxStreamsPer   int
	maxLogins       int
	maxLoginsPer    int
	tlsCert         string
	tlsKey          string
	tlsClientCA     string
	debugListen     string
	metricsListen   string
	insecurePlain   bool
	sessionTTL      time.Duration
	maxFailUser     int
	maxFailTotal    int
	maxFailAddr     int
	failWindow      time.Duration
	cleanupInterval time.Duration
	cacheLease      time.Duration
	argonMemory     uint
	argonTime       uint
	shutdownTimeout time.Duration
}

// minToken is the shortest admin or front-end token authsvc accepts, in bytes: a
// shorter one could be guessed, and the admin API can do anything.
const minToken = 32

func main() {
	level, err := logLevel(os.Getenv("AUTHSVC_LOG_LEVEL"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "authsvc: AUTHSVC_LOG_LEVEL:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if err := run(os.Args[1:], log); err != nil {
		var fe flagError
		switch {
		case errors.Is(err, flag.ErrHelp): // -h: the usage was asked for, and printed
			os.Exit(0)
		case errors.As(err, &fe): // the flag package said what was wrong, with the usage
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "authsvc:", err)
		os.Exit(1)
	}
}

// flagError is a command line the flag package refused (and explained).
type flagError struct{ error }

func (e flagError) Unwrap() error { return e.error }

// logLevel reads a log level: debug, info, warn or error (any case), empty for info.
func logLevel(s string) (slog.Level, error) {
	var l slog.Level
	if s == "" {
		return slog.LevelInfo, nil
	}
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("%q is not a log level: want debug, info, warn or error", s)
	}
	return l, nil
}

// usage is printed by -h and after a command line the flag package refuses.
const usage = `Usage: authsvc [command] [flags]

Commands:
  serve (default)    migrate the database, then serve gRPC (AuthService, AdminService)
  migrate            apply the database migrations and exit
  demo-user NAME     create user NAME with the password read from stdin, if there are
                     no users yet; prints "created" or "exists"

Every flag can also be set by the environment variable named after it; secrets
(AUTHSVC_ADMIN_TOKEN, AUTHSVC_FRONTEND_TOKEN) only by the environment or a file.
AUTHSVC_LOG_LEVEL: debug, info (default), warn or error.

Flags:
`

func run(args []string, log *slog.Logger) error {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var cfg config
	fs := flag.NewFlagSet("authsvc "+cmd, flag.ContinueOnError)
	var errs []error
	fs.StringVar(&cfg.listen, "listen", env("AUTHSVC_LISTEN", "127.0.0.1:50051"), "gRPC listen address (AUTHSVC_LISTEN)")
	// Secrets are read from the environment after parsing, not as flag defaults, so that
	// -h and usage messages never print them.
	fs.StringVar(&cfg.databaseURL, "database-url", "", "PostgreSQL URL (DATABASE_URL), required")
	// The admin token itself has no flag: a process's arguments are visible to every
	// local user (/proc/*/cmdline). It comes from AUTHSVC_ADMIN_TOKEN or a file.
	fs.StringVar(&cfg.adminTokenFile, "admin-token-file", env("AUTHSVC_ADMIN_TOKEN_FILE", ""), "file holding the admin token, instead of AUTHSVC_ADMIN_TOKEN, which has no flag (AUTHSVC_ADMIN_TOKEN_FILE)")
	fs.StringVar(&cfg.frontTokenFile, "frontend-token-file", env("AUTHSVC_FRONTEND_TOKEN_FILE", ""), "file holding the front-end token edges present (their EDGESVC_AUTH_TOKEN), instead of AUTHSVC_FRONTEND_TOKEN, which has no flag (AUTHSVC_FRONTEND_TOKEN_FILE)")
	fs.StringVar(&cfg.frontNames, "frontend-client-names", env("AUTHSVC_FRONTEND_CLIENT_NAMES", ""), "comma-separated DNS names of client certificates (under mTLS) that make their holder a front end; needs -tls-client-ca (AUTHSVC_FRONTEND_CLIENT_NAMES)")
	fs.IntVar(&cfg.maxStreams, "max-event-streams", envIntOrZero("AUTHSVC_MAX_EVENT_STREAMS", 256, &errs), "WatchSessionEvents streams served at once; 0: no limit (AUTHSVC_MAX_EVENT_STREAMS)")
	fs.IntVar(&cfg.maxStreamsPer, "max-event-streams-per-caller", envIntOrZero("AUTHSVC_MAX_EVENT_STREAMS_PER_CALLER", 16, &errs), "WatchSessionEvents streams one caller address may hold; 0: no limit (AUTHSVC_MAX_EVENT_STREAMS_PER_CALLER)")
	fs.IntVar(&cfg.maxLogins, "login-max-concurrent", envIntOrZero("AUTHSVC_LOGIN_MAX_CONCURRENT", 32*runtime.GOMAXPROCS(0), &errs), "logins being checked at once (each hashes a password); more are answered LOGINS_IN_PROGRESS at once; 0: no limit (AUTHSVC_LOGIN_MAX_CONCURRENT; default 32 per CPU)")
	fs.IntVar(&cfg.maxLoginsPer, "login-max-concurrent-per-address", envIntOrZero("AUTHSVC_LOGIN_MAX_CONCURRENT_PER_ADDRESS", 4, &errs), "logins from one client address (IPv6: /64) being checked at once; 0: no limit (AUTHSVC_LOGIN_MAX_CONCURRENT_PER_ADDRESS)")
	fs.DurationVar(&cfg.sessionTTL, "session-ttl", envDuration("AUTHSVC_SESSION_TTL", 14*24*time.Hour, &errs), "session lifetime (AUTHSVC_SESSION_TTL)")
	fs.IntVar(&cfg.maxFailUser, "login-max-failures-per-user", envInt("AUTHSVC_LOGIN_MAX_FAILURES_PER_USER", 10, &errs), "failed logins per username from one client address per window; other addresses are not locked out (AUTHSVC_LOGIN_MAX_FAILURES_PER_USER)")
	fs.IntVar(&cfg.maxFailTotal, "login-max-failures-per-user-total", envIntOrZero("AUTHSVC_LOGIN_MAX_FAILURES_PER_USER_TOTAL", 1000, &errs), "failed logins per username from all addresses per window; 0: no such limit (AUTHSVC_LOGIN_MAX_FAILURES_PER_USER_TOTAL)")
	fs.IntVar(&cfg.maxFailAddr, "login-max-failures-per-address", envInt("AUTHSVC_LOGIN_MAX_FAILURES_PER_ADDRESS", 100, &errs), "failed logins per client address per window (AUTHSVC_LOGIN_MAX_FAILURES_PER_ADDRESS)")
	fs.DurationVar(&cfg.failWindow, "login-failure-window", envDuration("AUTHSVC_LOGIN_FAILURE_WINDOW", 15*time.Minute, &errs), "window for counting failed logins (AUTHSVC_LOGIN_FAILURE_WINDOW)")
	fs.DurationVar(&cfg.cleanupInterval, "cleanup-interval", envDuration("AUTHSVC_CLEANUP_INTERVAL", 10*time.Minute, &errs), "how often expired sessions are deleted (AUTHSVC_CLEANUP_INTERVAL)")
	fs.DurationVar(&cfg.cacheLease, "cache-lease", envDurationOrZero("AUTHSVC_CACHE_LEASE", 50*time.Millisecond, &errs), "how long front ends may trust cached validations after a SyncSessionEvents marker; every call that ends sessions waits this long before it returns; 0: no caching (AUTHSVC_CACHE_LEASE)")
	fs.IntVar(&cfg.maxSessions, "max-sessions-per-user", envIntOrZero("AUTHSVC_MAX_SESSIONS_PER_USER", 100, &errs), "live sessions per user; a login past it ends the user's oldest (end reason session_limit); 0: no limit (AUTHSVC_MAX_SESSIONS_PER_USER)")
	fs.UintVar(&cfg.argonMemory, "argon2-memory-kib", uint(envInt("AUTHSVC_ARGON2_MEMORY_KIB", int(password.DefaultParams.Memory), &errs)), "argon2id memory for new hashes, KiB (AUTHSVC_ARGON2_MEMORY_KIB)")
	fs.UintVar(&cfg.argonTime, "argon2-time", uint(envInt("AUTHSVC_ARGON2_TIME", int(password.DefaultParams.Time), &errs)), "argon2id passes for new hashes (AUTHSVC_ARGON2_TIME)")
	fs.StringVar(&cfg.tlsCert, "tls-cert", env("AUTHSVC_TLS_CERT", ""), "PEM certificate (chain) to serve TLS with; needs -tls-key (AUTHSVC_TLS_CERT)")
	fs.StringVar(&cfg.tlsKey, "tls-key", env("AUTHSVC_TLS_KEY", ""), "PEM private key for -tls-cert (AUTHSVC_TLS_KEY)")
	fs.StringVar(&cfg.tlsClientCA, "tls-client-ca", env("AUTHSVC_TLS_CLIENT_CA", ""), "PEM CA bundle: require client certificates signed by it (mTLS); needs -tls-cert (AUTHSVC_TLS_CLIENT_CA)")
	fs.BoolVar(&cfg.insecurePlain, "insecure-plaintext", env("AUTHSVC_INSECURE_PLAINTEXT", "") != "", "serve plaintext gRPC on an address other than loopback: passwords and tokens then cross the network in the clear (AUTHSVC_INSECURE_PLAINTEXT=1)")
	fs.StringVar(&cfg.debugListen, "debug-listen", env("AUTHSVC_DEBUG_LISTEN", ""), "address for net/http/pprof (AUTHSVC_DEBUG_LISTEN); empty: off. Keep it on loopback")
	fs.StringVar(&cfg.metricsListen, "metrics-listen", env("AUTHSVC_METRICS_LISTEN", ""), "address to serve Prometheus metrics on, at GET /metrics (AUTHSVC_METRICS_LISTEN); empty: off")
	fs.DurationVar(&cfg.shutdownTimeout, "shutdown-timeout", 10*time.Second, "how long a graceful stop may take")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	switch cmd {
	case "serve", "migrate", "demo-user":
	case "help":
		fs.Usage()
		return flag.ErrHelp
	default:
		fs.Usage()
		return fmt.Errorf("unknown command %q: want serve, migrate or demo-user", cmd)
	}
	if err := fs.Parse(args); err != nil {
		return flagError{err}
	}
	if cmd != "demo-user" && fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: authsvc %s takes flags only", fs.Arg(0), cmd)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if cfg.databaseURL == "" {
		cfg.databaseURL = os.Getenv("DATABASE_URL")
	}
	var err error
	if cfg.adminToken, err = readSecret("admin token", "AUTHSVC_ADMIN_TOKEN", "AUTHSVC_ADMIN_TOKEN_FILE (-admin-token-file)", cfg.adminTokenFile); err != nil {
		return err
	}
	if n := len(cfg.adminToken); n > 0 && n < minToken {
		return fmt.Errorf("the admin token must be at least %d bytes, not %d: make one with  head -c 32 /dev/urandom | base64", minToken, n)
	}
	if cfg.frontToken, err = readSecret("front-end token", "AUTHSVC_FRONTEND_TOKEN", "AUTHSVC_FRONTEND_TOKEN_FILE (-frontend-token-file)", cfg.frontTokenFile); err != nil {
		return err
	}
	if n := len(cfg.frontToken); n > 0 && n < minToken {
		return fmt.Errorf("the front-end token must be at least %d bytes, not %d: make one with  head -c 32 /dev/urandom | base64", minToken, n)
	}
	if cfg.frontToken != "" && cfg.frontToken == cfg.adminToken {
		return errors.New("the front-end token must differ from the admin token: every edge holds it")
	}
	if cfg.frontNames != "" && cfg.tlsClientCA == "" {
		return errors.New("AUTHSVC_FRONTEND_CLIENT_NAMES names client certificates: it needs mTLS (AUTHSVC_TLS_CLIENT_CA)")
	}
	if cfg.databaseURL == "" {
		return errors.New("DATABASE_URL (or -database-url) is required")
	}
	if cfg.tlsCert == "" && !isLoopback(cfg.listen) && !cfg.insecurePlain {
		return fmt.Errorf("AUTHSVC_LISTEN=%s is not a loopback address and authsvc has no TLS: anyone on the network could read passwords and session tokens, "+
			"or answer ValidateSession in its place. Set AUTHSVC_TLS_CERT and AUTHSVC_TLS_KEY (and AUTHSVC_TLS_CLIENT_CA for mTLS), "+
			"or AUTHSVC_INSECURE_PLAINTEXT=1 if that network is protected by other means", cfg.listen)
	}
	if cfg.cacheLease < 0 || cfg.cacheLease > 10*time.Second {
		return fmt.Errorf("AUTHSVC_CACHE_LEASE (-cache-lease) must be between 0 and 10s, not %s", cfg.cacheLease)
	}
	if cfg.argonMemory < 8 || cfg.argonTime < 1 {
		return errors.New("argon2 memory must be at least 8 KiB and time at least 1")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	st, err := openStore(ctx, cfg.databaseURL, log)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		return err
	}
	params := password.DefaultParams
	params.Memory, params.Time = uint32(cfg.argonMemory), uint32(cfg.argonTime)
	hasher := password.NewHasher(params)

	switch cmd {
	case "migrate":
		log.Info("migrations applied")
		return nil
	case "demo-user":
		if fs.NArg() != 1 {
			return errors.New("usage: authsvc demo-user NAME < password")
		}
		return demoUser(ctx, st, hasher, fs.Arg(0))
	}
	return serve(ctx, cfg, st, hasher, log)
}

// openStore connects, retrying for up to 30 s while the server cannot be reached, so
// authsvc can start alongside its database; an answer that waiting cannot change (no
// such database, a refused password or user, a malformed URL) fails at once, saying
// what to do.
func openStore(ctx context.Context, url string, log *slog.Logger) (*store.Store, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := store.Open(ctx, url)
		if err == nil || ctx.Err() != nil {
			return st, err
		}
		if hint := permanent(err); hint != "" {
			return nil, fmt.Errorf("%w\n%s", err, hint)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%w (gave up after 30 s: is PostgreSQL running, and DATABASE_URL's host and port right?)", err)
		}
		log.Warn("database not reachable yet; retrying", "err", err)
		time.Sleep(time.Second)
	}
}

// permanent says what to do about a database error that retrying cannot fix, or ""
// for one that it may (the server starting or unreachable).
func permanent(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "3D000": // invalid_catalog_name
			return "the database in DATABASE_URL does not exist: create it (createdb NAME, or CREATE DATABASE NAME) or point DATABASE_URL at one that does"
		case "28P01", "28000": // invalid_password, invalid_authorization_specification
			return "PostgreSQL refused DATABASE_URL's user or password: check them (and pg_hba.conf)"
		case "42501": // insufficient_privilege
			return "DATABASE_URL's user may not connect to or use that database: grant it, or use another user"
		}
		return ""
	}
	if errors.As(err, new(*pgconn.ParseConfigError)) {
		return "DATABASE_URL is not a PostgreSQL URL: want postgres://user[:password]@host[:port]/database[?sslmode=…]"
	}
	return ""
}

func demoUser(ctx context.Context, st *store.Store, hasher *password.Hasher, name string) error {
	n, err := st.CountUsers(ctx)
	if err != nil {
		return err
	}
	if n > 0 {
		fmt.Println("exists")
		return nil
	}
	pw, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil && pw == "" {
		return fmt.Errorf("read password from stdin: %w", err)
	}
	pw = strings.TrimRight(pw, "\r\n")
	if err := server.ValidUsername(name); err != nil {
		return err
	}
	hash, err := hasher.Hash(ctx, pw)
	if err != nil {
		return err
	}
	if _, err := st.CreateUser(ctx, name, hash); err != nil {
		return err
	}
	fmt.Println("created")
	return nil
}

func serve(ctx context.Context, cfg config, st *store.Store, hasher *password.Hasher, log *slog.Logger) error {
	events := sessionevents.New()
	srv := server.New(st, hasher, events, server.Config{
		SessionTTL: cfg.sessionTTL, AdminToken: cfg.adminToken,
		MaxFailuresPerUser: cfg.maxFailUser, MaxFailuresPerUserTotal: cmp.Or(cfg.maxFailTotal, -1), // 0 here: no limit
		MaxFailuresPerAddress: cfg.maxFailAddr, FailureWindow: cfg.failWindow,
		CacheLease: cfg.cacheLease, MaxSessionsPerUser: cmp.Or(cfg.maxSessions, -1), // 0 here: no limit
		FrontendToken: cfg.frontToken, FrontendClientNames: splitList(cfg.frontNames),
		MaxEventStreams: cmp.Or(cfg.maxStreams, -1), MaxEventStreamsPerCaller: cmp.Or(cfg.maxStreamsPer, -1),
		MaxConcurrentLogins: cmp.Or(cfg.maxLogins, -1), MaxConcurrentLoginsPerAddress: cmp.Or(cfg.maxLoginsPer, -1),
	}, log)
	creds, err := serverCredentials(cfg)
	if err != nil {
		return err
	}
	opts := append(srv.ServerOptions(), creds,
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		// Calls in flight per connection: an edge multiplexes its handshakes' calls on
		// one connection, and queues past this; nobody can open streams without bound.
		grpc.MaxConcurrentStreams(1024),
	)
	var reg *prometheus.Registry
	var grpcMetrics *metrics.GRPC
	if cfg.metricsListen != "" {
		reg = prometheus.NewRegistry()
		grpcMetrics = metrics.New(reg, metrics.Parts{Server: srv, Hasher: hasher, Events: events, Store: st})
		// Outermost, so that calls the other interceptors refuse are counted too.
		opts = append(grpcMetrics.ServerOptions(), opts...)
	}
	g := grpc.NewServer(opts...)
	srv.Register(g)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(g, hs)
	reflection.Register(g)
	if grpcMetrics != nil {
		grpcMetrics.Initialize(g)
	}

	lis, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return err
	}
	var metricsLis net.Listener
	if cfg.metricsListen != "" {
		// Listened on here, not in serveMetrics, so that an address that cannot be
		// used stops authsvc rather than leaving it running unobserved.
		if metricsLis, err = net.Listen("tcp", cfg.metricsListen); err != nil {
			lis.Close()
			return fmt.Errorf("AUTHSVC_METRICS_LISTEN (-metrics-listen) %q: %w", cfg.metricsListen, err)
		}
	}
	if cfg.debugListen != "" {
		go serveDebug(cfg.debugListen, log)
	}
	go events.Run(ctx, st, log)
	go watchHealth(ctx, st, events, hs)
	go cleanup(ctx, st, cfg, log)
	if cfg.frontToken == "" && cfg.frontNames == "" {
		log.Info("no front-end credential configured: loopback peers are front ends (set AUTHSVC_FRONTEND_TOKEN for edges on other hosts)")
	}
	if cfg.adminToken == "" {
		log.Warn("no admin token configured: AdminService answers UNAUTHENTICATED (set AUTHSVC_ADMIN_TOKEN)")
	}
	if cfg.tlsCert == "" && !isLoopback(cfg.listen) {
		log.Warn("serving plaintext gRPC off loopback (AUTHSVC_INSECURE_PLAINTEXT): passwords and session tokens cross the network in the clear", "addr", cfg.listen)
	}
	log.Info("authsvc listening", "addr", lis.Addr().String(), "tls", cfg.tlsCert != "", "mtls", cfg.tlsClientCA != "")
	if metricsLis != nil {
		// After the line above: whoever starts authsvc takes the first "listening ...
		// addr=" line for the gRPC address.
		log.Info("metrics listening", "addr", metricsLis.Addr().String())
		msrv := serveMetrics(metricsLis, reg, log)
		defer msrv.Close()
	}

	errc := make(chan error, 1)
	go func() { errc <- g.Serve(lis) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	hs.Shutdown()
	done := make(chan struct{})
	go func() { g.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(cfg.shutdownTimeout):
		g.Stop()
	}
	return nil
}

// watchHealth reports SERVING only while the database answers and the session event
// feed is listening (a replica that cannot stream session ends would let revoked
// sessions' sockets stay open). It re-checks every 2 s and whenever the feed changes.
func watchHealth(ctx context.Context, st *store.Store, events *sessionevents.Fanout, hs *health.Server) {
	services := []string{"", authv1.AuthService_ServiceDesc.ServiceName, authv1.AdminService_ServiceDesc.ServiceName}
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := st.Ping(pctx)
		cancel()
		state := healthpb.HealthCheckResponse_SERVING
		if err != nil || !events.Live() {
			state = healthpb.HealthCheckResponse_NOT_SERVING
		}
		for _, s := range services {
			hs.SetServingStatus(s, state)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-events.Changed():
		}
	}
}

func cleanup(ctx context.Context, st *store.Store, cfg config, log *slog.Logger) {
	tick := time.NewTicker(cfg.cleanupInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		n, err := st.DeleteExpired(ctx, 0, cfg.failWindow)
		if err != nil {
			log.WarnContext(ctx, "delete expired sessions", "err", err)
		} else if n > 0 {
			log.InfoContext(ctx, "deleted expired sessions", "count", n)
		}
	}
}

// serveDebug serves net/http/pprof's handlers (registered on the default mux).
func serveDebug(addr string, log *slog.Logger) {
	log.Info("debug (pprof) listening", "addr", addr)
	srv := &http.Server{Addr: addr, Handler: http.DefaultServeMux, ReadHeaderTimeout: 10 * time.Second}
	if err := srv.ListenAndServe(); err != nil {
		log.Error("debug listener", "err", err)
	}
}

// serveMetrics serves reg's metrics at GET /metrics on lis until the returned server
// is closed.
func serveMetrics(lis net.Listener, reg *prometheus.Registry, log *slog.Logger) *http.Server {
	srv := &http.Server{Handler: metrics.Handler(reg), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener", "err", err)
		}
	}()
	return srv
}

// serverCredentials returns TLS (or mTLS with a client CA) credentials when a
// certificate is configured, and plaintext otherwise.
func serverCredentials(cfg config) (grpc.ServerOption, error) {
	if cfg.tlsCert == "" && cfg.tlsKey == "" {
		if cfg.tlsClientCA != "" {
			return nil, errors.New("AUTHSVC_TLS_CLIENT_CA needs AUTHSVC_TLS_CERT and AUTHSVC_TLS_KEY")
		}
		return grpc.Creds(insecure.NewCredentials()), nil
	}
	cert, err := tls.LoadX509KeyPair(cfg.tlsCert, cfg.tlsKey)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if cfg.tlsClientCA != "" {
		pem, err := os.ReadFile(cfg.tlsClientCA)
		if err != nil {
			return nil, fmt.Errorf("TLS client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("TLS client CA %s: no PEM certificates", cfg.tlsClientCA)
		}
		tc.ClientCAs, tc.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return grpc.Creds(credentials.NewTLS(tc)), nil
}

// readSecret returns the secret (what, for messages) in the environment variable envVar or in file (named
// by the setting fileSetting), not both, with surrounding white space removed; ""
// when neither is set. Secrets have no flags: a process's arguments are visible to
// every local user (/proc/*/cmdline).
func readSecret(what, envVar, fileSetting, file string) (string, error) {
	v := strings.TrimSpace(os.Getenv(envVar))
	if file == "" {
		return v, nil
	}
	if v != "" {
		return "", fmt.Errorf("%s: set %s or %s, not both", what, envVar, fileSetting)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%s file (%s): %w", what, fileSetting, err)
	}
	if v = strings.TrimSpace(string(b)); v == "" {
		return "", fmt.Errorf("%s file %s (%s) is empty", what, file, fileSetting)
	}
	return v, nil
}

// splitList splits a comma-separated setting, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration, errs *[]error) time.Duration {
	d := envDurationOrZero(name, def, errs)
	if d == 0 {
		*errs = append(*errs, fmt.Errorf("%s=%q: want a positive duration such as 336h or 90s", name, os.Getenv(name)))
		return def
	}
	return d
}

// envDurationOrZero is envDuration for settings where 0 means off.
func envDurationOrZero(name string, def time.Duration, errs *[]error) time.Duration {
	v := env(name, "")
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		*errs = append(*errs, fmt.Errorf("%s=%q: want a duration such as 336h or 90s", name, v))
		return def
	}
	return d
}

// envIntOrZero is envInt for settings where 0 means no limit.
func envIntOrZero(name string, def int, errs *[]error) int {
	v := env(name, "")
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		*errs = append(*errs, fmt.Errorf("%s=%q: want a whole number, 0 or more", name, v))
		return def
	}
	return n
}

func envInt(name string, def int, errs *[]error) int {
	v := env(name, "")
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		*errs = append(*errs, fmt.Errorf("%s=%q: want a positive integer", name, v))
		return def
	}
	return n
}

// isLoopback reports whether addr (host:port) names a loopback address, so that only
// this machine can reach it. An empty host (all interfaces) is not.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
