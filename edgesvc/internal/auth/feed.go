package auth

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"
)

// Close reasons sent with 4401.
var endReasons = map[authv1.SessionEndReason]string{
	authv1.SessionEndReason_SESSION_END_REASON_LOGOUT:           "logout",
	authv1.SessionEndReason_SESSION_END_REASON_REVOKED:          "revoked",
	authv1.SessionEndReason_SESSION_END_REASON_USER_DISABLED:    "user_disabled",
	authv1.SessionEndReason_SESSION_END_REASON_PASSWORD_CHANGED: "password_changed",
	authv1.SessionEndReason_SESSION_END_REASON_SESSION_LIMIT:    "session_limit",
}

// Watch follows authsvc's session-ended events until ctx ends, ending each ended
// session through the Holder. After every (re)subscription it re-validates every held
// session, so a session that ended while the feed was down is ended too; while the
// feed is down it does so every feedDownCheck. It resubscribes with backoff (100 ms
// doubling to 5 s, jittered; back to 100 ms after a subscription that lasted), except
// that when authsvc was unreachable it resubscribes the moment the connection to it
// (redialled within a second) is back; and authsvc holds a subscription made while
// its own database feed is down until it is back. So a session ended during an
// outage closes its sockets about a second after the path is back. While it runs, it
// keeps the session cache's lease.
func (a *Authority) Watch(ctx context.Context) {
	go a.checkWhileFeedDown(ctx)
	if a.cache != nil {
		go a.keepLease(ctx)
	}
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		start := time.Now()
		live, err := a.watchOnce(ctx)
		a.feed.Store(0)
		a.cache.feedChanged(false)
		if ctx.Err() != nil {
			return
		}
		// A stream that went live and lasted resets the backoff; one that keeps
		// failing soon after going live (a flapping database) does not, so edges do
		// not hammer authsvc with resubscriptions, each re-checking every session.
		if live && time.Since(start) > 10*time.Second {
			backoff = 100 * time.Millisecond
		}
		if status.Code(err) == codes.Unauthenticated {
			// Retrying cannot help until an operator fixes the credential; say which.
			a.log.ErrorContext(ctx, "authsvc refuses this edge the session event feed: EDGESVC_AUTH_TOKEN must be authsvc's AUTHSVC_FRONTEND_TOKEN "+
				"(or, under mTLS, the edge's certificate name must be in AUTHSVC_FRONTEND_CLIENT_NAMES); the edge is not ready until then", "err", err, "backoff", backoff)
		} else {
			a.log.WarnContext(ctx, "session event feed lost; resubscribing", "err", err, "backoff", backoff)
		}
		a.pause(ctx, backoff/2+rand.N(backoff/2+1))
		backoff = min(2*backoff, 5*time.Second)
	}
}

// pause waits d, or less: while the connection to authsvc is not ready, until it is.
func (a *Authority) pause(ctx context.Context, d time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if a.conn == nil || a.conn.GetState() == connectivity.Ready {
		<-ctx.Done()
		return
	}
	for state := a.conn.GetState(); state != connectivity.Ready; state = a.conn.GetState() {
		if state == connectivity.Idle {
			a.conn.Connect() // an idle channel dials only when asked
		}
		if !a.conn.WaitForStateChange(ctx, state) {
			return
		}
	}
}

// watchOnce follows one subscription until it fails; live says whether it got
// that far.
func (a *Authority) watchOnce(ctx context.Context) (live bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := a.client.WatchSessionEvents(ctx, &authv1.WatchSessionEventsRequest{IncludeMarkers: a.cache != nil})
	if err != nil {
		return false, err
	}
	// authsvc sends headers once the subscription is live.
	if md, _ := stream.Header(); md == nil {
		_, err := stream.Recv()
		if err == nil {
			err = errors.New("event received before headers")
		}
		return false, err
	}
	a.cache.feedChanged(true)
	a.feed.Store(a.feedSeq.Add(1))
	a.log.InfoContext(ctx, "session event feed live")
	go a.revalidateAll(ctx)
	for {
		ev, err := stream.Recv()
		if err != nil {
			return true, err
		}
		if m := ev.GetMarker(); m != "" {
			if p := a.marker.Load(); p != nil && p.id == m && a.marker.CompareAndSwap(p, nil) {
				close(p.seen)
			}
			continue
		}
		a.cache.end(ev.GetSessionId())
		reason := endReasons[ev.GetReason()]
		if reason == "" {
			reason = "ended"
		}
		a.holder.EndSession(ev.GetSessionId(), reason)
	}
}

