package edge

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc/status"

	"github.com/gatehouse/gatehouse/edgesvc/internal/auth"
)

// ReasonHeader carries the machine-readable reason of a refused request: authsvc's
// ErrorInfo reason (SESSION_EXPIRED, SESSION_REVOKED, …), the edge's own
// (NO_CREDENTIAL, ORIGIN_NOT_ALLOWED, WRONG_USER, NO_ROUTE, AUTH_UNAVAILABLE,
// SHUTTING_DOWN, CONSUMER_ERROR) or a consumer's Refusal.Reason.
const ReasonHeader = "Gatehouse-Reason"

// handshake authorises a WebSocket request and lets the consumer decide on it before
// upgrading it, so that every refusal is an HTTP status (see the handshake table in
// the README), then runs the connection.
func (s *Server) handshake(newConsumer func() Consumer, checkUser bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.face.OriginAllowed(r) {
			s.refuse(w, "forbidden_origin", http.StatusForbidden, "ORIGIN_NOT_ALLOWED", "origin not allowed")
			return
		}
		var pathUser int64
		if checkUser {
			var ok bool
			if pathUser, ok = parseUserID(r.PathValue("user_id")); !ok {
				s.refuse(w, "not_found", http.StatusNotFound, "NO_ROUTE", "no such route: user id must be a positive integer")
				return
			}
		}
		tok, ok := auth.Credential(r, s.face.CookieName(r))
		if !ok {
			s.refuse(w, "unauthenticated", http.StatusUnauthorized, "NO_CREDENTIAL", "sign in first: no session credential")
			return
		}
		feed := s.auth.Feed()
		user, sess, err := s.auth.Authorize(r.Context(), tok)
		if err != nil {
			switch code, reason := auth.Refusal(err); {
			case r.Context().Err() != nil: // the client went away; authsvc is not to blame
				s.metrics.Handshakes.WithLabelValues("canceled").Inc()
			case code == http.StatusUnauthorized:
				s.refuse(w, "unauthenticated", code, reason, "session not valid: "+status.Convert(err).Message())
			default:
				s.log.WarnContext(r.Context(), "ValidateSession failed", "code", status.Code(err).String(), "err", err)
				s.refuse(w, "unavailable", code, reason, "authentication service unavailable")
			}
			return
		}
		if checkUser && user.ID != pathUser {
			s.refuse(w, "forbidden_user", http.StatusForbidden, "WRONG_USER", "this socket belongs to another user")
			return
		}
		if !websocket.IsWebSocketUpgrade(r) {
			// Answered before the consumer hears of it (gorilla would answer the same).
			s.metrics.Handshakes.WithLabelValues("bad_request").Inc()
			http.Error(w, "not a WebSocket handshake: want Connection: Upgrade and Upgrade: websocket", http.StatusBadRequest)
			return
		}
		s.open(w, r, &Conn{
			srv: s, sock: s.rt.NewConn(), id: s.ids.Next(),
			user: user, session: sess, token: tok,
		}, newConsumer, feed)
	}
}

// refuseConnect answers a handshake the consumer's Connect refused with err.
func (s *Server) refuseConnect(w http.ResponseWriter, r *http.Request, err error) {
	var ref *Refusal
	switch {
	case errors.As(err, &ref):
		code, reason := ref.Status, ref.Reason
		if code < 400 || code > 599 {
			code = http.StatusForbidden
		}
		if reason == "" {
			reason = "REFUSED"
		}
		s.refuse(w, "refused", code, reason, ref.Message)
	case r.Context().Err() != nil:
		s.metrics.Handshakes.WithLabelValues("canceled").Inc()
	default:
		s.log.ErrorContext(r.Context(), "consumer failed to connect", "path", r.URL.Path, "err", err)
		s.refuse(w, "consumer_error", http.StatusInternalServerError, "CONSUMER_ERROR", "internal error")
	}
}

func (s *Server) refuse(w http.ResponseWriter, outcome string, code int, reason, msg string) {
	s.metrics.Handshakes.WithLabelValues(outcome).Inc()
	w.Header().Set(ReasonHeader, reason)
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="gatehouse"`)
	}
	http.Error(w, msg, code)
}

// parseUserID parses the {user_id} path segment: a positive decimal int64 with no
// sign and no leading zeros.
func parseUserID(s string) (int64, bool) {
	if s == "" || len(s) > 19 || s[0] == '0' {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, false
	}
	return id, true
}
