package edge

import (
	"context"
)

// Consumer runs the application side of a WebSocket, as a Channels consumer does. The
// edge calls Connect once after the upgrade, Receive for each text message in order,
// and Disconnect once when the socket has closed. Calls for one connection never
// overlap. An error from Connect or Receive closes the socket with 1011.
type Consumer interface {
	Connect(ctx context.Context, c *Conn) error
	Receive(ctx context.Context, c *Conn, text string) error
	Disconnect(ctx context.Context, c *Conn, code int)
}

// Echo is the tutorial's consumer: every text X is answered with "You said: X".
type Echo struct{}

var _ Consumer = Echo{}

// Connect accepts every connection.
func (Echo) Connect(context.Context, *Conn) error { return nil }

// Receive answers text with "You said: " + text. It returns an error only if the
// connection has closed.
func (Echo) Receive(_ context.Context, c *Conn, text string) error {
	return c.Reply("You said: " + text)
}

// Disconnect does nothing.
func (Echo) Disconnect(context.Context, *Conn, int) {}
