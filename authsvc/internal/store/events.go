package store

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"time"

	"github.com/jackc/pgx/v5"
)

// EventChannel is the NOTIFY channel the sessions trigger announces ended sessions on.
const EventChannel = "gatehouse_session_ended"

// ListenIdleCheck is how long Listen waits for a notification before checking that
// its connection still answers (within half as long): a connection that went
// half-open (its peer gone without a word) is noticed within 1.5 × ListenIdleCheck.
var ListenIdleCheck = 3 * time.Second

// listenKeepAlive probes the LISTEN connection's TCP peer when it has been idle, so
// the kernel also gives up on a vanished one within seconds.
var listenKeepAlive = net.KeepAliveConfig{Enable: true, Idle: 5 * time.Second, Interval: time.Second, Count: 3}

// Event is one ended session, as announced by the trigger, or a marker put into the
// feed by Mark (then only Marker is set).
type Event struct {
	Marker    string    `json:"marker,omitempty"`
	SessionID string    `json:"session_id"`
	UserID    int64     `json:"user_id"`
	Reason    EndReason `json:"reason"`
	EndedAt   time.Time `json:"ended_at"`
}

// Mark announces marker on EventChannel. Notifications reach every listener in commit
// order, so each Listen delivers the marker after every event committed before Mark
// was called.
func (s *Store) Mark(ctx context.Context, marker string) error {
	payload, err := json.Marshal(Event{Marker: marker})
	if err != nil {
		return err
	}
	_, err = s.pool.Exec(ctx, "SELECT pg_notify($1, $2)", EventChannel, string(payload))
	return err
}

// Listen holds a dedicated connection that LISTENs on EventChannel. It calls ready once
// the LISTEN is in place, then fn for each event, in commit order, until ctx ends or the
// connection fails; it always returns a non-nil error (ctx's error after a cancel).
// Events committed while no Listen runs are not delivered: callers re-check what they
// hold after a failure.
func (s *Store) Listen(ctx context.Context, ready func(), fn func(Event)) error {
	cfg := s.pool.Config().ConnConfig.Copy()
	dialer := &net.Dialer{KeepAliveConfig: listenKeepAlive, Timeout: cfg.ConnectTimeout}
	cfg.DialFunc = dialer.DialContext
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("listen: connect: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+EventChannel); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	ready()
	for {
		// Wake up when idle to check that the connection is alive: a half-open TCP
		// connection would otherwise wait silently while events are lost.
		wctx, cancel := context.WithTimeout(ctx, ListenIdleCheck)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if wctx.Err() == nil || conn.IsClosed() {
				return fmt.Errorf("listen: %w", err)
			}
			pctx, cancel := context.WithTimeout(ctx, ListenIdleCheck/2)
			err := conn.Ping(pctx)
			cancel()
			if err != nil {
				return fmt.Errorf("listen: connection check: %w", err)
			}
			continue
		}
		var ev Event
		if err := json.Unmarshal([]byte(n.Payload), &ev); err != nil {
			return fmt.Errorf("listen: bad payload %q: %w", n.Payload, err)
		}
		fn(ev)
	}
}
