// Command edgesvc is gatehouse's WebSocket edge: it serves the page and the login
// form, authorises each WebSocket handshake with authsvc's ValidateSession before
// upgrading it, runs the echo consumer, and closes sockets whose session ends.
//
// Every flag can also be set by the environment variable named in its help.
package main

import (
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
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/gatehouse/gatehouse/edgesvc/edge"
	"github.com/gatehouse/gatehouse/edgesvc/internal/auth"
	"github.com/gatehouse/gatehouse/edgesvc/internal/chat"
	"github.com/gatehouse/gatehouse/edgesvc/internal/public"
)

func main() {
	level, err := logLevel(os.Getenv("EDGESVC_LOG_LEVEL"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "edgesvc: EDGESVC_LOG_LEVEL:", err)
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
		fmt.Fprintln(os.Stderr, "edgesvc:", err)
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

func run(args []string, log *slog.Logger) error {
	var (
		listen, authAddr, origins string
		publicURL, proxies        string
		tlsCert, tlsKey           string
		authCA, authCert, authKey string
		authServerName            string
		authTokenFile             string
		cfg                       edge.Config
		shutdownTimeout           time.Duration
		api                       apiConfig
		errs                      []error
	)
	fs := flag.NewFlagSet("edgesvc", flag.ContinueOnError)
	fs.StringVar(&listen, "listen", env("EDGESVC_LISTEN", "127.0.0.1:8000"), "HTTP listen address (EDGESVC_LISTEN)")
	fs.StringVar(&authAddr, "auth-addr", env("EDGESVC_AUTH_ADDR", "127.0.0.1:50051"), "authsvc gRPC address (EDGESVC_AUTH_ADDR)")
	fs.StringVar(&publicURL, "public-url", env("EDGESVC_PUBLIC_URL", ""), "the URL people use, e.g. https://chat.example.com, when a proxy is in front: https makes the cookie __Host-sessionid (Secure) and the Origin check compares scheme and host with it (EDGESVC_PUBLIC_URL)")
	fs.StringVar(&proxies, "trusted-proxies", env("EDGESVC_TRUSTED_PROXIES", ""), "comma-separated CIDRs or addresses of proxies whose Forwarded / X-Forwarded-For name the client (EDGESVC_TRUSTED_PROXIES)")
	fs.StringVar(&origins, "allowed-origins", env("EDGESVC_ALLOWED_ORIGINS", ""), "comma-separated origins allowed, besides the edge's own host, to open sockets and post forms (EDGESVC_ALLOWED_ORIGINS)")
	fs.Int64Var(&cfg.ReadLimit, "read-limit", int64(envInt("EDGESVC_READ_LIMIT", 1<<20, &errs)), "largest client message in bytes; larger closes with 1009 (EDGESVC_READ_LIMIT)")
	fs.IntVar(&cfg.SendQueue, "send-queue", envInt("EDGESVC_SEND_QUEUE", 64, &errs), "outgoing messages queued per socket before closing with 1013 (EDGESVC_SEND_QUEUE)")
	fs.Int64Var(&cfg.SendBuffer, "send-buffer", int64(envInt("EDGESVC_SEND_BUFFER", 4<<20, &errs)), "bytes of outgoing messages queued per socket: a push that does not fit closes with 1013, a reply waits up to half the write timeout; at least twice the read limit (EDGESVC_SEND_BUFFER)")
	fs.Int64Var(&cfg.SendBufferPerUser, "send-buffer-per-user", int64(envIntOrZero("EDGESVC_SEND_BUFFER_PER_USER", 64<<20, &errs)), "bytes queued to send to all of one user's sockets on this edge: a push or reply past it closes its socket with 1013; 0: no bound (EDGESVC_SEND_BUFFER_PER_USER)")
	fs.Int64Var(&cfg.SendBufferTotal, "send-buffer-total", int64(envIntOrZero("EDGESVC_SEND_BUFFER_TOTAL", 2<<30, &errs)), "bytes queued to send to all of this edge's sockets: past it a push or reply closes its socket with 1013; 0: no bound (EDGESVC_SEND_BUFFER_TOTAL)")
	fs.Int64Var(&cfg.ReadBufferPerUser, "read-buffer-per-user", int64(envIntOrZero("EDGESVC_READ_BUFFER_PER_USER", 16<<20, &errs)), "bytes of client messages still arriving on all of one user's sockets on this edge: a socket past it is closed with 1013; 0: no bound (EDGESVC_READ_BUFFER_PER_USER)")
	fs.Int64Var(&cfg.ReadBuffer, "read-buffer", int64(envIntOrZero("EDGESVC_READ_BUFFER", 1<<30, &errs)), "bytes of client messages still arriving on all of this edge's sockets: a socket past it is closed with 1013; 0: no bound (EDGESVC_READ_BUFFER)")
	fs.DurationVar(&cfg.ReadTimeout, "read-timeout", envDurationOrZero("EDGESVC_READ_TIMEOUT", 30*time.Second, &errs), "how long a client message may take to arrive once begun; past it the socket is closed with 1008; 0: no bound (EDGESVC_READ_TIMEOUT)")
	fs.IntVar(&cfg.MaxMessagesPerSecond, "max-messages-per-second", envIntOrZero("EDGESVC_MAX_MESSAGES_PER_SECOND", 100, &errs), "messages read per second from one socket, after a burst of -message-burst; past it reading pauses (nothing is dropped); 0: no bound (EDGESVC_MAX_MESSAGES_PER_SECOND)")
	fs.IntVar(&cfg.MessageBurst, "message-burst", envIntOrZero("EDGESVC_MESSAGE_BURST", 100, &errs), "messages one socket may send at once before -max-messages-per-second applies (EDGESVC_MESSAGE_BURST)")
	fs.IntVar(&cfg.MaxMessagesPerSecondPerUser, "max-messages-per-second-per-user", envIntOrZero("EDGESVC_MAX_MESSAGES_PER_SECOND_PER_USER", 500, &errs), "messages read per second from all of one user's sockets on this edge; past it their reading pauses; 0: no bound (EDGESVC_MAX_MESSAGES_PER_SECOND_PER_USER)")
	fs.DurationVar(&cfg.AuthTimeout, "auth-timeout", envDuration("EDGESVC_AUTH_TIMEOUT", 2*time.Second, &errs), "deadline for each authsvc call in a handshake; past it the answer is 503 (EDGESVC_AUTH_TIMEOUT)")
	fs.DurationVar(&cfg.PingPeriod, "ping-period", envDuration("EDGESVC_PING_PERIOD", 30*time.Second, &errs), "how often each socket is pinged (EDGESVC_PING_PERIOD)")
	fs.DurationVar(&cfg.WriteWait, "write-timeout", envDuration("EDGESVC_WRITE_TIMEOUT", 10*time.Second, &errs), "bound on each write to a client, and on how long a reply waits for room in a full send queue before closing with 1013 (EDGESVC_WRITE_TIMEOUT)")
	fs.DurationVar(&cfg.ParkAfter, "park-after", envDuration("EDGESVC_PARK_AFTER", 2*time.Second, &errs), "how long a socket may be quiet before its reading goroutine is given up and epoll watches it instead (EDGESVC_PARK_AFTER)")
	fs.IntVar(&cfg.CacheSize, "session-cache-size", envIntOrZero("EDGESVC_SESSION_CACHE_SIZE", 100_000, &errs), "sessions whose validation the edge remembers, so a reconnect needs no call to authsvc; 0: off (EDGESVC_SESSION_CACHE_SIZE)")
	fs.DurationVar(&shutdownTimeout, "shutdown-timeout", envDuration("EDGESVC_SHUTDOWN_TIMEOUT", 10*time.Second, &errs), "how long a graceful stop waits for sockets to close (EDGESVC_SHUTDOWN_TIMEOUT)")
	fs.StringVar(&tlsCert, "tls-cert", env("EDGESVC_TLS_CERT", ""), "PEM certificate to serve HTTPS and WSS with; needs -tls-key (EDGESVC_TLS_CERT)")
	fs.StringVar(&tlsKey, "tls-key", env("EDGESVC_TLS_KEY", ""), "PEM private key for -tls-cert (EDGESVC_TLS_KEY)")
	fs.StringVar(&authCA, "auth-ca", env("EDGESVC_AUTH_CA", ""), "PEM CA bundle to verify authsvc's certificate; setting it dials authsvc with TLS (EDGESVC_AUTH_CA)")
	fs.StringVar(&authCert, "auth-cert", env("EDGESVC_AUTH_CERT", ""), "PEM client certificate for mTLS to authsvc; needs -auth-key and -auth-ca (EDGESVC_AUTH_CERT)")
	fs.StringVar(&authKey, "auth-key", env("EDGESVC_AUTH_KEY", ""), "PEM private key for -auth-cert (EDGESVC_AUTH_KEY)")
	fs.StringVar(&authServerName, "auth-server-name", env("EDGESVC_AUTH_SERVER_NAME", ""), "name to verify in authsvc's certificate; default: the host of -auth-addr (EDGESVC_AUTH_SERVER_NAME)")
	fs.StringVar(&authTokenFile, "auth-token-file", env("EDGESVC_AUTH_TOKEN_FILE", ""), "file holding the front-end token presented to authsvc (authsvc's AUTHSVC_FRONTEND_TOKEN), instead of EDGESVC_AUTH_TOKEN, which has no flag (EDGESVC_AUTH_TOKEN_FILE)")
	fs.StringVar(&cfg.NodeID, "node-id", env("EDGESVC_NODE_ID", ""), "this edge's name in connection ids (<node id>.<counter>), unique among edges: letters, digits, '-', '_', at most 64; default: the host name and a random suffix (EDGESVC_NODE_ID)")
	fs.StringVar(&api.listen, "api-listen", env("EDGESVC_API_LISTEN", "127.0.0.1:50052"), "gRPC listen address of the edge API, gatehouse.edge.v1.EdgeService (EDGESVC_API_LISTEN)")
	fs.StringVar(&api.tokenFile, "api-token-file", env("EDGESVC_API_TOKEN_FILE", ""), "file holding the edge API's bearer token (EDGESVC_API_TOKEN_FILE; or set EDGESVC_API_TOKEN)")
	fs.StringVar(&api.tlsCert, "api-tls-cert", env("EDGESVC_API_TLS_CERT", ""), "PEM certificate to serve the edge API with TLS; needs -api-tls-key (EDGESVC_API_TLS_CERT)")
	fs.StringVar(&api.tlsKey, "api-tls-key", env("EDGESVC_API_TLS_KEY", ""), "PEM private key for -api-tls-cert (EDGESVC_API_TLS_KEY)")
	fs.StringVar(&api.tlsClientCA, "api-tls-client-ca", env("EDGESVC_API_TLS_CLIENT_CA", ""), "PEM CA bundle: callers of the edge API may present a client certificate signed by it instead of the token (mTLS); needs -api-tls-cert (EDGESVC_API_TLS_CLIENT_CA)")
	fs.IntVar(&cfg.MaxSocketsPerUser, "max-sockets-per-user", envIntOrZero("EDGESVC_MAX_SOCKETS_PER_USER", 1000, &errs), "sockets one user may hold on this edge; more are refused with 429 TOO_MANY_SOCKETS; 0: no limit (EDGESVC_MAX_SOCKETS_PER_USER)")
	fs.IntVar(&cfg.MaxSocketsPerAddress, "max-sockets-per-address", envIntOrZero("EDGESVC_MAX_SOCKETS_PER_ADDRESS", 0, &errs), "sockets one client address may hold (behind a proxy, its address); 0: no limit (EDGESVC_MAX_SOCKETS_PER_ADDRESS)")
	fs.IntVar(&cfg.MaxSockets, "max-sockets", envIntOrZero("EDGESVC_MAX_SOCKETS", 0, &errs), "sockets this edge holds at most; 0: no limit (EDGESVC_MAX_SOCKETS)")
	var nc natsConfig
	nc.flags(fs)
	var routesPath string
	fs.StringVar(&routesPath, "routes-file", env("EDGESVC_ROUTES_FILE", ""), "JSON file of routes whose connections a consumer service in any language runs (gatehouse.app.v1.ConsumerService): {\"routes\": [{\"path\": \"/ws/commands/{room}/\", \"consumer\": \"host:port\"}]} (EDGESVC_ROUTES_FILE)")
	var debugListen, metricsListen string
	fs.StringVar(&metricsListen, "metrics-listen", env("EDGESVC_METRICS_LISTEN", ""), "address to serve Prometheus metrics on, at GET /metrics (EDGESVC_METRICS_LISTEN); empty: off. The public port never serves them: keep this one internal")
	fs.StringVar(&debugListen, "debug-listen", env("EDGESVC_DEBUG_LISTEN", ""), "address for net/http/pprof (EDGESVC_DEBUG_LISTEN); empty: off. Keep it on loopback")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: edgesvc [flags]

The WebSocket edge: pages, sockets checked with authsvc before the upgrade, and the
edge API. Every flag can also be set by the environment variable named after it;
secrets (EDGESVC_AUTH_TOKEN, EDGESVC_API_TOKEN, EDGESVC_LAYER_KEY) only by the
environment or a file (EDGESVC_LAYER_KEY_FILE; EDGESVC_LAYER_KEY_FALLBACKS_FILE holds
earlier layer keys, one a line, accepted during a rotation).
EDGESVC_LOG_LEVEL: debug, info (default), warn or error.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return flagError{err}
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("unexpected argument %q: edgesvc takes flags only", fs.Arg(0))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if cfg.SendBuffer < 2*cfg.ReadLimit {
		return fmt.Errorf("EDGESVC_SEND_BUFFER (-send-buffer) is %d bytes: it must be at least twice EDGESVC_READ_LIMIT (%d), so an echo of a largest message always fits", cfg.SendBuffer, cfg.ReadLimit)
	}
	if err := api.loadToken(); err != nil {
		return err
	}
	if cfg.NodeID != "" && !edge.ValidNodeID(cfg.NodeID) {
		return fmt.Errorf("EDGESVC_NODE_ID (-node-id) %q: want 1 to 64 letters, digits, '-' or '_'", cfg.NodeID)
	}
	if cfg.CacheSize < 0 {
		return fmt.Errorf("EDGESVC_SESSION_CACHE_SIZE (-session-cache-size) must not be negative, not %d", cfg.CacheSize)
	}
	cfg.DisableCache = cfg.CacheSize == 0
	if cfg.MaxSocketsPerUser < 0 || cfg.MaxSocketsPerAddress < 0 || cfg.MaxSockets < 0 {
		return errors.New("EDGESVC_MAX_SOCKETS_PER_USER, _PER_ADDRESS and EDGESVC_MAX_SOCKETS must not be negative (0: no limit)")
	}
	if cfg.MaxSocketsPerUser == 0 {
		cfg.MaxSocketsPerUser = -1 // no limit (in Config, 0 is the default)
	}
	if cfg.MessageBurst == 0 && cfg.MaxMessagesPerSecond > 0 {
		return errors.New("EDGESVC_MESSAGE_BURST (-message-burst) must be at least 1 while EDGESVC_MAX_MESSAGES_PER_SECOND bounds the rate")
	}
	if cfg.SendBufferPerUser < 0 || cfg.SendBufferTotal < 0 || cfg.ReadBufferPerUser < 0 || cfg.ReadBuffer < 0 || cfg.MaxMessagesPerSecond < 0 || cfg.MessageBurst < 0 || cfg.MaxMessagesPerSecondPerUser < 0 || cfg.ReadTimeout < 0 {
		return errors.New("the read and send budgets, EDGESVC_READ_TIMEOUT and the message rates must not be negative (0: no bound)")
	}
	for _, v := range []*int64{&cfg.SendBufferPerUser, &cfg.SendBufferTotal, &cfg.ReadBufferPerUser, &cfg.ReadBuffer} {
		if *v == 0 {
			*v = -1 // no bound (in Config, 0 is the default)
		}
	}
	for _, v := range []*int{&cfg.MaxMessagesPerSecond, &cfg.MaxMessagesPerSecondPerUser} {
		if *v == 0 {
			*v = -1
		}
	}
	if cfg.ReadTimeout == 0 {
		cfg.ReadTimeout = -1
	}

	if publicURL != "" {
		u, err := url.Parse(publicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.User != nil {
			return fmt.Errorf("EDGESVC_PUBLIC_URL (-public-url) %q: want a scheme and host only, such as https://chat.example.com", publicURL)
		}
		cfg.PublicURL = &url.URL{Scheme: u.Scheme, Host: strings.ToLower(u.Host)}
	}
	tp, err := public.ParseProxies(proxies)
	if err != nil {
		return fmt.Errorf("EDGESVC_TRUSTED_PROXIES (-trusted-proxies) %q: want comma-separated CIDRs or IP addresses: %w", proxies, err)
	}
	cfg.TrustedProxies = tp
	for _, o := range strings.Split(origins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			cfg.AllowedOrigins = append(cfg.AllowedOrigins, o)
		}
	}

	natsWarnings, err := nc.apply(fs, &cfg)
	if err != nil {
		return err
	}
	for _, w := range natsWarnings {
		log.Warn(w)
	}
	routes, err := loadRoutes(routesPath)
	if err != nil {
		return err
	}

	creds, err := authCredentials(authCA, authCert, authKey, authServerName)
	if err != nil {
		return err
	}
	authToken, err := readSecret("authsvc front-end token", "EDGESVC_AUTH_TOKEN", "EDGESVC_AUTH_TOKEN_FILE (-auth-token-file)", authTokenFile)
	if err != nil {
		return err
	}
	dialOpts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithChainUnaryInterceptor(auth.FrontEndRefusals),
		// authsvc allows pings every 5 s: a connection to it that went half-open is
		// noticed within 13 s (the session event feed re-checks every held session then).
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 3 * time.Second, PermitWithoutStream: true}),
		// An authsvc that comes back (restarted, redeployed) is redialled within a
		// second, and the session event feed resubscribes on it at once, so a session
		// ended meanwhile closes its sockets within about a second of authsvc's return.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: 5 * time.Second,
		}),
	}
	if authToken != "" {
		dialOpts = append(dialOpts, grpc.WithPerRPCCredentials(bearer(authToken)))
	}
	if authCA == "" && !isLoopback(authAddr) {
		log.Warn("dialing authsvc in plaintext off loopback: a network peer could read session tokens and answer ValidateSession in its place; set EDGESVC_AUTH_CA (and authsvc's TLS)", "authsvc", authAddr)
	}
	cc, err := grpc.NewClient(authAddr, dialOpts...)
	if err != nil {
		return fmt.Errorf("authsvc client: %w", err)
	}
	defer cc.Close()

	if debugListen != "" {
		go func() {
			log.Info("debug (pprof) listening", "addr", debugListen)
			dsrv := &http.Server{Addr: debugListen, Handler: http.DefaultServeMux, ReadHeaderTimeout: 10 * time.Second}
			if err := dsrv.ListenAndServe(); err != nil {
				log.Error("debug listener", "err", err)
			}
		}()
	}
	srv := edge.New(cc, cfg, log)
	srv.Handle("/ws/myapp/{user_id}/", func() edge.Consumer { return edge.Echo{} })
	srv.Handle("/ws/chat/{room}/", chat.New(srv))
	closers, err := handleRoutes(srv, routes, log)
	for _, c := range closers {
		defer c()
	}
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	go srv.WatchSessions(watchCtx)

	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	metricsAddr := "off"
	if metricsListen != "" {
		// Listened on here, so that an address that cannot be used stops the edge
		// rather than leaving it running unobserved.
		mlis, err := net.Listen("tcp", metricsListen)
		if err != nil {
			lis.Close()
			return fmt.Errorf("EDGESVC_METRICS_LISTEN (-metrics-listen) %q: %w", metricsListen, err)
		}
		metricsAddr = mlis.Addr().String()
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", srv.MetricsHandler())
		msrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := msrv.Serve(mlis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics listener", "err", err)
			}
		}()
		defer msrv.Close()
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	errc := make(chan error, 2) // the HTTP and the API servers
	if (tlsCert == "") != (tlsKey == "") {
		return errors.New("EDGESVC_TLS_CERT and EDGESVC_TLS_KEY go together")
	}
	if tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(tlsCert, tlsKey)
		if err != nil {
			return fmt.Errorf("TLS certificate: %w", err)
		}
		// HTTP/1.1 only: WebSockets upgrade over it.
		hs.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
		lis = tls.NewListener(lis, hs.TLSConfig)
	}
	g, apiHealth, apiLis, err := api.serve(srv, cfg.ReadLimit, log)
	if err != nil {
		return err
	}
	go func() { errc <- hs.Serve(lis) }()
	go func() { errc <- g.Serve(apiLis) }()
	log.Info("edgesvc listening", "addr", lis.Addr().String(), "tls", tlsCert != "", "api", apiLis.Addr().String(),
		"api_tls", api.tlsCert != "", "api_mtls", api.tlsClientCA != "", "authsvc", authAddr, "auth_tls", authCA != "", "auth_token", authToken != "", "node", srv.NodeID(),
		"metrics", metricsAddr)
	if api.token == "" && api.tlsClientCA == "" {
		log.Warn("no edge API token configured: EdgeService answers UNAUTHENTICATED API_DISABLED (set EDGESVC_API_TOKEN or EDGESVC_API_TOKEN_FILE)")
	}

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: closing sockets with 1001")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	httpDone := make(chan error, 1)
	go func() { httpDone <- hs.Shutdown(sctx) }() // stop accepting; finish plain requests
	apiHealth.Shutdown()                          // NOT_SERVING: callers move to another edge
	apiDone := make(chan struct{})
	go func() { g.GracefulStop(); close(apiDone) }() // finish calls in flight
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("sockets still open at shutdown timeout", "err", err)
	}
	<-httpDone
	select {
	case <-apiDone:
	case <-sctx.Done():
		g.Stop()
	}
	return nil
}

