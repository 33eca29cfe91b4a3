package server

import (
	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Metrics are what the server counts; package metrics defines and registers them. A
// nil field is not counted, so a Server without SetMetrics counts nothing.
type Metrics struct {
	// Logins counts Login calls by outcome, one of LoginOutcomes.
	Logins *prometheus.CounterVec
	// RateLimited counts calls refused by a limit, by the limit: one of RateLimits.
	RateLimited *prometheus.CounterVec
}

// The outcomes of a Login, the values of Metrics.Logins' label.
const (
	loginOK           = "ok"
	loginInvalid      = "invalid_credentials" // wrong password, unknown or inactive user
	loginRateLimited  = "rate_limited"        // too many failures (RATE_LIMITED)
	loginBusy         = "busy"                // too many logins being checked (LOGINS_IN_PROGRESS)
	loginBadRequest   = "bad_request"         // INVALID_ARGUMENT
	loginError        = "error"               // anything else: the database down, the caller gone
	limitUserAddress  = "user_address"        // Config.MaxFailuresPerUser
	limitUser         = "user"                // Config.MaxFailuresPerUserTotal
	limitAddress      = "address"             // Config.MaxFailuresPerAddress
	limitLoginsAddr   = "logins_per_address"  // Config.MaxConcurrentLoginsPerAddress
	limitLoginsTotal  = "logins_total"        // Config.MaxConcurrentLogins
	limitStreamsAddr  = "event_streams_per_caller"
	limitStreamsTotal = "event_streams_total"
)

// LoginOutcomes are the values of the outcome label of Metrics.Logins.
var LoginOutcomes = []string{loginOK, loginInvalid, loginRateLimited, loginBusy, loginBadRequest, loginError}

// RateLimits are the values of the limit label of Metrics.RateLimited: the failed
// login limits per (username, address), per username and per address, the bounds on
// logins being checked at once per address and in total, and the bounds on
// WatchSessionEvents streams per caller and in total.
var RateLimits = []string{limitUserAddress, limitUser, limitAddress, limitLoginsAddr, limitLoginsTotal, limitStreamsAddr, limitStreamsTotal}

// SetMetrics makes s count into m. Call it before s serves.
func (s *Server) SetMetrics(m Metrics) { s.metrics = m }

// LoginsInProgress returns how many logins are being checked now (those counted
// against Config.MaxConcurrentLogins).
func (s *Server) LoginsInProgress() int { return s.logins.inProgress() }

// countLogin counts a Login that returned err.
func (s *Server) countLogin(err error) {
	if s.metrics.Logins != nil {
		s.metrics.Logins.WithLabelValues(loginOutcome(err)).Inc()
	}
}

// loginOutcome classifies what Login returned by its ErrorInfo reason.
func loginOutcome(err error) string {
	if err == nil {
		return loginOK
	}
	switch errorReason(err) {
	case authv1.ErrorReason_ERROR_REASON_INVALID_CREDENTIALS.Reason():
		return loginInvalid
	case authv1.ErrorReason_ERROR_REASON_RATE_LIMITED.Reason():
		return loginRateLimited
	case authv1.ErrorReason_ERROR_REASON_LOGINS_IN_PROGRESS.Reason():
		return loginBusy
	}
	if status.Code(err) == codes.InvalidArgument {
		return loginBadRequest
	}
	return loginError
}

// countLimit counts a call refused by the limit named (one of RateLimits).
func (s *Server) countLimit(name string) {
	if s.metrics.RateLimited != nil {
		s.metrics.RateLimited.WithLabelValues(name).Inc()
	}
}
