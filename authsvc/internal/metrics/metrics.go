// Package metrics defines every series authsvc exports, registered once, hands the
// server and the session event feed the series they count, and serves them at
// GET /metrics.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gatehouse/gatehouse/authsvc/internal/password"
	"github.com/gatehouse/gatehouse/authsvc/internal/server"
	"github.com/gatehouse/gatehouse/authsvc/internal/sessionevents"
	"github.com/gatehouse/gatehouse/authsvc/internal/store"
)

// Parts are the parts of authsvc that metrics count or read at each scrape.
type Parts struct {
	Server *server.Server
	Hasher *password.Hasher
	Events *sessionevents.Fanout
	Store  *store.Store
}

// New registers authsvc's series, and the Go and process collectors, on reg, and
// hands p.Server and p.Events the series they count: call it before either serves
// or runs. Add the returned GRPC's ServerOptions to the gRPC server, and call its
// Initialize once every service is registered. New panics if reg has any of the
// series already.
func New(reg prometheus.Registerer, p Parts) *GRPC {
	g := newGRPC()
	logins := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_auth_logins_total",
		Help: "Login calls by outcome: ok, invalid_credentials (wrong password, unknown or inactive user), rate_limited (too many failures), busy (too many logins being checked at once: LOGINS_IN_PROGRESS), bad_request (INVALID_ARGUMENT), error (anything else, such as the database down or the caller gone).",
	}, []string{"outcome"})
	limited := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_auth_rate_limited_total",
		Help: "Calls refused by a limit, by the limit: user_address, user, address (failed logins per username and address, per username, per address; when several are over, only the one that resets last, which the refusal reports), logins_per_address, logins_total (logins being checked at once), event_streams_per_caller, event_streams_total (WatchSessionEvents streams).",
	}, []string{"limit"})
	inFlight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gatehouse_auth_hashing_in_flight",
		Help: "Password hashes (logins, password changes) running now; at most GOMAXPROCS.",
	}, func() float64 { return float64(p.Hasher.InFlight()) })
	waiting := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gatehouse_auth_hashing_waiting",
		Help: "Callers waiting for a free slot to hash a password in: logins arriving faster than the CPUs check them.",
	}, func() float64 { return float64(p.Hasher.Waiting()) })
	inProgress := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gatehouse_auth_logins_in_progress",
		Help: "Logins being checked now, as bounded by AUTHSVC_LOGIN_MAX_CONCURRENT.",
	}, func() float64 { return float64(p.Server.LoginsInProgress()) })

	live := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gatehouse_auth_event_feed_live",
		Help: "1 while the session event feed LISTENs to PostgreSQL; 0: WatchSessionEvents calls wait, and health says NOT_SERVING.",
	}, func() float64 {
		if p.Events.Live() {
			return 1
		}
		return 0
	})
	subscribers := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gatehouse_auth_event_subscribers",
		Help: "WatchSessionEvents streams subscribed to the session event feed now.",
	}, func() float64 { return float64(p.Events.Subscribers()) })
	subsWaiting := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gatehouse_auth_event_subscribers_waiting",
		Help: "WatchSessionEvents calls waiting for the session event feed to listen.",
	}, func() float64 { return float64(p.Events.Waiting()) })
	reconnects := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gatehouse_auth_event_feed_reconnects_total",
		Help: "Times the session event feed's LISTEN connection was lost after it was listening (each ends every WatchSessionEvents stream with EVENTS_MISSED); failed attempts to reconnect are not counted.",
	})
	ended := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_auth_session_events_total",
		Help: "Session-ended events received from PostgreSQL, by end reason; SyncSessionEvents markers are not counted.",
	}, []string{"reason"})
	dropped := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gatehouse_auth_event_subscribers_dropped_total",
		Help: "WatchSessionEvents streams ended because they fell a whole buffer (4096 events) behind.",
	})
	lag := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "gatehouse_auth_event_feed_lag_seconds",
		Help:    "Seconds from a session's ended_at (PostgreSQL's now() in the transaction that ended it) to the feed handing the event to the streams; clocks apart make it off by their difference (negative counted as 0).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	})

	// Expose every known series from the start, so dashboards see zeros, not gaps.
	for _, o := range server.LoginOutcomes {
		logins.WithLabelValues(o)
	}
	for _, l := range server.RateLimits {
		limited.WithLabelValues(l)
	}
	for _, r := range []store.EndReason{store.EndLogout, store.EndRevoked, store.EndUserDisabled, store.EndPasswordChanged, store.EndSessionLimit} {
		ended.WithLabelValues(string(r))
	}
	reg.MustRegister(g.handled, g.handling, logins, limited, inFlight, waiting, inProgress,
		live, subscribers, subsWaiting, reconnects, ended, dropped, lag,
		newPoolCollector(p.Store.PoolStat),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	p.Server.SetMetrics(server.Metrics{Logins: logins, RateLimited: limited})
	p.Events.SetMetrics(sessionevents.Metrics{
		Reconnects: reconnects, Dropped: dropped, Lag: lag,
		Ended: func(r store.EndReason) sessionevents.Counter { return ended.WithLabelValues(string(r)) },
	})
	return g
}

// Handler serves the series gathered from reg at GET /metrics, and nothing else.
func Handler(reg prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return mux
}
