package edge

import (
	"context"
	"errors"
	"sync"
	"syscall"
)

// poller watches parked sockets, those quiet long enough to give up their reading
// goroutine, with one epoll instance, and starts a reading goroutine for each when
// data (or a hang-up) arrives. Go's runtime keeps its own registration of the same
// descriptors; ours is one-shot and separate.
type poller struct {
	epfd  int
	mu    sync.Mutex
	conns map[uint64]*Conn
	next  uint64
}

func newPoller(ctx context.Context) (*poller, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	p := &poller{epfd: fd, conns: map[uint64]*Conn{}}
	go p.run(ctx)
	return p, nil
}

// arm asks for one wake-up of c when its socket is readable. It holds the socket's
// descriptor while it does, so the descriptor cannot be closed and reused meanwhile.
func (p *poller) arm(c *Conn) error {
	if p == nil || c.sock == nil {
		return errors.ErrUnsupported
	}
	if c.pollID == 0 {
		p.mu.Lock()
		p.next++
		c.pollID = p.next
		p.conns[c.pollID] = c
		p.mu.Unlock()
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT,
		Fd: int32(uint32(c.pollID)), Pad: int32(uint32(c.pollID >> 32))}
	var opErr error
	err := c.sock.Control(func(fd uintptr) {
		op := syscall.EPOLL_CTL_MOD
		if !c.pollAdded {
			op = syscall.EPOLL_CTL_ADD
		}
		if opErr = syscall.EpollCtl(p.epfd, op, int(fd), &ev); opErr == nil {
			c.pollAdded = true
		}
	})
	return errors.Join(err, opErr)
}

// forget drops c; the kernel drops its registration when the socket closes.
func (p *poller) forget(c *Conn) {
	if p == nil || c.pollID == 0 {
		return
	}
	p.mu.Lock()
	delete(p.conns, c.pollID)
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
			c := p.conns[id]
			p.mu.Unlock()
			if c != nil {
				c.wake()
			}
		}
	}
}
