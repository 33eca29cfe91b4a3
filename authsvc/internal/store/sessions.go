package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

const sessionCols = `s.id, s.user_id, s.created_at, s.expires_at, s.revoked_at, s.user_agent, s.client_address`

func sessionDest(s *Session) []any {
	return []any{&s.ID, &s.UserID, &s.CreatedAt, &s.ExpiresAt, &s.RevokedAt, &s.UserAgent, &s.ClientAddress}
}

// NewSession is what CreateSession stores.
type NewSession struct {
	ID            string
	TokenHash     []byte // SHA-256 of the token
	UserID        int64
	ExpiresAt     time.Time
	UserAgent     string
	ClientAddress string
	// MaxLive caps the user's live sessions, this one counted: older ones beyond it
	// end (session_limit). 0: no cap.
	MaxLive int
}

// CreateSession stores a new live session, but only while the user is active and
// still has the password hash the login verified. It returns ErrNotFound otherwise.
// With n.MaxLive > 0 it also ends, in the same statement, the user's oldest live
// sessions beyond MaxLive (the new one counted), with reason session_limit, and
// returns how many it ended.
//
// The user row is locked FOR NO KEY UPDATE: a deactivation or password change in
// progress makes the login wait and then see the new row (and fail), and one that
// starts after waits for the login to commit, so its end-the-sessions statement sees
// (and ends, with an event) the new session. Without the lock a session could be born
// after its user was deactivated, with no end event for caches to act on. Logins of
// one user take turns, so two at once cannot both stay under the cap.
func (s *Store) CreateSession(ctx context.Context, n NewSession, verifiedHash string) (Session, int, error) {
	var out Session
	var ended int
	err := s.pool.QueryRow(ctx, `
		WITH u AS (
			SELECT id FROM users WHERE id = $3 AND active AND password_hash = $7 FOR NO KEY UPDATE
		), ins AS (
			INSERT INTO sessions AS s (id, token_hash, user_id, expires_at, user_agent, client_address)
			SELECT $1, $2, u.id, $4, $5, $6 FROM u
			RETURNING `+sessionCols+`
		), over AS (
			UPDATE sessions SET revoked_at = now(), end_reason = 'session_limit'
			WHERE $8 > 0 AND id IN (
				SELECT id FROM sessions
				WHERE user_id = (SELECT id FROM u) AND revoked_at IS NULL AND expires_at > now()
				ORDER BY created_at DESC, id DESC
				OFFSET greatest($8 - 1, 0)
			)
			RETURNING 1
		)
		SELECT ins.*, (SELECT count(*) FROM over) FROM ins`,
		n.ID, n.TokenHash, n.UserID, n.ExpiresAt, n.UserAgent, n.ClientAddress, verifiedHash, n.MaxLive).Scan(append(sessionDest(&out), &ended)...)
	if err == pgx.ErrNoRows {
		return Session{}, 0, ErrNotFound
	}
	if err != nil {
		return Session{}, 0, fmt.Errorf("create session: %w", err)
	}
	return out, ended, nil
}

// ValidateSession returns the live session with the token hash and its user, in one
// indexed query. It returns ErrSessionUnknown, ErrSessionRevoked (wrapped with the
// end reason: "session revoked: logout"), ErrSessionExpired or ErrUserInactive when
// the session is not valid now.
func (s *Store) ValidateSession(ctx context.Context, tokenHash []byte) (User, Session, error) {
	var u User
	var sess Session
	var now time.Time
	var reason *string
	dest := append(sessionDest(&sess), &u.Username, &u.Active, &u.CreatedAt, &now, &reason)
	err := s.pool.QueryRow(ctx, `
		SELECT `+sessionCols+`, u.username, u.active, u.created_at, now(), s.end_reason
		FROM sessions s JOIN users u ON u.id = s.user_id
		WHERE s.token_hash = $1`, tokenHash).Scan(dest...)
	if err == pgx.ErrNoRows {
		return User{}, Session{}, ErrSessionUnknown
	}
	if err != nil {
		return User{}, Session{}, fmt.Errorf("validate session: %w", err)
	}
	u.ID = sess.UserID
	switch {
	case sess.RevokedAt != nil && reason != nil:
		return User{}, Session{}, &RevokedError{Reason: EndReason(*reason)}
	case sess.RevokedAt != nil:
		return User{}, Session{}, ErrSessionRevoked
	case !sess.ExpiresAt.After(now):
		return User{}, Session{}, ErrSessionExpired
	case !u.Active:
		return User{}, Session{}, ErrUserInactive
	}
	return u, sess, nil
}

