package edge

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

type metrics struct {
	open       prometheus.Gauge
	handshakes *prometheus.CounterVec
	validate   prometheus.Histogram
	received   prometheus.Counter
	sent       prometheus.Counter
	closes     *prometheus.CounterVec
	cache      *prometheus.CounterVec
	cacheHit   prometheus.Counter // cache's "hit" and "miss", resolved once: they count every handshake
	cacheMiss  prometheus.Counter
	leases     *prometheus.CounterVec
}

// newMetrics registers the edge's metrics, and the Go and process collectors, on reg.
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gatehouse_edge_connections_open", Help: "WebSocket connections open now.",
		}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_edge_handshakes_total", Help: "WebSocket handshakes by outcome.",
		}, []string{"outcome"}),
		validate: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gatehouse_edge_validate_session_seconds",
			Help:    "Latency of ValidateSession calls made by the edge.",
			Buckets: []float64{.0002, .0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatehouse_edge_messages_received_total", Help: "Text messages received from clients.",
		}),
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatehouse_edge_messages_sent_total", Help: "Text messages written to clients.",
		}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_edge_closes_total", Help: "Closed WebSocket connections by close code and by who closed.",
		}, []string{"code", "by"}),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_edge_session_cache_lookups_total", Help: "Session lookups (handshakes, the page, /api/session) in the session cache, by result (hit: no call to authsvc).",
		}, []string{"result"}),
		leases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_edge_session_cache_leases_total", Help: "Session cache lease renewals (SyncSessionEvents), by outcome: granted, refused (authsvc does not allow caching), failed.",
		}, []string{"outcome"}),
	}
	// Expose every known series from the start, so dashboards see zeros, not gaps.
	for _, o := range []string{"ok", "unauthenticated", "forbidden_user", "forbidden_origin", "not_found", "unavailable", "bad_request", "canceled"} {
		m.handshakes.WithLabelValues(o)
	}
	for _, code := range []int{CloseGoingAway, CloseUnsupported, CloseInvalidPayload, CloseTooBig, CloseInternal, CloseTryAgainLater, CloseSessionEnded} {
		m.closes.WithLabelValues(codeLabel(code), "edge")
	}
	m.cacheHit, m.cacheMiss = m.cache.WithLabelValues("hit"), m.cache.WithLabelValues("miss")
	for _, o := range []string{"granted", "refused", "failed"} {
		m.leases.WithLabelValues(o)
	}
	reg.MustRegister(m.open, m.handshakes, m.validate, m.received, m.sent, m.closes, m.cache, m.leases,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func codeLabel(code int) string { return strconv.Itoa(code) }
