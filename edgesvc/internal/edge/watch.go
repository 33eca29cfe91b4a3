package edge

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Close reasons sent with 4401.
var endReasons = map[authv1.SessionEndReason]string{
	authv1.SessionEndReason_SESSION_END_REASON_LOGOUT:           "logout",
	authv1.SessionEndReason_SESSION_END_REASON_REVOKED:          "revoked",
	authv1.SessionEndReason_SESSION_END_REASON_USER_DISABLED:    "user_disabled",
	authv1.SessionEndReason_SESSION_END_REASON_PASSWORD_CHANGED: "password_changed",
}

// WatchSessions follows authsvc's session-ended events until ctx ends, closing the
// sockets of each ended session with 4401. After every (re)subscription it
// re-validates every live session, so a session that ended while the feed was down
// is closed too. It resubscribes with backoff (100 ms doubling to 5 s, jittered).
func (s *Server) WatchSessions(ctx context.Context) {
	go s.checkWhileFeedDown(ctx)
	if s.cache != nil {
		go s.keepLease(ctx)
	}
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		start := time.Now()
		err := s.watchOnce(ctx)
		s.feed.Store(0)
		s.cache.feedChanged(false)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > 30*time.Second {
			backoff = 100 * time.Millisecond
		}
		s.log.WarnContext(ctx, "session event feed lost; resubscribing", "err", err, "backoff", backoff)
		select {
		case <-time.After(backoff/2 + rand.N(backoff/2+1)):
		case <-ctx.Done():
			return
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (s *Server) watchOnce(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := s.auth.WatchSessionEvents(ctx, &authv1.WatchSessionEventsRequest{IncludeMarkers: s.cache != nil})
	if err != nil {
		return err
	}
	// authsvc sends headers once the subscription is live.
	if md, _ := stream.Header(); md == nil {
		_, err := stream.Recv()
		if err == nil {
			err = errors.New("event received before headers")
		}
		return err
	}
	s.cache.feedChanged(true)
	s.feed.Store(s.feedSeq.Add(1))
	s.log.InfoContext(ctx, "session event feed live")
	go s.revalidateAll(ctx)
	for {
		ev, err := stream.Recv()
		if err != nil {
			return err
		}
		if m := ev.GetMarker(); m != "" {
			if p := s.marker.Load(); p != nil && p.id == m && s.marker.CompareAndSwap(p, nil) {
				close(p.seen)
			}
			continue
		}
		s.cache.end(ev.GetSessionId())
		reason := endReasons[ev.GetReason()]
		if reason == "" {
			reason = "ended"
		}
		s.endSession(ev.GetSessionId(), reason)
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
func (s *Server) keepLease(ctx context.Context) {
	c := s.cache
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
			lease, err := s.syncEvents(ctx)
			switch {
			case err != nil:
				s.metrics.leases.WithLabelValues("failed").Inc()
				s.log.DebugContext(ctx, "session cache lease not renewed", "err", err)
			case lease <= 0: // authsvc does not wait after ending sessions: no caching
				s.metrics.leases.WithLabelValues("refused").Inc()
				c.drop() // a lease from another replica is no longer to be trusted either
				wait = 10 * time.Second
			default:
				s.metrics.leases.WithLabelValues("granted").Inc()
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
func (s *Server) syncEvents(ctx context.Context) (time.Duration, error) {
	var id [12]byte
	_, _ = crand.Read(id[:])
	m := &marker{id: hex.EncodeToString(id[:]), seen: make(chan struct{})}
	s.marker.Store(m)
	defer s.marker.CompareAndSwap(m, nil)
	ctx, cancel := context.WithTimeout(ctx, s.cfg.AuthTimeout)
	defer cancel()
	resp, err := s.auth.SyncSessionEvents(ctx, &authv1.SyncSessionEventsRequest{Marker: m.id})
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

// endSession closes every socket of the session with 4401 and remembers that the
// session ended, for handshakes still in flight.
func (s *Server) endSession(id, reason string) {
	for _, c := range s.hub.end(id, reason) {
		c.Close(CloseSessionEnded, reason)
	}
}

// feedDownCheck is how often live sessions are re-validated while the event feed is
// down: authsvc may still answer ValidateSession (its pool works) while it cannot
// stream events, and sessions that end meanwhile must still close.
const feedDownCheck = 5 * time.Second

func (s *Server) checkWhileFeedDown(ctx context.Context) {
	tick := time.NewTicker(feedDownCheck)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if s.feed.Load() == 0 {
			s.revalidateAll(ctx)
		}
	}
}

// revalidateAll checks each live session once with authsvc, 8 at a time.
func (s *Server) revalidateAll(ctx context.Context) {
	conns := s.hub.sessions()
	work := make(chan *Conn)
	var wg sync.WaitGroup
	for range min(8, len(conns)) {
		wg.Go(func() {
			for c := range work {
				s.revalidate(ctx, c, 1)
			}
		})
	}
	for _, c := range conns {
		select {
		case work <- c:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
}

// revalidate ends c's session if authsvc no longer accepts it. Other errors are
// retried with backoff, up to attempts tries; after that the feed's next
// resubscription (or the periodic check while it is down) checks again. It uses ctx,
// not the connection's context: the check is for every socket of the session, and c
// itself may be closing.
func (s *Server) revalidate(ctx context.Context, c *Conn, attempts int) {
	backoff := 200 * time.Millisecond
	for i := 0; i < attempts; i++ {
		_, err := s.validate(ctx, c.token)
		switch status.Code(err) {
		case codes.OK:
			return
		case codes.Unauthenticated:
			s.endSession(c.session.ID, reasonOf(err))
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

// authError is what authsvc's google.rpc error details say about a failed call.
type authError struct {
	Reason   string            // ErrorInfo.reason; empty if authsvc sent none
	Metadata map[string]string // ErrorInfo.metadata
	Retry    time.Duration     // RetryInfo.retry_delay; 0 if none
}

// errorReason reads the ErrorInfo and RetryInfo details of a gRPC error.
func errorReason(err error) authError {
	var out authError
	for _, d := range status.Convert(err).Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			out.Reason, out.Metadata = d.GetReason(), d.GetMetadata()
		case *errdetails.RetryInfo:
			out.Retry = d.GetRetryDelay().AsDuration()
		}
	}
	return out
}

// reasonOf maps a ValidateSession refusal to a 4401 close reason.
func reasonOf(err error) string {
	e := errorReason(err)
	switch e.Reason {
	case "SESSION_REVOKED":
		r := e.Metadata["end_reason"]
		for _, known := range endReasons {
			if r == known {
				return r
			}
		}
		return "revoked"
	case "SESSION_EXPIRED":
		return "expired"
	case "USER_INACTIVE":
		return "user_disabled"
	}
	return "ended"
}
