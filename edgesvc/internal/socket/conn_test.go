package socket

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse/gatehouse/edgesvc/internal/budget"
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

// TestSharedBudgetsGivenBack: what a connection queues counts against the budgets it
// shares (a binary message of its own too), and a connection that never runs (its
// Connect refused, its upgrade failed) gives it all back.
func TestSharedBudgetsGivenBack(t *testing.T) {
	rt := testRuntime(t)
	user, edge := budget.New(1<<20), budget.New(1<<20)
	c := rt.NewConn()
	c.Share(Shares{Send: budget.Pair{User: user, Edge: edge}})
	if err := c.Send("hello"); err != nil {
		t.Fatal(err)
	}
	if err := c.Push(true, "\x00\x01\x02"); err != nil {
		t.Fatal(err)
	}
	if user.Used() != 8 || edge.Used() != 8 {
		t.Fatalf("queued 5 + 3 bytes: user %d, edge %d", user.Used(), edge.Used())
	}
	c.Discard()
	if user.Used() != 0 || edge.Used() != 0 {
		t.Fatalf("after Discard: user %d, edge %d", user.Used(), edge.Used())
	}
}
