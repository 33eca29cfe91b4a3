package edge

import (
	"context"
	"net/http"
)

// Consumer runs the application side of one WebSocket connection, as a Channels
// consumer does. Server.Handle makes one per connection.
//
// The edge calls Connect once, before the upgrade, then Receive for each message in
// the order they arrive, then Disconnect once when the connection has ended. Calls for
// one connection never overlap; different connections run in parallel.
//
// Receive runs on the connection's reading goroutine: while it blocks, nothing more
// is read from that client (which is slowed down, not dropped), and nothing else is
// delayed. Because keepalive pongs are read there too, a Receive that blocks longer
// than Config.PingPeriod gets its connection dropped as dead: for long work, start a
// goroutine bound to c.Context() and Send the result. A Consumer may keep c and call
// its methods from any goroutine until Disconnect.
type Consumer interface {
	// Connect decides on the connection before the upgrade, with r the handshake
	// request (its path values, query and headers) and ctx ending with the
	// handshake. The user and session are already authorised (c.User, c.Session).
	// Returning nil accepts: the edge upgrades, and messages the consumer Sent meanwhile
	// go out first. Returning a *Refusal answers its HTTP status with no upgrade; any
	// other error answers 500 (reason CONSUMER_ERROR) and is logged.
	Connect(ctx context.Context, c *Conn, r *http.Request) error
	// Receive handles one message; ctx is c.Context(). An error other than ErrClosed
	// closes the connection with 1011 and is logged.
	Receive(ctx context.Context, c *Conn, m Message) error
	// Disconnect is called once the connection has ended, if Connect accepted it
	// (also when the upgrade then failed: code 1006). code is the close code sent or
	// received (1006 if the network failed). ctx carries c.Context()'s values but
	// does not end.
	Disconnect(ctx context.Context, c *Conn, code int)
}

// Refusal is an error for Connect to return to refuse a handshake with an HTTP status.
// Browsers do not show the status to scripts (they see close 1006); to tell a page why,
// accept and Close with a code of 4000–4999 instead.
type Refusal struct {
	// Status is the HTTP status, 400–599; any other value is answered as 403.
	Status int
	// Reason goes in the Gatehouse-Reason header, for programs (e.g. ROOM_FULL);
	// empty is REFUSED.
	Reason string
	// Message is the response body, for people.
	Message string
}

func (r *Refusal) Error() string { return "refused: " + r.Message }

// Echo is the tutorial's consumer: every text X is answered with "You said: X"; a
// binary message closes the connection with 1003.
type Echo struct{}

var _ Consumer = Echo{}

// Connect accepts every connection.
func (Echo) Connect(context.Context, *Conn, *http.Request) error { return nil }

// Receive answers text with "You said: " + text and closes the connection with 1003
// on a binary message. It returns an error only if the connection has closed.
func (Echo) Receive(_ context.Context, c *Conn, m Message) error {
	if m.Binary {
		c.Close(CloseUnsupported, "binary frames are not supported: send text")
		return nil
	}
	return c.Reply("You said: " + m.Text)
}

// Disconnect does nothing.
func (Echo) Disconnect(context.Context, *Conn, int) {}
