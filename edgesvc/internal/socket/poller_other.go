//go:build !linux

package socket

import (
	"context"
	"errors"
	"syscall"
)

// sleeper is what the poller wakes: a parked socket.
type sleeper interface{ wake() }

// poller parks sockets only on Linux (epoll); elsewhere every socket keeps its
// reading goroutine.
type poller struct{}

func newPoller(context.Context) (*poller, error) { return nil, errors.ErrUnsupported }

func (p *poller) register(sleeper) uint64                 { return 0 }
func (p *poller) arm(uint64, syscall.RawConn, bool) error { return errors.ErrUnsupported }
func (p *poller) forget(uint64)                           {}
