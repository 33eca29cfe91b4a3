// Package remote runs the consumers of routes whose application logic is a service
// in any language implementing gatehouse.app.v1.ConsumerService over gRPC: the edge
// authenticates the user, then asks the service what the connection does (Connect,
// before the upgrade), hands it each message (Receive) and tells it when the socket
// has closed (Disconnect), carrying out the actions it answers with.
package remote

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	appv1 "github.com/gatehouse/gatehouse/gen/gatehouse/app/v1"
	edgev1 "github.com/gatehouse/gatehouse/gen/gatehouse/edge/v1"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/gatehouse/gatehouse/edgesvc/edge"
)

// Route is a path pattern whose connections a consumer service runs.
type Route struct {
	Pattern     string        // a Server.Handle pattern, such as /ws/commands/{room}/
	Address     string        // the consumer service's gRPC address, host:port
	Token       string        // sent as "authorization: Bearer <token>"; empty: none
	TLS         *tls.Config   // nil: plaintext
	Timeout     time.Duration // each call's deadline; default 2 s
	MaxInFlight int           // calls in flight at once; default 256
	// Keepalive, when set (at least 10 s, gRPC's floor), pings the service after
	// that long without hearing from it and drops the connection if the ping is not
	// answered within the call deadline: a service whose host vanished without a
	// word is noticed then, not after the kernel's retransmissions give up (~15
	// min). The service must allow pings that often (grpc-go:
	// keepalive.EnforcementPolicy.MinTime; grpc-js:
	// grpc.http2.min_ping_interval_without_data_ms), else it hangs up on them.
	Keepalive time.Duration
}

// Metrics are the series the consumers of routes keep, by route and method.
type Metrics struct {
	Calls    *prometheus.CounterVec   // route, method, outcome
	Latency  *prometheus.HistogramVec // route, method
	InFlight *prometheus.GaugeVec     // route
	Up       *prometheus.GaugeVec     // route: 1 while the service is reachable
}

// Client is one route's consumer service.
type Client struct {
	route  Route
	cc     *grpc.ClientConn
	api    appv1.ConsumerServiceClient
	srv    *edge.Server
	sem    chan struct{}
	params []string // the pattern's wildcards
	series map[string]*series
	flight prometheus.Gauge
	log    *slog.Logger
	stop   context.CancelFunc // ends watch
	st     *streamer
}

// series are one method's, looked up once (a lookup by labels costs more than the
// count).
type series struct {
	latency  prometheus.Observer
	outcomes map[string]prometheus.Counter
}

var wildcard = regexp.MustCompile(`\{([A-Za-z_][A-Za-z0-9_]*)(\.\.\.)?\}`)

// New returns the client of r's consumer service, for connections of srv. It dials
// lazily: a service not running yet is not an error.
func New(srv *edge.Server, r Route, m Metrics, log *slog.Logger) (*Client, error) {
	if r.Timeout <= 0 {
		r.Timeout = 2 * time.Second
	}
	if r.MaxInFlight <= 0 {
		r.MaxInFlight = 256
	}
	creds := insecure.NewCredentials()
	if r.TLS != nil {
		creds = credentials.NewTLS(r.TLS)
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithSharedWriteBuffer(true),
		grpc.WithIdleTimeout(0), // stay connected: reachability is watched (consumer_up)
		// Answers may carry several messages up to the edge's read limit each.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64 << 20)),
		// A service that comes back is found within a second or two: handshakes
		// meanwhile fail closed (503) rather than wait.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 2 * time.Second,
		}),
	}
	if r.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(r.Token)))
	}
	if r.Keepalive > 0 {
		// The ping's answer may take a while on a busy service (a GC pause): a
		// missed answer drops the connection and fails every call on it.
		opts = append(opts, grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: r.Keepalive, Timeout: max(r.Timeout, 5*time.Second), PermitWithoutStream: true}))
	}
	cc, err := grpc.NewClient(r.Address, opts...)
	if err != nil {
		return nil, fmt.Errorf("route %s: consumer %s: %w", r.Pattern, r.Address, err)
	}
	api := appv1.NewConsumerServiceClient(cc)
	c := &Client{
		route: r, cc: cc, api: api, srv: srv, st: &streamer{api: api, timeout: r.Timeout},
		sem: make(chan struct{}, r.MaxInFlight), log: log.With("route", r.Pattern),
		series: map[string]*series{}, flight: m.InFlight.WithLabelValues(r.Pattern),
	}
	for _, w := range wildcard.FindAllStringSubmatch(r.Pattern, -1) {
		if w[1] != "$" {
			c.params = append(c.params, w[1])
		}
	}
	for _, method := range []string{"connect", "receive", "disconnect"} {
		ms := &series{latency: m.Latency.WithLabelValues(r.Pattern, method), outcomes: map[string]prometheus.Counter{}}
		for _, o := range []string{"ok", "error", "deadline", "unavailable", "busy"} {
			ms.outcomes[o] = m.Calls.WithLabelValues(r.Pattern, method, o)
		}
		c.series[method] = ms
	}
	ctx, stop := context.WithCancel(context.Background())
	c.stop = stop
	go c.watch(ctx, m.Up.WithLabelValues(r.Pattern))
	cc.Connect()
	return c, nil
}

