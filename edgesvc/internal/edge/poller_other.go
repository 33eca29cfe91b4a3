//go:build !linux

package edge

import (
	"context"
	"errors"
)

// poller parks sockets only on Linux (epoll); elsewhere every socket keeps its
// reading goroutine.
type poller struct{}

func newPoller(context.Context) (*poller, error) { return nil, errors.ErrUnsupported }

func (p *poller) arm(*Conn) error { return errors.ErrUnsupported }
func (p *poller) forget(*Conn)    {}
