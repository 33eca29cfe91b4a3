package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gatehouse/gatehouse/authsvc/internal/sessionevents"
	"github.com/gatehouse/gatehouse/authsvc/internal/store"
)

type authServer struct {
	authv1.UnimplementedAuthServiceServer
	s *Server
}

const (
	maxUsername  = 150  // characters, as Django's username field
	maxPassword  = 1024 // bytes
	maxToken     = 256  // bytes; real tokens are 43
	maxUserAgent = 512  // characters kept on the session
)

var errBadCredentials = failf(codes.Unauthenticated, authv1.ErrorReason_ERROR_REASON_INVALID_CREDENTIALS, "invalid username or password")

func (a *authServer) Login(ctx context.Context, req *authv1.LoginRequest) (_ *authv1.LoginResponse, err error) {
	s := a.s
	defer func() { s.countLogin(err) }()
	if req.GetUsername() == "" || req.GetPassword() == "" {
		return nil, failf(codes.InvalidArgument, authv1.ErrorReason_ERROR_REASON_CREDENTIALS_REQUIRED, "username and password are required")
	}
	if utf8.RuneCountInString(req.GetUsername()) > maxUsername || len(req.GetPassword()) > maxPassword {
		return nil, failf(codes.InvalidArgument, authv1.ErrorReason_ERROR_REASON_CREDENTIALS_TOO_LONG,
			"username longer than %d characters or password longer than %d bytes", maxUsername, maxPassword)
	}
	// No username holds a control character (ValidUsername); PostgreSQL refuses a NUL
	// in text, so one must not get that far.
	if strings.ContainsFunc(req.GetUsername(), unicode.IsControl) {
		return nil, failf(codes.InvalidArgument, authv1.ErrorReason_ERROR_REASON_INVALID_USERNAME, "username contains a control character")
	}
	addr, err := clientAddress(ctx, req.GetClientAddress())
	if err != nil {
		return nil, err
	}
	addrKey := addressKey(addr)
	// Each login costs a password hash, whatever the username: bound how many are
	// checked at once from one address and in total, answering the rest at once.
	leave, over := s.logins.take(addrKey)
	switch over {
	case overKey:
		s.countLimit(limitLoginsAddr)
		return nil, fail(codes.ResourceExhausted, authv1.ErrorReason_ERROR_REASON_LOGINS_IN_PROGRESS, time.Second,
			"too many logins from this address are being checked at once; try again in a second")
	case overTotal:
		s.countLimit(limitLoginsTotal)
		return nil, fail(codes.ResourceExhausted, authv1.ErrorReason_ERROR_REASON_LOGINS_IN_PROGRESS, time.Second,
			"too many logins are being checked at once; try again in a second")
	}
	defer leave()
	// Failures are counted per (username, address), per address, and per username
	// from all addresses (a far higher limit): guesses from one address lock the
	// username out there, not for its owner elsewhere.
	userKey := "user:" + strings.ToLower(req.GetUsername())
	pairKey := userKey + "|" + addrKey
	keys := []string{pairKey, userKey}
	if addr != "" {
		keys = append(keys, addrKey)
	}
	// Count this attempt as a failure before checking the password, in one statement,
	// so concurrent guesses cannot all slip under the limit; a success refunds it.
	counts, err := s.store.CountLoginAttempt(ctx, keys, s.cfg.FailureWindow)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	// The refusal names the limit that resets last (on a tie, the narrowest): waiting
	// for it is waiting for them all.
	var resetAt time.Time
	var hit string
	for _, l := range []struct {
		key, name string
		max       int
	}{
		{pairKey, limitUserAddress, s.cfg.MaxFailuresPerUser},
		{userKey, limitUser, s.cfg.MaxFailuresPerUserTotal},
		{addrKey, limitAddress, s.cfg.MaxFailuresPerAddress},
	} {
		if c, ok := counts[l.key]; ok && l.max > 0 && c.N > l.max && c.ResetAt.After(resetAt) {
			resetAt, hit = c.ResetAt, l.name
		}
	}
	if !resetAt.IsZero() {
		s.countLimit(hit)
		wait := max(time.Until(resetAt).Round(time.Second), time.Second)
		return nil, fail(codes.ResourceExhausted, authv1.ErrorReason_ERROR_REASON_RATE_LIMITED, wait,
			fmt.Sprintf("too many failed logins; try again in %s", wait))
	}

	user, hash, err := s.store.UserForLogin(ctx, req.GetUsername())
	ok := false
	switch {
	case errors.Is(err, store.ErrNotFound):
		// Spend the same time as a real check, so timing does not reveal which
		// usernames exist.
		if err := s.hasher.VerifyNothing(ctx, req.GetPassword()); err != nil {
			return nil, toStatus(ctx, s.log, err)
		}
	case err != nil:
		return nil, toStatus(ctx, s.log, err)
	default:
		ok, err = s.hasher.Verify(ctx, hash, req.GetPassword())
		if err != nil && ctx.Err() != nil {
			return nil, toStatus(ctx, s.log, err)
		}
		if err != nil {
			s.log.ErrorContext(ctx, "stored password hash unreadable", "user_id", user.ID, "err", err)
		}
		ok = ok && err == nil && user.Active
	}
	if !ok {
		return nil, errBadCredentials
	}

	tok, tokHash := newToken()
	ua := userAgent(ctx, req.GetUserAgent())
	ua = strings.Map(func(r rune) rune { // kept for people to read: no NUL, no escapes
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, ua)
	if utf8.RuneCountInString(ua) > maxUserAgent {
		ua = string([]rune(ua)[:maxUserAgent])
	}
	// The session is created only if the user is still active with the hash that was
	// verified: a password change or deactivation racing this login wins.
	sess, ended, err := s.store.CreateSession(ctx, store.NewSession{
		ID: newSessionID(), TokenHash: tokHash, UserID: user.ID,
		ExpiresAt: time.Now().Add(s.cfg.SessionTTL), UserAgent: strings.ToValidUTF8(ua, ""), ClientAddress: addr,
		MaxLive: max(s.cfg.MaxSessionsPerUser, 0),
	}, hash)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errBadCredentials
	}
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	if err := s.store.RefundLoginAttempt(ctx, pairKey, userKey, addrKey); err != nil {
		s.log.WarnContext(ctx, "refund login attempt", "err", err)
	}
	if s.hasher.NeedsRehash(hash) {
		if newHash, err := s.hasher.Hash(ctx, req.GetPassword()); err == nil {
			if err := s.store.UpdatePasswordHash(ctx, user.ID, hash, newHash); err != nil {
				s.log.WarnContext(ctx, "rehash password", "user_id", user.ID, "err", err)
			}
		}
	}
	s.log.InfoContext(ctx, "login", "user_id", user.ID, "session_id", sess.ID)
	if ended > 0 {
		s.log.InfoContext(ctx, "oldest sessions ended: over the limit per user", "user_id", user.ID, "count", ended, "limit", s.cfg.MaxSessionsPerUser)
		s.ended(ctx) // like every call that ends sessions: none is accepted from a cache after it returns
	}
	return &authv1.LoginResponse{Token: tok, Session: sessionPB(sess), User: userPB(user)}, nil
}