// watch follows the connection to the service: up says whether it is reachable,
// and each change is logged.
func (c *Client) watch(ctx context.Context, up prometheus.Gauge) {
	state := c.cc.GetState()
	for c.cc.WaitForStateChange(ctx, state) {
		was := state
		state = c.cc.GetState()
		if was == connectivity.Ready {
			// The connection the stream runs on is going (a GOAWAY from a service
			// shutting down, or a failure): new calls open a stream on the next one,
			// and the old stream is closed once its calls are answered, so the
			// service's graceful stop is not held up by it.
			c.st.retire()
		}
		switch state {
		case connectivity.Idle: // the connection was lost: connect again now, not at the next call
			c.cc.Connect()
		case connectivity.Ready:
			up.Set(1)
			c.log.Info("consumer service reachable", "consumer", c.route.Address)
		case connectivity.TransientFailure:
			up.Set(0)
			c.log.Warn("consumer service unreachable: handshakes on its route are refused with 503 until it is back", "consumer", c.route.Address)
		}
	}
}

// Pattern returns the route's pattern.
func (c *Client) Pattern() string { return c.route.Pattern }

// Consumer makes the consumer of one connection (for Server.Handle).
func (c *Client) Consumer() edge.Consumer { return &consumer{cl: c} }

// State is the gRPC connection's state: READY, CONNECTING, TRANSIENT_FAILURE, IDLE.
func (c *Client) State() connectivity.State { return c.cc.GetState() }

// Close closes the connection to the service.
func (c *Client) Close() error {
	c.stop()
	c.st.close()
	return c.cc.Close()
}

// errBusy: the route's calls in flight stayed at their bound for the whole deadline.
var errBusy = errors.New("the consumer service has its bound of calls in flight")

// call runs one call under the route's deadline and bound of calls in flight,
// counting it.
func call[Resp any](ctx context.Context, c *Client, method string, fn func(context.Context) (Resp, error)) (Resp, error) {
	// The deadline is kept here, not sent: at it the call is canceled, which the
	// service sees (its context ends) as it would a deadline, and a service answering
	// in time is spared parsing and timing one per call.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	timer := time.AfterFunc(c.route.Timeout, func() { cancel(context.DeadlineExceeded) })
	defer timer.Stop()
	var zero Resp
	ms := c.series[method]
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		ms.outcomes["busy"].Inc()
		return zero, errBusy
	}
	c.flight.Inc()
	start := time.Now()
	resp, err := fn(ctx)
	if err != nil && errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
		err = status.Errorf(codes.DeadlineExceeded, "no answer within %s", c.route.Timeout)
	}
	<-c.sem
	c.flight.Dec()
	ms.latency.Observe(time.Since(start).Seconds())
	ms.outcomes[outcome(err)].Inc()
	return resp, err
}

