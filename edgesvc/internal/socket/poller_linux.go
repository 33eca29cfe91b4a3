package socket

import (
	"context"
	"errors"
	"sync"
	"syscall"
)

// sleeper is what the poller wakes: a parked socket.
type sleeper interface{ wake() }

// poller watches parked sockets, those quiet long enough to give up their reading
// goroutine, with one epoll instance, and wakes each when data (or a hang-up) arrives.
// Go's runtime keeps its own registration of the same descriptors; ours is one-shot
// and separate.
type poller struct {
	epfd  int
	mu    sync.Mutex
	conns map[uint64]sleeper
	next  uint64
}

func newPoller(ctx context.Context) (*poller, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	p := &poller{epfd: fd, conns: map[uint64]sleeper{}}
	go p.run(ctx)
	return p, nil
}

// register gives s an id for the poller's wake-ups (not the descriptor, which the
// kernel may reuse after a close). It returns 0 on a nil poller.
func (p *poller) register(s sleeper) uint64 {
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next++
	p.conns[p.next] = s
	return p.next
}

// arm asks for one wake-up of the socket registered as id when it is readable (add:
// the first time). It holds the socket's descriptor while it does, so the descriptor
// cannot be closed and reused meanwhile. It touches no Conn: once a socket is marked
// parked, another goroutine may already be reading it. It fails with
// errors.ErrUnsupported on a nil poller, a socket without descriptor or id 0.
func (p *poller) arm(id uint64, sock syscall.RawConn, add bool) error {
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

// forget drops id (0: nothing); the kernel drops its registration when the socket
// closes.
func (p *poller) forget(id uint64) {
	if p == nil || id == 0 {
		return
	}
	p.mu.Lock()
	delete(p.conns, id)
	p.mu.Unlock()
}

func (p *poller) run(ctx context.Context) {
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
				s.wake()
			}
		}
	}
}