// userAgent is the user agent recorded on a session: the end client's, as a front end
// names it, else the caller's own gRPC user-agent.
func userAgent(ctx context.Context, given string) string {
	if isFrontEnd(ctx) {
		return given
	}
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("user-agent"); len(v) > 0 {
		return v[0]
	}
	return ""
}

func tokenHash(tok string) ([]byte, error) {
	if tok == "" {
		return nil, failf(codes.Unauthenticated, authv1.ErrorReason_ERROR_REASON_TOKEN_REQUIRED, "session token required")
	}
	if len(tok) > maxToken {
		return nil, failf(codes.Unauthenticated, authv1.ErrorReason_ERROR_REASON_SESSION_UNKNOWN, "session unknown")
	}
	return HashToken(tok), nil
}

func (a *authServer) ValidateSession(ctx context.Context, req *authv1.ValidateSessionRequest) (*authv1.ValidateSessionResponse, error) {
	h, err := tokenHash(req.GetToken())
	if err != nil {
		return nil, err
	}
	u, sess, err := a.s.store.ValidateSession(ctx, h)
	if err != nil {
		return nil, toStatus(ctx, a.s.log, err)
	}
	return &authv1.ValidateSessionResponse{User: userPB(u), Session: sessionPB(sess)}, nil
}

