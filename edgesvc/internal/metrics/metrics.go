// Package metrics defines every series the edge exports, registered once, and hands
// each part (the socket runtime, the session authority) the series it counts.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/gatehouse/gatehouse/edgesvc/internal/auth"
	"github.com/gatehouse/gatehouse/edgesvc/internal/layer"
	"github.com/gatehouse/gatehouse/edgesvc/internal/natslayer"
	"github.com/gatehouse/gatehouse/edgesvc/internal/socket"
)

// Set is every series the edge exports.
type Set struct {
	Handshakes *prometheus.CounterVec // by outcome
	Sends      [5]prometheus.Counter  // sends accepted, by layer.Kind
	Socket     socket.Metrics
	Auth       auth.Metrics
}

// New registers the edge's metrics, and the Go and process collectors, on reg. stats
// reports the registry's groups and memberships at each scrape. It panics if reg has
// them already.
func New(reg prometheus.Registerer, stats func() (groups, memberships int)) *Set {
	handshakes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_edge_handshakes_total", Help: "WebSocket handshakes by outcome.",
	}, []string{"outcome"})
	open := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "gatehouse_edge_connections_open", Help: "WebSocket connections open now.",
	})
	received := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gatehouse_edge_messages_received_total", Help: "Messages (text and binary) received from clients.",
	})
	sent := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gatehouse_edge_messages_sent_total", Help: "Messages written to clients (replies and pushes, one per connection reached).",
	})
	sends := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_edge_sends_total", Help: "Sends accepted (Server.Send, EdgeService.Send, consumers), by target kind: user, session, connection, group.",
	}, []string{"target"})
	queued := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "gatehouse_edge_send_buffer_bytes",
		Help:    "Bytes waiting for a client, observed after each push it takes: how close connections come to EDGESVC_SEND_BUFFER.",
		Buckets: prometheus.ExponentialBuckets(1024, 4, 9), // 1 KiB to 64 MiB
	})
	groups := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gatehouse_edge_groups", Help: "Groups with at least one member on this edge.",
	}, func() float64 { g, _ := stats(); return float64(g) })
	memberships := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gatehouse_edge_group_memberships", Help: "Group memberships of this edge's connections.",
	}, func() float64 { _, m := stats(); return float64(m) })
	closes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_edge_closes_total", Help: "Closed WebSocket connections by close code (applications' own codes, 3000-4999 but 4401, as one) and by who closed.",
	}, []string{"code", "by"})
	slow := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_edge_slow_closes_total", Help: "Connections closed with 1013 because the client did not keep up, by reason: push_overflow (a push did not fit its send buffer), reply_timeout (a reply waited half the write timeout for room), write_stalled (a frame begun could not be finished).",
	}, []string{"reason"})
	budgetCloses := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_edge_budget_closes_total", Help: "Connections closed with 1013 because they would take a shared budget past its limit, by direction (read: bytes of client messages still arriving, EDGESVC_READ_BUFFER_PER_USER / EDGESVC_READ_BUFFER; send: bytes queued, EDGESVC_SEND_BUFFER_PER_USER / EDGESVC_SEND_BUFFER_TOTAL) and scope (user, edge).",
	}, []string{"direction", "scope"})
	readTimeouts := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gatehouse_edge_read_timeouts_total", Help: "Connections closed with 1008 because a message did not complete within EDGESVC_READ_TIMEOUT.",
	})
	readPaused := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gatehouse_edge_read_paused_seconds_total", Help: "Seconds reading from clients was paused by the message rates (EDGESVC_MAX_MESSAGES_PER_SECOND, _PER_USER), summed over connections.",
	})
	validate := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "gatehouse_edge_validate_session_seconds",
		Help:    "Latency of ValidateSession calls made by the edge.",
		Buckets: []float64{.0002, .0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	})
	cache := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_edge_session_cache_lookups_total", Help: "Session lookups (handshakes, the page, /api/session) in the session cache, by result (hit: no call to authsvc).",
	}, []string{"result"})
	leases := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_edge_session_cache_leases_total", Help: "Session cache lease renewals (SyncSessionEvents), by outcome: granted, refused (authsvc does not allow caching), failed.",
	}, []string{"outcome"})

	// Expose every known series from the start, so dashboards see zeros, not gaps.
	for _, o := range []string{"ok", "unauthenticated", "forbidden_user", "forbidden_origin", "not_found", "unavailable", "bad_request", "canceled", "refused", "consumer_error", "shutting_down"} {
		handshakes.WithLabelValues(o)
	}
	for _, code := range []int{1000, 1001, 1003, 1007, 1008, 1009, 1011, 1013, 4000, 4401} { // the codes the edge sends
		closes.WithLabelValues(socket.CodeLabel(code), "edge")
	}
	for _, o := range []string{"granted", "refused", "failed"} {
		leases.WithLabelValues(o)
	}
	for _, r := range []string{"push_overflow", "reply_timeout", "write_stalled"} {
		slow.WithLabelValues(r)
	}
	for _, d := range []string{"read", "send"} {
		for _, sc := range []string{"user", "edge"} {
			budgetCloses.WithLabelValues(d, sc)
		}
	}
	reg.MustRegister(open, handshakes, validate, received, sent, sends, queued, groups, memberships, closes, slow, cache, leases,
		budgetCloses, readTimeouts, readPaused,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &Set{
		Handshakes: handshakes,
		Socket: socket.Metrics{Open: open, Received: received, Sent: sent, Closes: closes, SlowCloses: slow, Queued: queued,
			BudgetCloses: budgetCloses, ReadTimeouts: readTimeouts, ReadPaused: readPaused},
		Auth: auth.Metrics{
			Validate: validate, Leases: leases,
			// Resolved once: they count every handshake.
			CacheHit: cache.WithLabelValues("hit"), CacheMiss: cache.WithLabelValues("miss"),
		},
	}
	for kind, name := range map[layer.Kind]string{layer.User: "user", layer.Session: "session", layer.Connection: "connection", layer.Group: "group"} {
		m.Sends[kind] = sends.WithLabelValues(name)
	}
	return m
}