// invoke makes one call (under call's deadline, bound and counts) over the route's
// stream, or with unary for a service without Stream; pick takes the answer's result.
func invoke[Resp any](ctx context.Context, c *Client, method string, sreq *appv1.StreamRequest,
	pick func(*appv1.StreamResponse) *Resp, unary func(context.Context) (*Resp, error)) (*Resp, error) {
	return call(ctx, c, method, func(ctx context.Context) (*Resp, error) {
		for pause := 10 * time.Millisecond; ; pause = min(2*pause, 200*time.Millisecond) {
			r, err := c.st.do(ctx, sreq)
			if errors.Is(err, errNoStream) {
				return unary(ctx)
			}
			// A call that never reached the service (its stream could not be opened,
			// or failed before sending it, the service unreachable) is made again on the next stream: at once
			// if the connection is up, and for a message or a disconnect also once
			// the service is back within the deadline (a redeploy), rather than
			// closing the socket. A Connect to a service that is down fails fast: 503.
			if errors.As(err, new(unsent)) && status.Code(err) == codes.Unavailable && c.ready(ctx, method != "connect", pause) {
				sreq = &appv1.StreamRequest{Call: sreq.GetCall()} // the old one may still be read by a failed stream's sender
				continue
			}
			if err != nil {
				return nil, err
			}
			return answer(r, pick(r))
		}
	})
}

// ready waits pause, then reports whether the connection to the service is up; with
// wait, it waits for it to be until ctx ends.
func (c *Client) ready(ctx context.Context, wait bool, pause time.Duration) bool {
	t := time.NewTimer(pause)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return false
	}
	for {
		state := c.cc.GetState()
		switch {
		case state == connectivity.Ready:
			return true
		case !wait || state == connectivity.Shutdown:
			return false
		case state == connectivity.Idle:
			c.cc.Connect()
		}
		if !c.cc.WaitForStateChange(ctx, state) {
			return false
		}
	}
}

func outcome(err error) string {
	switch status.Code(err) {
	case codes.OK:
		return "ok"
	case codes.DeadlineExceeded:
		return "deadline"
	case codes.Unavailable:
		return "unavailable"
	}
	return "error"
}

// unreachable reports whether err says the service could not be asked in time
// (rather than answering with an error).
func unreachable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return errors.Is(err, errBusy)
}

// consumer is the consumer of one connection.
type consumer struct {
	cl   *Client
	conn *appv1.Connection // all of it, for Connect
	slim *appv1.Connection // id, user, route and parameters, for Receive and Disconnect
}

// errUnavailable refuses a handshake whose consumer service cannot be asked.
var errUnavailable = &edge.Refusal{Status: http.StatusServiceUnavailable, Reason: "CONSUMER_UNAVAILABLE",
	Message: "the application behind this route is not answering: try again later"}

// headers are the handshake headers a consumer service is told of.
var headers = []string{"user-agent", "origin", "accept-language"}