// marker is the SyncSessionEvents marker the lease keeper waits for.
type marker struct {
	id   string
	seen chan struct{} // closed when the marker arrives on the feed
}

// cacheIdle is how long the lease keeper goes on renewing the lease after the last
// handshake looked in the cache; then it sleeps until the next one.
const cacheIdle = 10 * time.Second

// keepLease keeps the session cache's lease current while handshakes use the cache:
// it asks authsvc for a marker, and when the marker arrives on the live feed, extends
// the lease to the time it asked plus cache_lease. It renews halfway through a lease.
func (a *Authority) keepLease(ctx context.Context) {
	c := a.cache
	for ctx.Err() == nil {
		wait := 100 * time.Millisecond
		if c.idleFor() > cacheIdle {
			select {
			case <-c.wake:
			case <-ctx.Done():
			}
			continue
		}
		if at, epoch, live := c.leaseStart(); live {
			lease, err := a.syncEvents(ctx)
			switch {
			case err != nil:
				a.metrics.Leases.WithLabelValues("failed").Inc()
				a.log.DebugContext(ctx, "session cache lease not renewed", "err", err)
			case lease <= 0: // authsvc does not wait after ending sessions: no caching
				a.metrics.Leases.WithLabelValues("refused").Inc()
				c.drop() // a lease from another replica is no longer to be trusted either
				wait = 10 * time.Second
			default:
				a.metrics.Leases.WithLabelValues("granted").Inc()
				c.extend(at, epoch, lease)
				wait = time.Duration(at + int64(lease/2) - c.now())
			}
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		}
	}
}

// syncEvents puts a marker into the event feed and waits for it to come back on the
// live stream. It returns authsvc's cache lease.
func (a *Authority) syncEvents(ctx context.Context) (time.Duration, error) {
	var id [12]byte
	_, _ = crand.Read(id[:])
	m := &marker{id: hex.EncodeToString(id[:]), seen: make(chan struct{})}
	a.marker.Store(m)
	defer a.marker.CompareAndSwap(m, nil)
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	resp, err := a.client.SyncSessionEvents(ctx, &authv1.SyncSessionEventsRequest{Marker: m.id})
	if err != nil {
		return 0, err
	}
	lease := resp.GetCacheLease().AsDuration()
	if lease <= 0 {
		return 0, nil
	}
	select {
	case <-m.seen:
		return lease, nil
	case <-ctx.Done():
		return 0, errors.New("marker did not come back on the event feed in time")
	}
}

// feedDownCheck is how often live sessions are re-validated while the event feed is
// down: authsvc may still answer ValidateSession (its pool works) while it cannot
// stream events, and sessions that end meanwhile must still close.
const feedDownCheck = 5 * time.Second

func (a *Authority) checkWhileFeedDown(ctx context.Context) {
	tick := time.NewTicker(feedDownCheck)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if a.feed.Load() == 0 {
			a.revalidateAll(ctx)
		}
	}
}

// revalidateAll checks each held session once with authsvc, 8 at a time.
func (a *Authority) revalidateAll(ctx context.Context) {
	held := a.holder.HeldSessions()
	work := make(chan Held)
	var wg sync.WaitGroup
	for range min(8, len(held)) {
		wg.Go(func() {
			for h := range work {
				a.revalidate(ctx, h, 1)
			}
		})
	}
	for _, h := range held {
		select {
		case work <- h:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
}

// revalidate ends h's session if authsvc no longer accepts it. Other errors are
// retried with backoff, up to attempts tries; after that the feed's next
// resubscription (or the periodic check while it is down) checks again. It uses ctx,
// not a connection's context: the check is for every socket of the session, and the
// one that asked may be closing.
func (a *Authority) revalidate(ctx context.Context, h Held, attempts int) {
	backoff := 200 * time.Millisecond
	for i := 0; i < attempts; i++ {
		_, err := a.validate(ctx, h.Token)
		switch status.Code(err) {
		case codes.OK:
			return
		case codes.Unauthenticated:
			a.holder.EndSession(h.SessionID, reasonOf(err))
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// reasonOf maps a ValidateSession refusal to a 4401 close reason.
func reasonOf(err error) string {
	e := Details(err)
	switch e.Reason {
	case authv1.ErrorReason_ERROR_REASON_SESSION_REVOKED.Reason():
		r := e.Metadata["end_reason"]
		for _, known := range endReasons {
			if r == known {
				return r
			}
		}
		return "revoked"
	case authv1.ErrorReason_ERROR_REASON_SESSION_EXPIRED.Reason():
		return "expired"
	case authv1.ErrorReason_ERROR_REASON_USER_INACTIVE.Reason():
		return "user_disabled"
	}
	return "ended"
}