// NATS registers the series of the layer between edges on reg, for an edge that
// uses NATS.
func NATS(reg prometheus.Registerer) natslayer.Metrics {
	m := natslayer.Metrics{
		Connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gatehouse_edge_nats_connected", Help: "1 while the edge is connected to NATS and hears its own heartbeats through it; 0: the edge API's calls answer LAYER_UNAVAILABLE and consumers' sends reach this edge's connections only.",
		}),
		Edges: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gatehouse_edge_nats_edges", Help: "Edges heard from within three heartbeats, this one included.",
		}),
		Dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatehouse_edge_nats_dropped_total", Help: "Messages for this edge's connections dropped because its dispatcher was behind (past 64 MiB waiting; delivery is at most once).",
		}),
		Unsent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatehouse_edge_nats_unsent_total", Help: "Messages NATS did not take from this edge (the connection was failing): lost, as delivery is at most once.",
		}),
		Unconfirmed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatehouse_edge_nats_unconfirmed_total", Help: "Sends this edge handed to NATS whose connection failed before the server confirmed them (a flush after each batch): lost or not, as delivery is at most once.",
		}),
		Unanswered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatehouse_edge_nats_unanswered_total", Help: "Calls to every edge that an edge did not answer in time (listings and presence then say partial; changes fail with LAYER_UNAVAILABLE).",
		}),
		LocalOnly: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatehouse_edge_nats_local_only_total", Help: "Consumers' sends delivered to this edge's connections only, NATS being unusable.",
		}),
		Refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatehouse_edge_nats_refused_total", Help: "Calls refused with LAYER_UNAVAILABLE (edge API calls, group changes and kicks), NATS being unusable.",
		}),
		Disconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gatehouse_edge_nats_disconnects_total", Help: "Times the NATS connection was lost.",
		}),
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_edge_nats_rejected_total", Help: "Messages received on NATS and dropped, by reason: open (not sealed with the layer key or a fallback for its subject: another key, an edge of a version before sealing, or a client that is not an edge), replay (heard before, or sent outside the 30 s replay window: a replay, or clocks apart), invalid (sealed, but asking for what no edge may).",
		}, []string{"reason"}),
	}
	for _, reason := range []string{"open", "replay", "invalid"} {
		m.Rejected.WithLabelValues(reason) // every reason exported from the start, at 0
	}
	reg.MustRegister(m.Connected, m.Edges, m.Dropped, m.Unsent, m.Unconfirmed, m.Unanswered, m.LocalOnly, m.Refused, m.Disconnects, m.Rejected)
	return m
}
