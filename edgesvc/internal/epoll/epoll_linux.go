// Package epoll watches parked sockets, those quiet long enough to give up their
// reading goroutine, with one epoll instance, and wakes each when data (or a hang-up)
// arrives. It works on Linux; elsewhere New fails and sockets keep their goroutines.
package epoll

import (
	"context"
	"errors"
	"sync"
	"syscall"
)

// Sleeper is what the poller wakes: a parked socket. Wake is called from the
// poller's goroutine and must not block.
type Sleeper interface{ Wake() }

// Poller is one epoll instance. Go's runtime keeps its own registration of the same
// descriptors; the poller's is one-shot and separate. A nil *Poller parks nothing.
type Poller struct {
	epfd  int
	mu    sync.Mutex
	conns map[uint64]Sleeper
	next  uint64
}

// New returns a Poller whose goroutine runs until ctx ends, or the epoll error.
func New(ctx context.Context) (*Poller, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	p := &Poller{epfd: fd, conns: map[uint64]Sleeper{}}
	go p.run(ctx)
	return p, nil
}

// Register gives s an id for the poller's wake-ups (not the descriptor, which the
// kernel may reuse after a close). It returns 0 on a nil poller.
func (p *Poller) Register(s Sleeper) uint64 {
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next++
	p.conns[p.next] = s
	return p.next
}

// Arm asks for one wake-up of the socket registered as id when it is readable (add:
// the first time). It holds the socket's descriptor while it does, so the descriptor
// cannot be closed and reused meanwhile. It touches nothing of the socket's owner:
// once a socket is marked parked, another goroutine may already be reading it. It fails with
// errors.ErrUnsupported on a nil poller, a socket without descriptor or id 0.
func (p *Poller) Arm(id uint64, sock syscall.RawConn, add bool) error {
	if p == nil || sock == nil || id == 0 {
		return errors.ErrUnsupported
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT,
		Fd: int32(uint32(id)), Pad: int32(uint32(id >> 32))}
	op := syscall.EPOLL_CTL_MOD
	if add {
		op = syscall.EPOLL_CTL_ADD
	}
	var opErr error
	err := sock.Control(func(fd uintptr) { opErr = syscall.EpollCtl(p.epfd, op, int(fd), &ev) })
	return errors.Join(err, opErr)
}

// Forget drops id (0: nothing); the kernel drops its registration when the socket
// closes.
func (p *Poller) Forget(id uint64) {
	if p == nil || id == 0 {
		return
	}
	p.mu.Lock()
	delete(p.conns, id)
	p.mu.Unlock()
}

func (p *Poller) run(ctx context.Context) {
	defer syscall.Close(p.epfd)
	events := make([]syscall.EpollEvent, 256)
	for ctx.Err() == nil {
		n, err := syscall.EpollWait(p.epfd, events, 1000) // wake each second to notice ctx
		if err != nil {
			continue // EINTR
		}
		for _, ev := range events[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			p.mu.Lock()
			s := p.conns[id]
			p.mu.Unlock()
			if s != nil {
				s.Wake()
			}
		}
	}
}