func (a *authServer) Logout(ctx context.Context, req *authv1.LogoutRequest) (*authv1.LogoutResponse, error) {
	h, err := tokenHash(req.GetToken())
	if err != nil {
		return nil, err
	}
	if err := a.s.store.EndSessionByToken(ctx, h, store.EndLogout); err != nil {
		return nil, toStatus(ctx, a.s.log, err)
	}
	a.s.ended(ctx)
	return &authv1.LogoutResponse{}, nil
}

// maxMarker bounds SyncSessionEvents markers; PostgreSQL's NOTIFY payload limit is
// far above it.
const maxMarker = 64

func (a *authServer) SyncSessionEvents(ctx context.Context, req *authv1.SyncSessionEventsRequest) (*authv1.SyncSessionEventsResponse, error) {
	if m := req.GetMarker(); m == "" || len(m) > maxMarker {
		return nil, failf(codes.InvalidArgument, authv1.ErrorReason_ERROR_REASON_MARKER_INVALID, "marker must be 1 to %d bytes", maxMarker)
	}
	if err := a.s.store.Mark(ctx, req.GetMarker()); err != nil {
		return nil, toStatus(ctx, a.s.log, err)
	}
	return &authv1.SyncSessionEventsResponse{CacheLease: durationpb.New(a.s.cfg.CacheLease)}, nil
}

func (a *authServer) WatchSessionEvents(req *authv1.WatchSessionEventsRequest, stream grpc.ServerStreamingServer[authv1.WatchSessionEventsResponse]) error {
	ctx := stream.Context()
	closeStream, over := a.s.streams.take(peerHost(ctx))
	switch over {
	case overTotal:
		a.s.countLimit(limitStreamsTotal)
		return fail(codes.ResourceExhausted, authv1.ErrorReason_ERROR_REASON_TOO_MANY_STREAMS, 5*time.Second,
			"authsvc serves as many session event streams as it may (AUTHSVC_MAX_EVENT_STREAMS); retry later")
	case overKey:
		a.s.countLimit(limitStreamsAddr)
		return fail(codes.ResourceExhausted, authv1.ErrorReason_ERROR_REASON_TOO_MANY_STREAMS, 5*time.Second,
			"this caller has as many session event streams open as it may (AUTHSVC_MAX_EVENT_STREAMS_PER_CALLER); close one first")
	}
	defer closeStream()
	// While the feed is not connected to the database the subscription waits for it
	// (no headers yet), so that it goes live, and the caller re-checks what it holds,
	// the moment the feed is back rather than after a retry backoff.
	sub, err := a.s.events.Subscribe(ctx, req.GetIncludeMarkers())
	if errors.Is(err, sessionevents.ErrStopped) {
		return failf(codes.Unavailable, authv1.ErrorReason_ERROR_REASON_EVENTS_MISSED,
			"authsvc is shutting down: subscribe again (to another replica)")
	}
	if err != nil {
		return toStatus(ctx, a.s.log, err) // CANCELED or DEADLINE_EXCEEDED
	}
	defer a.s.events.Unsubscribe(sub)
	// Headers tell the client the subscription is live: any session that ends from
	// here on reaches it.
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	for {
		select {
		case <-sub.Ready():
			for _, ev := range sub.Take() {
				msg := &authv1.WatchSessionEventsResponse{Marker: ev.Marker}
				if ev.Marker == "" {
					msg = &authv1.WatchSessionEventsResponse{
						SessionId: ev.SessionID, UserId: ev.UserID,
						Reason: reasonPB[ev.Reason], EndedAt: timestamppb.New(ev.EndedAt),
					}
				}
				if err := stream.Send(msg); err != nil {
					return err
				}
			}
		case <-sub.Lost():
			return failf(codes.Unavailable, authv1.ErrorReason_ERROR_REASON_EVENTS_MISSED,
				"session event feed interrupted; events may have been missed: re-check held sessions and subscribe again")
		case <-ctx.Done():
			return toStatus(ctx, a.s.log, ctx.Err()) // CANCELED or DEADLINE_EXCEEDED
		}
	}
}
