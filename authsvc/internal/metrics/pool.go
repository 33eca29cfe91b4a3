package metrics

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// poolCollector reports the database connection pool's state, read at each scrape:
// pgxpool keeps the counters itself, so nothing is counted between scrapes.
type poolCollector struct {
	stat                                                  func() *pgxpool.Stat
	conns, max, acquires, waits, canceled, acquireSeconds *prometheus.Desc
}

func newPoolCollector(stat func() *pgxpool.Stat) *poolCollector {
	return &poolCollector{
		stat: stat,
		conns: prometheus.NewDesc("gatehouse_auth_db_connections",
			"Database connections by state: acquired (running a statement or transaction), idle, constructing (being opened).", []string{"state"}, nil),
		max: prometheus.NewDesc("gatehouse_auth_db_connections_max",
			"The most database connections the pool opens (pool_max_conns in DATABASE_URL).", nil, nil),
		acquires: prometheus.NewDesc("gatehouse_auth_db_acquires_total",
			"Connections taken from the pool.", nil, nil),
		waits: prometheus.NewDesc("gatehouse_auth_db_acquire_waits_total",
			"Connections taken from the pool that had to wait, none being idle: often means the pool is too small for the load.", nil, nil),
		canceled: prometheus.NewDesc("gatehouse_auth_db_acquire_canceled_total",
			"Waits for a pool connection given up because the call's context ended.", nil, nil),
		acquireSeconds: prometheus.NewDesc("gatehouse_auth_db_acquire_seconds_total",
			"Seconds spent taking connections from the pool, waits included.", nil, nil),
	}
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.conns, c.max, c.acquires, c.waits, c.canceled, c.acquireSeconds} {
		ch <- d
	}
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stat()
	ch <- prometheus.MustNewConstMetric(c.conns, prometheus.GaugeValue, float64(s.AcquiredConns()), "acquired")
	ch <- prometheus.MustNewConstMetric(c.conns, prometheus.GaugeValue, float64(s.IdleConns()), "idle")
	ch <- prometheus.MustNewConstMetric(c.conns, prometheus.GaugeValue, float64(s.ConstructingConns()), "constructing")
	ch <- prometheus.MustNewConstMetric(c.max, prometheus.GaugeValue, float64(s.MaxConns()))
	ch <- prometheus.MustNewConstMetric(c.acquires, prometheus.CounterValue, float64(s.AcquireCount()))
	ch <- prometheus.MustNewConstMetric(c.waits, prometheus.CounterValue, float64(s.EmptyAcquireCount()))
	ch <- prometheus.MustNewConstMetric(c.canceled, prometheus.CounterValue, float64(s.CanceledAcquireCount()))
	ch <- prometheus.MustNewConstMetric(c.acquireSeconds, prometheus.CounterValue, s.AcquireDuration().Seconds())
}
