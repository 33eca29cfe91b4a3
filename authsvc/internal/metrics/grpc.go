package metrics

import (
	"context"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// GRPC counts and times the calls a gRPC server handles under the names and labels of
// go-grpc-middleware's Prometheus provider, so that its standard dashboards work:
// grpc_server_handled_total{grpc_type,grpc_service,grpc_method,grpc_code} and
// grpc_server_handling_seconds{grpc_type,grpc_service,grpc_method}. A stream is
// observed when it ends.
type GRPC struct {
	handled  *prometheus.CounterVec
	handling *prometheus.HistogramVec
}

func newGRPC() *GRPC {
	return &GRPC{
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_handled_total",
			Help: "Total number of RPCs completed on the server, regardless of success or failure.",
		}, []string{"grpc_type", "grpc_service", "grpc_method", "grpc_code"}),
		handling: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "grpc_server_handling_seconds",
			Help: "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
			// ValidateSession takes ~0.3 ms, an argon2 login 30-100 ms; a
			// WatchSessionEvents stream lives for hours and lands in +Inf.
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"grpc_type", "grpc_service", "grpc_method"}),
	}
}

// ServerOptions returns the interceptors that count every call. Give them to
// grpc.NewServer before any other interceptor, so that calls the others refuse (a
// wrong token) are counted too.
func (g *GRPC) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(g.unary), grpc.ChainStreamInterceptor(g.stream)}
}

// Initialize exposes, at zero, the OK count and the latency of every method of every
// service registered on s, as go-grpc-middleware's InitializeMetrics does: call it
// after registering them.
func (g *GRPC) Initialize(s *grpc.Server) {
	for service, info := range s.GetServiceInfo() {
		for _, m := range info.Methods {
			typ := callType(m.IsClientStream, m.IsServerStream)
			g.handled.WithLabelValues(typ, service, m.Name, codes.OK.String())
			g.handling.WithLabelValues(typ, service, m.Name)
		}
	}
}

func (g *GRPC) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := h(ctx, req)
	g.observe("unary", info.FullMethod, start, err)
	return resp, err
}

func (g *GRPC) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	start := time.Now()
	err := h(srv, ss)
	g.observe(callType(info.IsClientStream, info.IsServerStream), info.FullMethod, start, err)
	return err
}

func (g *GRPC) observe(typ, fullMethod string, start time.Time, err error) {
	service, method := splitMethod(fullMethod)
	g.handled.WithLabelValues(typ, service, method, status.Code(err).String()).Inc()
	g.handling.WithLabelValues(typ, service, method).Observe(time.Since(start).Seconds())
}

// callType is the grpc_type label: unary, client_stream, server_stream or
// bidi_stream.
func callType(clientStream, serverStream bool) string {
	switch {
	case clientStream && serverStream:
		return "bidi_stream"
	case clientStream:
		return "client_stream"
	case serverStream:
		return "server_stream"
	}
	return "unary"
}

// splitMethod splits "/package.Service/Method" into service and method, as
// go-grpc-middleware does ("unknown" for anything else).
func splitMethod(fullMethod string) (service, method string) {
	service, method, ok := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if !ok {
		return "unknown", "unknown"
	}
	return service, method
}
