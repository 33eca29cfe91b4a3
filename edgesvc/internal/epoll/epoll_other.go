//go:build !linux

package epoll

import (
	"context"
	"errors"
	"syscall"
)

// Sleeper is what the poller wakes: a parked socket.
type Sleeper interface{ Wake() }

// Poller parks sockets only on Linux (epoll); elsewhere every socket keeps its
// reading goroutine.
type Poller struct{}

// New fails with errors.ErrUnsupported: there is no epoll here.
func New(context.Context) (*Poller, error) { return nil, errors.ErrUnsupported }

// Register returns 0: nothing is parked.
func (p *Poller) Register(Sleeper) uint64 { return 0 }

// Arm fails with errors.ErrUnsupported.
func (p *Poller) Arm(uint64, syscall.RawConn, bool) error { return errors.ErrUnsupported }

// Forget does nothing.
func (p *Poller) Forget(uint64) {}