// bearer presents the front-end token to authsvc on every call, which lets the edge
// name its clients' addresses on Login and follow the session event feed.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

// RequireTransportSecurity is false: plaintext to authsvc on loopback is normal, and
// off loopback the edge warns and authsvc refuses unless told it is insecure.
func (bearer) RequireTransportSecurity() bool { return false }

// authCredentials returns the transport credentials for dialing authsvc: TLS verified
// against caFile when it is set (with a client certificate for mTLS when certFile is),
// plaintext otherwise.
func authCredentials(caFile, certFile, keyFile, serverName string) (credentials.TransportCredentials, error) {
	if caFile == "" {
		if certFile != "" || keyFile != "" {
			return nil, errors.New("EDGESVC_AUTH_CERT/EDGESVC_AUTH_KEY need EDGESVC_AUTH_CA (mTLS runs over TLS)")
		}
		return insecure.NewCredentials(), nil
	}
	tc, err := clientTLS("authsvc", "EDGESVC_AUTH", caFile, certFile, keyFile)
	if err != nil {
		return nil, err
	}
	tc.ServerName = serverName
	return credentials.NewTLS(tc), nil
}

// clientTLS is the TLS configuration of a client of what: servers verified with the
// CA bundle in caFile, and the certificate in certFile and keyFile presented, if set
// (settings, such as "EDGESVC_AUTH", names their settings in errors).
func clientTLS(what, settings, caFile, certFile, keyFile string) (*tls.Config, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("%s CA: %w", what, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s CA %s: no PEM certificates", what, caFile)
	}
	tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if (certFile == "") != (keyFile == "") {
		return nil, fmt.Errorf("%s_CERT and %s_KEY go together", settings, settings)
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("%s client certificate: %w", what, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration, errs *[]error) time.Duration {
	v := env(name, "")
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		*errs = append(*errs, fmt.Errorf("%s=%q: want a positive duration such as 2s", name, v))
		return def
	}
	return d
}

// envDurationOrZero is envDuration for settings where 0 means off.
func envDurationOrZero(name string, def time.Duration, errs *[]error) time.Duration {
	if v := env(name, ""); v == "0" {
		return 0
	}
	return envDuration(name, def, errs)
}

func envInt(name string, def int, errs *[]error) int {
	n := envIntOrZero(name, def, errs)
	if n == 0 {
		*errs = append(*errs, fmt.Errorf("%s=%q: want a positive integer", name, os.Getenv(name)))
		return def
	}
	return n
}

// envIntOrZero is envInt for settings where 0 means off.
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

// isLoopback reports whether addr (host:port) names a loopback address, which only
// this machine can reach.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	return err == nil && isLoopbackHost(host)
}

// isLoopbackHost reports whether host names this machine only.
func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
