package natslayer

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse/gatehouse/edgesvc/internal/layer"
)

// The layer on a real nats-server (the pinned one make installs into bin/), with a
// recording layer.Edge standing in for the registry and sockets (e2e has the real
// ones): the rules that only show when NATS stops, stalls or returns.

type server struct {
	t    *testing.T
	addr string
	cmd  *exec.Cmd
}

func startServer(t *testing.T) *server {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{t: t, addr: l.Addr().String()}
	l.Close()
	s.start()
	t.Cleanup(s.kill)
	return s
}

func (s *server) start() {
	bin := filepath.Join("..", "..", "..", "bin", "nats-server")
	if _, err := os.Stat(bin); err != nil {
		if bin, err = exec.LookPath("nats-server"); err != nil {
			s.t.Fatal("no nats-server: run make test (it installs the pinned one into bin/)")
		}
	}
	host, port, _ := net.SplitHostPort(s.addr)
	s.cmd = exec.Command(bin, "-a", host, "-p", port)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if c, err := net.Dial("tcp", s.addr); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatal("nats-server did not listen")
		}
	}
}

func (s *server) kill() {
	if s.cmd != nil {
		_ = s.cmd.Process.Signal(syscall.SIGCONT)
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
		s.cmd = nil
	}
}

// fakeEdge records what the layer asks of one edge.
type fakeEdge struct {
	mu        sync.Mutex
	delivered []string // the data of each send, in order
	groups    map[string]bool
	slowAdd   time.Duration // GroupAdd takes this long
	closes    []int         // the codes of Disconnect
}

func (e *fakeEdge) Deliver(m layer.Send) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.delivered = append(e.delivered, m.Data)
}

func (e *fakeEdge) GroupAdd(group string, _ layer.Target) error {
	time.Sleep(e.slowAdd)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.groups == nil {
		e.groups = map[string]bool{}
	}
	e.groups[group] = true
	return nil
}

func (e *fakeEdge) GroupDiscard(group string, _ layer.Target) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.groups, group)
}
func (e *fakeEdge) Disconnect(_ layer.Target, code int, _ string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closes = append(e.closes, code)
}
func (e *fakeEdge) List(layer.ListQuery) []layer.ConnInfo { return nil }
func (e *fakeEdge) Presence(string) []layer.PresentUser   { return nil }
func (e *fakeEdge) inGroup(g string) bool                 { e.mu.Lock(); defer e.mu.Unlock(); return e.groups[g] }
func (e *fakeEdge) got() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.delivered...)
}

func testMetrics() Metrics {
	g := func() prometheus.Gauge { return prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"}) }
	c := func() prometheus.Counter { return prometheus.NewCounter(prometheus.CounterOpts{Name: "c"}) }
	return Metrics{Connected: g(), Edges: g(), Dropped: c(), Unsent: c(), Unconfirmed: c(), Unanswered: c(), LocalOnly: c(), Refused: c(), Disconnects: c(),
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "r"}, []string{"reason"})}
}