func (k *consumer) Connect(ctx context.Context, c *edge.Conn, r *http.Request) error {
	// Strings in protobuf must be UTF-8: a path that is not cannot be told to the
	// service (and would fail the route's stream for every connection on it).
	if !utf8.ValidString(r.URL.Path) {
		return &edge.Refusal{Status: http.StatusBadRequest, Reason: "BAD_PATH", Message: "the path is not valid UTF-8"}
	}
	// A service known to be unreachable refuses at once, without taking one of the
	// route's slots (messages waiting for it to come back may hold them all).
	if k.cl.cc.GetState() == connectivity.TransientFailure {
		k.cl.series["connect"].outcomes["unavailable"].Inc()
		return errUnavailable
	}
	conn := &appv1.Connection{
		Id: c.ID(), User: &appv1.User{Id: c.User().ID, Username: c.User().Username},
		SessionId: c.Session().ID, Path: r.URL.Path, Route: k.cl.route.Pattern,
	}
	for _, p := range k.cl.params {
		if conn.PathParams == nil {
			conn.PathParams = map[string]string{}
		}
		conn.PathParams[p] = r.PathValue(p)
	}
	for name, vals := range r.URL.Query() {
		if conn.Query == nil {
			conn.Query = map[string]string{}
		}
		if len(vals) > 0 && utf8.ValidString(name) && utf8.ValidString(vals[0]) {
			conn.Query[name] = vals[0]
		}
	}
	for _, h := range headers {
		if v := r.Header.Get(h); v != "" && utf8.ValidString(v) {
			if conn.Headers == nil {
				conn.Headers = map[string]string{}
			}
			conn.Headers[h] = v
		}
	}
	k.conn = conn
	k.slim = &appv1.Connection{Id: conn.Id, User: conn.User, Route: conn.Route, PathParams: conn.PathParams}
	req := &appv1.ConnectRequest{Connection: conn}
	resp, err := invoke(ctx, k.cl, "connect", &appv1.StreamRequest{Call: &appv1.StreamRequest_Connect{Connect: req}},
		(*appv1.StreamResponse).GetConnect, func(ctx context.Context) (*appv1.ConnectResponse, error) { return k.cl.api.Connect(ctx, req) })
	switch {
	case err != nil && unreachable(err):
		k.cl.log.WarnContext(ctx, "consumer service unreachable: handshake refused", "err", err)
		return errUnavailable
	case err != nil:
		k.cl.log.ErrorContext(ctx, "consumer service failed Connect: handshake refused", "err", err)
		return &edge.Refusal{Status: http.StatusBadGateway, Reason: "CONSUMER_FAILED", Message: "the application behind this route failed"}
	case resp.GetRefusal() != nil:
		return refusal(resp.GetRefusal())
	}
	if err := k.do(ctx, c, resp.GetActions()); err != nil {
		k.cl.log.ErrorContext(ctx, "consumer service answered Connect with an action that cannot be done: handshake refused", "err", err)
		return &edge.Refusal{Status: http.StatusBadGateway, Reason: "CONSUMER_FAILED", Message: "the application behind this route failed"}
	}
	return nil
}

var reasonRE = regexp.MustCompile(`^[A-Za-z0-9_]{1,64}$`)

// refusal makes the service's refusal an HTTP answer within bounds.
func refusal(r *appv1.Refusal) *edge.Refusal {
	out := &edge.Refusal{Status: int(r.GetStatus()), Reason: r.GetReason(), Message: r.GetMessage()}
	if !(400 <= out.Status && out.Status <= 499 || out.Status == 503) {
		out.Status = http.StatusForbidden
	}
	if !reasonRE.MatchString(out.Reason) {
		out.Reason = "REFUSED"
	}
	if len(out.Message) > 1000 || !utf8.ValidString(out.Message) {
		out.Message = strings.ToValidUTF8(out.Message[:min(len(out.Message), 1000)], "")
	}
	return out
}

func (k *consumer) Receive(ctx context.Context, c *edge.Conn, m edge.Message) error {
	req := &appv1.ReceiveRequest{Connection: k.slim}
	if m.Binary {
		req.Payload = &appv1.ReceiveRequest_Binary{Binary: m.Data}
	} else {
		req.Payload = &appv1.ReceiveRequest_Text{Text: m.Text}
	}
	resp, err := invoke(ctx, k.cl, "receive", &appv1.StreamRequest{Call: &appv1.StreamRequest_Receive{Receive: req}},
		(*appv1.StreamResponse).GetReceive, func(ctx context.Context) (*appv1.ReceiveResponse, error) {
			return k.cl.api.Receive(ctx, req, grpc.WaitForReady(true))
		})
	if err != nil {
		if ctx.Err() != nil { // the connection is closing anyway
			return nil
		}
		if status.Code(err) == codes.DeadlineExceeded || errors.Is(err, errBusy) {
			k.cl.log.WarnContext(ctx, "consumer service did not answer in time: connection closed with 1013", "timeout", k.cl.route.Timeout, "err", err)
			c.Close(edge.CloseTryAgainLater, "the application is not answering")
			return nil
		}
		return fmt.Errorf("consumer service Receive: %w", err) // 1011, logged by the edge
	}
	return k.do(ctx, c, resp.GetActions())
}

func (k *consumer) Disconnect(ctx context.Context, c *edge.Conn, code int) {
	if k.conn == nil {
		return
	}
	req := &appv1.DisconnectRequest{Connection: k.slim, Code: int32(code)}
	_, err := invoke(ctx, k.cl, "disconnect", &appv1.StreamRequest{Call: &appv1.StreamRequest_Disconnect{Disconnect: req}},
		(*appv1.StreamResponse).GetDisconnect, func(ctx context.Context) (*appv1.DisconnectResponse, error) {
			return k.cl.api.Disconnect(ctx, req, grpc.WaitForReady(true))
		})
	if err != nil {
		k.cl.log.DebugContext(ctx, "consumer service Disconnect failed (best effort)", "err", err)
	}
}

