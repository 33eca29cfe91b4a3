package socket

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

func TestTruncateUTF8(t *testing.T) {
	long := strings.Repeat("é", 100) // 200 bytes
	got := truncateUTF8(long, 123)
	if len(got) > 123 || !utf8.ValidString(got) || len(got) != 122 {
		t.Fatalf("truncateUTF8 = %d bytes, valid %v", len(got), utf8.ValidString(got))
	}
	if truncateUTF8("short", 123) != "short" {
		t.Fatal("short reason changed")
	}
}

func testRuntime(t *testing.T) *Runtime {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	counter := func() *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x"}, []string{"a", "b"})
	}
	return NewRuntime(ctx, Config{SendQueue: 4, SendBuffer: 1 << 10, PingPeriod: time.Minute, WriteWait: time.Second, ParkAfter: time.Second},
		Metrics{
			Open: prometheus.NewGauge(prometheus.GaugeOpts{Name: "o"}), Received: prometheus.NewCounter(prometheus.CounterOpts{Name: "r"}),
			Sent: prometheus.NewCounter(prometheus.CounterOpts{Name: "s"}), Closes: counter(),
			SlowCloses:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sc"}, []string{"reason"}),
			Queued:       prometheus.NewHistogram(prometheus.HistogramOpts{Name: "q"}),
			BudgetCloses: counter(), ReadTimeouts: prometheus.NewCounter(prometheus.CounterOpts{Name: "rt"}),
			ReadPaused: prometheus.NewCounter(prometheus.CounterOpts{Name: "rp"}),
		}, slog.New(slog.DiscardHandler))
}

// TestContextEndsWithTheConnection: a connection's context, made on first use, is
// the same on every call and ends when the connection starts closing, whether it was
// made before or after.
func TestContextEndsWithTheConnection(t *testing.T) {
	rt := testRuntime(t)
	c := rt.NewConn()
	if c.ctx.Load() != nil {
		t.Fatal("a new connection made a context before anyone asked")
	}
	ctx := c.Context()
	if c.Context() != ctx || ctx.Err() != nil {
		t.Fatal("Context changed between calls, or began ended")
	}
	c.Discard()
	if ctx.Err() == nil {
		t.Fatal("the context outlived the connection")
	}
	late := rt.NewConn()
	late.Discard()
	if late.Context().Err() == nil {
		t.Fatal("a context made after the close has not ended")
	}
}