// EndSessionByToken ends the session with the token hash (a logout). Ending an ended
// session succeeds. It returns ErrSessionUnknown if no session has the hash.
func (s *Store) EndSessionByToken(ctx context.Context, tokenHash []byte, reason EndReason) error {
	var id string
	err := s.pool.QueryRow(ctx, `
		WITH ended AS (
			UPDATE sessions SET revoked_at = now(), end_reason = $2
			WHERE token_hash = $1 AND revoked_at IS NULL
			RETURNING id)
		SELECT id FROM ended UNION ALL SELECT id FROM sessions WHERE token_hash = $1
		LIMIT 1`, tokenHash, string(reason)).Scan(&id)
	if err == pgx.ErrNoRows {
		return ErrSessionUnknown
	}
	if err != nil {
		return fmt.Errorf("end session: %w", err)
	}
	return nil
}

// RevokeSession ends the session with the id. Ending an ended session succeeds. It
// returns ErrNotFound if no session has the id.
func (s *Store) RevokeSession(ctx context.Context, id string, reason EndReason) error {
	var found string
	err := s.pool.QueryRow(ctx, `
		WITH ended AS (
			UPDATE sessions SET revoked_at = now(), end_reason = $2
			WHERE id = $1 AND revoked_at IS NULL
			RETURNING id)
		SELECT id FROM ended UNION ALL SELECT id FROM sessions WHERE id = $1
		LIMIT 1`, id, string(reason)).Scan(&found)
	if err != nil {
		return notFound(err)
	}
	return nil
}

// RevokeUserSessions ends every live session of the user and returns how many it
// ended. It returns ErrNotFound for an unknown user.
func (s *Store) RevokeUserSessions(ctx context.Context, userID int64, reason EndReason) (int64, error) {
	var n int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT true FROM users WHERE id = $1 FOR UPDATE`, userID).Scan(&exists); err != nil {
			return notFound(err)
		}
		var err error
		n, err = endUserSessions(ctx, tx, userID, reason)
		return err
	})
	return n, err
}

func endUserSessions(ctx context.Context, tx pgx.Tx, userID int64, reason EndReason) (int64, error) {
	tag, err := tx.Exec(ctx, `
		UPDATE sessions SET revoked_at = now(), end_reason = $2
		WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now()`, userID, string(reason))
	if err != nil {
		return 0, fmt.Errorf("end sessions of user %d: %w", userID, err)
	}
	return tag.RowsAffected(), nil
}

// SessionCursor is a position in a user's session list (newest first).
type SessionCursor struct {
	CreatedAt time.Time
	ID        string
}

// ListSessions returns at most limit live sessions of the user, newest first, after
// the cursor (nil for the first page). It returns ErrNotFound for an unknown user.
func (s *Store) ListSessions(ctx context.Context, userID int64, after *SessionCursor, limit int) ([]Session, error) {
	if _, err := s.GetUser(ctx, userID); err != nil {
		return nil, err
	}
	var rows pgx.Rows
	var err error
	const q = `SELECT ` + sessionCols + ` FROM sessions s
		WHERE s.user_id = $1 AND s.revoked_at IS NULL AND s.expires_at > now()`
	if after == nil {
		rows, err = s.pool.Query(ctx, q+` ORDER BY s.created_at DESC, s.id DESC LIMIT $2`, userID, limit)
	} else {
		rows, err = s.pool.Query(ctx, q+` AND (s.created_at, s.id) < ($3, $4)
			ORDER BY s.created_at DESC, s.id DESC LIMIT $2`, userID, limit, after.CreatedAt, after.ID)
	}
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Session, error) {
		var s Session
		err := r.Scan(sessionDest(&s)...)
		return s, err
	})
}

// DeleteExpired deletes sessions that expired before now minus keep, and login
// failure windows older than window. It returns how many sessions it deleted.
func (s *Store) DeleteExpired(ctx context.Context, keep, window time.Duration) (int64, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM sessions WHERE expires_at < now() - $1 * interval '1 millisecond'`, keep.Milliseconds())
	if err != nil {
		return 0, fmt.Errorf("delete expired sessions: %w", err)
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM login_failures WHERE window_start < now() - $1 * interval '1 millisecond'`, window.Milliseconds()); err != nil {
		return 0, fmt.Errorf("delete old login failures: %w", err)
	}
	return tag.RowsAffected(), nil
}