// do carries out actions in order; the first that cannot be done stops them with
// its error.
func (k *consumer) do(ctx context.Context, c *edge.Conn, actions []*appv1.Action) error {
	for i, a := range actions {
		var err error
		switch v := a.GetAction().(type) {
		case *appv1.Action_Reply:
			if b, ok := v.Reply.GetPayload().(*appv1.Reply_Binary); ok {
				err = c.ReplyBinary(b.Binary)
			} else {
				err = c.Reply(v.Reply.GetText())
			}
		case *appv1.Action_Send:
			err = k.send(ctx, c, v.Send)
		case *appv1.Action_Join:
			err = c.Join(v.Join.GetGroup())
		case *appv1.Action_Leave:
			if !edge.ValidGroup(v.Leave.GetGroup()) {
				err = edge.ErrInvalidGroup
			} else {
				c.Leave(v.Leave.GetGroup())
			}
		case *appv1.Action_Close:
			code := int(v.Close.GetCode())
			if code == 0 {
				code = edge.CloseNormal
			}
			if code != edge.CloseNormal && (code < 3000 || code > 4999) || len(v.Close.GetReason()) > 120 {
				err = fmt.Errorf("close code %d (want 1000 or 3000-4999) or a reason over 120 bytes", code)
			} else {
				c.Close(code, v.Close.GetReason())
			}
		default:
			err = errors.New("an empty or unknown action")
		}
		if errors.Is(err, edge.ErrClosed) {
			return nil // the connection is closing: the rest has no one to act on
		}
		if err != nil {
			return fmt.Errorf("action %d: %w", i, err)
		}
	}
	return nil
}

// send carries out a Send action, as EdgeService.Send does.
func (k *consumer) send(ctx context.Context, _ *edge.Conn, s *appv1.Send) error {
	var to edge.Target
	switch t := s.GetTarget().GetTarget().(type) {
	case *edgev1.Target_UserId:
		to = edge.ToUser(t.UserId)
	case *edgev1.Target_SessionId:
		to = edge.ToSession(t.SessionId)
	case *edgev1.Target_ConnectionId:
		to = edge.ToConnection(t.ConnectionId)
	case *edgev1.Target_Group:
		to = edge.ToGroup(t.Group)
	default:
		return edge.ErrInvalidTarget
	}
	if b, ok := s.GetPayload().(*appv1.Send_Binary); ok {
		return k.cl.srv.SendBinary(ctx, to, b.Binary, s.GetExcludeConnectionIds()...)
	}
	return k.cl.srv.Send(ctx, to, s.GetText(), s.GetExcludeConnectionIds()...)
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

// RequireTransportSecurity is false: a consumer service on loopback needs no TLS.
func (bearer) RequireTransportSecurity() bool { return false }

// NewMetrics registers the consumers' series on reg.
func NewMetrics(reg prometheus.Registerer) Metrics {
	m := Metrics{
		Calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_edge_consumer_calls_total",
			Help: "Calls to consumer services, by route, method (connect, receive, disconnect) and outcome (ok, error, deadline, unavailable, busy: the route's bound of calls in flight stayed full).",
		}, []string{"route", "method", "outcome"}),
		Latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gatehouse_edge_consumer_call_seconds",
			Help:    "Latency of calls to consumer services, by route and method.",
			Buckets: []float64{.0002, .0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route", "method"}),
		InFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gatehouse_edge_consumer_calls_in_flight", Help: "Calls to consumer services in flight, by route.",
		}, []string{"route"}),
	}
	m.Up = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "gatehouse_edge_consumer_up", Help: "1 while a route's consumer service is reachable, 0 while it is not (its handshakes are refused with 503), by route.",
	}, []string{"route"})
	reg.MustRegister(m.Calls, m.Latency, m.InFlight, m.Up)
	return m
}
