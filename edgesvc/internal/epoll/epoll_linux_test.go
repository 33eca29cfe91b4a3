package epoll

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

// wakes records the poller's wake-ups.
type wakes chan struct{}

func (w wakes) Wake() { w <- struct{}{} }

func (w wakes) await(t *testing.T, what string) {
	t.Helper()
	select {
	case <-w:
	case <-time.After(5 * time.Second):
		t.Fatalf("no wake-up %s", what)
	}
}

// tcpPair returns both ends of a loopback TCP connection and the raw socket of the first.
func tcpPair(t *testing.T) (net.Conn, net.Conn, syscall.RawConn) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	b, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a, err := lis.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	raw, err := a.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	return a, b, raw
}

func TestPollerWakesParkedSockets(t *testing.T) {
	p, err := New(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	_, b, raw := tcpPair(t)
	w := make(wakes, 4)
	id := p.Register(w)
	if id == 0 {
		t.Fatal("register returned 0")
	}
	if err := p.Arm(id, raw, true); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	w.await(t, "when data arrived")
	// One-shot: armed again (EPOLL_CTL_MOD), the unread byte wakes it again at once.
	if err := p.Arm(id, raw, false); err != nil {
		t.Fatal(err)
	}
	w.await(t, "when re-armed with data unread")

	// A hang-up wakes a parked socket too, so its reader sees the end.
	_, b2, raw2 := tcpPair(t)
	w2 := make(wakes, 1)
	id2 := p.Register(w2)
	if err := p.Arm(id2, raw2, true); err != nil {
		t.Fatal(err)
	}
	b2.Close()
	w2.await(t, "on hang-up")

	p.Forget(id)
	p.Forget(id2)
	p.Forget(0)
	if n := len(p.conns); n != 0 {
		t.Fatalf("%d sockets still registered after forget", n)
	}
}

func TestPollerRefusals(t *testing.T) {
	_, _, raw := tcpPair(t)
	var none *Poller
	if id := none.Register(make(wakes)); id != 0 {
		t.Fatalf("a nil poller registered id %d", id)
	}
	if err := none.Arm(1, raw, true); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("nil poller arm: %v", err)
	}
	p, err := New(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Arm(0, raw, true); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("arm of id 0: %v", err)
	}
	if err := p.Arm(p.Register(make(wakes)), nil, true); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("arm without a socket: %v", err)
	}
}
