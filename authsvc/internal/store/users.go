package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

const userCols = `id, username, active, created_at`

func scanUser(row pgx.Row) (User, error) {
	var u User
	err := row.Scan(&u.ID, &u.Username, &u.Active, &u.CreatedAt)
	return u, err
}

// CreateUser inserts an active user. It returns ErrUsernameTaken if the username is
// taken in any letter case.
func (s *Store) CreateUser(ctx context.Context, username, passwordHash string) (User, error) {
	u, err := scanUser(s.pool.QueryRow(ctx,
		`INSERT INTO users (username, password_hash) VALUES ($1, $2) RETURNING `+userCols,
		username, passwordHash))
	if isUniqueViolation(err) {
		return User{}, ErrUsernameTaken
	}
	if err != nil {
		return User{}, fmt.Errorf("create user: %w", err)
	}
	return u, nil
}

// GetUser returns the user with the id, or ErrNotFound.
func (s *Store) GetUser(ctx context.Context, id int64) (User, error) {
	u, err := scanUser(s.pool.QueryRow(ctx, `SELECT `+userCols+` FROM users WHERE id = $1`, id))
	return u, notFound(err)
}

// UserForLogin returns the user whose username matches case-insensitively, with its
// password hash, or ErrNotFound.
func (s *Store) UserForLogin(ctx context.Context, username string) (User, string, error) {
	var u User
	var hash string
	err := s.pool.QueryRow(ctx,
		`SELECT `+userCols+`, password_hash FROM users WHERE lower(username) = lower($1)`, username).
		Scan(&u.ID, &u.Username, &u.Active, &u.CreatedAt, &hash)
	return u, hash, notFound(err)
}

// CountUsers returns how many users exist.
func (s *Store) CountUsers(ctx context.Context) (int64, error) {
	var n int64
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM users`).Scan(&n)
	return n, err
}

// ListUsers returns at most limit users with ids above afterID, in id order.
func (s *Store) ListUsers(ctx context.Context, afterID int64, limit int) ([]User, error) {
	rows, err := s.pool.Query(ctx,
		`SELECT `+userCols+` FROM users WHERE id > $1 ORDER BY id LIMIT $2`, afterID, limit)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (User, error) { return scanUser(r) })
}

// UpdatePasswordHash replaces the stored hash old with new without touching sessions
// (a rehash of the same password on login). It returns ErrNotFound if the user is gone
// or its hash is no longer old (the password changed meanwhile).
func (s *Store) UpdatePasswordHash(ctx context.Context, id int64, old, new string) error {
	tag, err := s.pool.Exec(ctx, `UPDATE users SET password_hash = $3, updated_at = now() WHERE id = $1 AND password_hash = $2`, id, old, new)
	if err != nil {
		return fmt.Errorf("update password hash: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// SetPassword replaces the user's password hash and ends all of the user's live
// sessions, in one transaction. It returns ErrNotFound for an unknown user.
func (s *Store) SetPassword(ctx context.Context, id int64, hash string) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1`, id, hash)
		if err != nil {
			return fmt.Errorf("set password: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return ErrNotFound
		}
		_, err = endUserSessions(ctx, tx, id, EndPasswordChanged)
		return err
	})
}

// SetUserActive sets the user's active flag; deactivating also ends all of the user's
// live sessions, in the same transaction. It returns ErrNotFound for an unknown user.
func (s *Store) SetUserActive(ctx context.Context, id int64, active bool) (User, error) {
	var u User
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		u, err = scanUser(tx.QueryRow(ctx,
			`UPDATE users SET active = $2, updated_at = now() WHERE id = $1 RETURNING `+userCols, id, active))
		if err != nil {
			return notFound(err)
		}
		if !active {
			_, err = endUserSessions(ctx, tx, id, EndUserDisabled)
		}
		return err
	})
	return u, err
}