func newLayer(t *testing.T, s *server, node string) (*Layer, *fakeEdge) {
	t.Helper()
	e := &fakeEdge{}
	l, err := New(Config{URL: "nats://" + s.addr, Node: node, Heartbeat: 200 * time.Millisecond, Timeout: time.Second, Key: testKey},
		e, testMetrics(), slog.New(slog.NewTextHandler(testLog, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l, e
}

func eventually(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
	}
}

var user1 = layer.Target{Kind: layer.User, User: 1}

func send(l *Layer, ctx context.Context, data string) error {
	return l.Send(ctx, layer.Send{To: user1, Data: data})
}

// TestChangeWaitsForEdgesJustStarted: a change made by an edge that has just
// connected waits for the edges that answer its hello, not only for itself.
func TestChangeWaitsForEdgesJustStarted(t *testing.T) {
	s := startServer(t)
	_, ea := newLayer(t, s, "a")
	ea.slowAdd = 300 * time.Millisecond // far longer than b takes on its own
	time.Sleep(100 * time.Millisecond)
	b, _ := newLayer(t, s, "b")
	if err := b.GroupAdd(t.Context(), "g", user1); err != nil {
		t.Fatal(err)
	}
	if !ea.inGroup("g") {
		t.Fatal("GroupAdd on an edge just started returned before the other edge applied it")
	}
}

// TestDownAndBack: with NATS stopped, sends under RequireAll and every change fail
// with ErrUnavailable; a consumer's sends reach this edge only, in order after what
// came through NATS; when NATS is back, both edges hear each other's sends again.
func TestDownAndBack(t *testing.T) {
	s := startServer(t)
	a, ea := newLayer(t, s, "a")
	b, eb := newLayer(t, s, "b")
	a.Watch(user1, true)
	b.Watch(user1, true)
	eventually(t, "the edges hear each other", 5*time.Second, func() bool { return len(a.live()) == 2 && len(b.live()) == 2 })
	if err := a.GroupAdd(t.Context(), "g", user1); err != nil { // also: a's subscription is in place
		t.Fatal(err)
	}
	strict := layer.RequireAll(t.Context())
	for i := range 100 {
		if err := send(a, strict, strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	s.kill()
	eventually(t, "a notices", 5*time.Second, func() bool { return !a.usable() })
	if err := send(a, strict, "x"); !errors.Is(err, layer.ErrUnavailable) {
		t.Fatalf("a send under RequireAll with NATS down: %v", err)
	}
	for _, err := range []error{
		a.GroupAdd(t.Context(), "h", user1), a.GroupDiscard(t.Context(), "g", user1), a.Disconnect(t.Context(), user1, 4000, ""),
	} {
		if !errors.Is(err, layer.ErrUnavailable) {
			t.Fatalf("a change with NATS down (not under RequireAll either): %v, want ErrUnavailable", err)
		}
	}
	if ea.inGroup("h") {
		t.Fatal("a refused change was applied here")
	}
	for i := 100; i < 200; i++ {
		if err := send(a, t.Context(), strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	// a has what came through NATS before it stopped, then its local sends, in order.
	eventually(t, "a's local sends", 5*time.Second, func() bool { g := ea.got(); return len(g) > 0 && g[len(g)-1] == "199" })
	got := ea.got()
	for i := 1; i < len(got); i++ {
		p, _ := strconv.Atoi(got[i-1])
		q, _ := strconv.Atoi(got[i])
		if q <= p {
			t.Fatalf("a delivered %s after %s", got[i], got[i-1])
		}
	}
	if n := len(eb.got()); n > 100 {
		t.Fatalf("b got %d sends: a's local-only sends reached it", n)
	}
	list, _ := a.List(t.Context(), layer.ListQuery{Limit: 10})
	if !list.Partial {
		t.Fatal("a listing with NATS down is not partial")
	}

	s.start()
	eventually(t, "both edges usable again", 10*time.Second, func() bool { return a.usable() && b.usable() })
	eventually(t, "a's sends reach b again", 10*time.Second, func() bool {
		_ = send(a, strict, "after")
		g := eb.got()
		return len(g) > 0 && g[len(g)-1] == "after"
	})
}

// TestStalledNATS: with the server stopped (SIGSTOP: connections open, nothing
// answered), subscribing and sending never wait for it, the layer counts as down
// within a few heartbeats, and it recovers when the server resumes.
func TestStalledNATS(t *testing.T) {
	s := startServer(t)
	a, ea := newLayer(t, s, "a")
	a.Watch(user1, true)
	eventually(t, "a usable", 5*time.Second, a.usable)
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	big := string(make([]byte, 512<<10))
	start := time.Now()
	for i := range 64 { // 32 MiB: more than the socket buffers hold
		_ = a.Send(t.Context(), layer.Send{To: user1, Data: big})
		a.Watch(layer.Target{Kind: layer.Group, ID: "g" + strconv.Itoa(i)}, true)
	}
	// Blocking on the stalled server would wait until it resumes (never, here); the
	// bound only leaves room for copying 32 MiB under the race detector on a busy
	// machine.
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("sends and subscriptions waited %s for a stalled NATS", d)
	}
	eventually(t, "a notices the stall", 10*time.Second, func() bool { return !a.usable() })
	if err := send(a, layer.RequireAll(t.Context()), "x"); !errors.Is(err, layer.ErrUnavailable) {
		t.Fatalf("a send under RequireAll with NATS stalled: %v", err)
	}
	_ = send(a, t.Context(), "local")
	eventually(t, "a's local send", 5*time.Second, func() bool { g := ea.got(); return len(g) > 0 && g[len(g)-1] == "local" })
	if err := s.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a usable again", 20*time.Second, a.usable)
	eventually(t, "a's sends come back through NATS", 10*time.Second, func() bool {
		_ = send(a, layer.RequireAll(t.Context()), "back")
		g := ea.got()
		return len(g) > 0 && g[len(g)-1] == "back"
	})
	// What NATS held through the stall and handed back afterwards was older than
	// "local": none of it came after.
	got := ea.got()
	for i, d := range got {
		if d == "local" {
			for _, later := range got[i+1:] {
				if later != "back" {
					t.Fatalf("a %d-byte send queued before the stall was delivered after a later one", len(later))
				}
			}
		}
	}
}

var testLog io.Writer = io.Discard // os.Stderr to see the layers' logs

func testLogger() *slog.Logger { return slog.New(slog.NewTextHandler(testLog, nil)) }
