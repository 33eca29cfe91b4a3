//go:build !linux

package edge

import (
	"context"
	"errors"
	"syscall"
)

// poller parks sockets only on Linux (epoll); elsewhere every socket keeps its
// reading goroutine.
type poller struct{}

func newPoller(context.Context) (*poller, error) { return nil, errors.ErrUnsupported }

func (p *poller) register(*Conn) uint64                   { return 0 }
func (p *poller) arm(uint64, syscall.RawConn, bool) error { return errors.ErrUnsupported }
func (p *poller) forget(*Conn)                            {}
