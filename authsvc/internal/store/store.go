// Package store keeps gatehouse's users, sessions and login failures in PostgreSQL
// through pgx. It knows nothing of gRPC: it returns the errors below, and the server
// package maps them to status codes in one place.
package store

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/tern/v2/migrate"
)

// Errors the store returns; callers compare with errors.Is.
var (
	ErrNotFound       = errors.New("not found")
	ErrUsernameTaken  = errors.New("username already taken")
	ErrSessionUnknown = errors.New("session unknown")
	ErrSessionExpired = errors.New("session expired")
	ErrSessionRevoked = errors.New("session revoked")
	ErrUserInactive   = errors.New("user inactive")
)

//go:embed migrations/*.sql
var migrations embed.FS

// RevokedError is ErrSessionRevoked with the reason the session ended.
type RevokedError struct{ Reason EndReason }

func (e *RevokedError) Error() string { return "session revoked: " + string(e.Reason) }

// Is makes errors.Is(err, ErrSessionRevoked) true.
func (e *RevokedError) Is(target error) bool { return target == ErrSessionRevoked }

// Store is the PostgreSQL store. It is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
}

// Open connects to the database at url and checks that it answers. It does not
// migrate; call Migrate.
func Open(ctx context.Context, url string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	return &Store{pool: pool}, nil
}

// Close closes every connection.
func (s *Store) Close() { s.pool.Close() }

// PoolStat returns a snapshot of the connection pool's counters (connections by
// state, acquires and their waits), for metrics.
func (s *Store) PoolStat() *pgxpool.Stat { return s.pool.Stat() }

// Ping returns an error if the database does not answer.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// Migrate applies pending migrations. tern holds a PostgreSQL advisory lock while it
// migrates, so replicas starting together apply each migration once.
func (s *Store) Migrate(ctx context.Context) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer conn.Release()
	m, err := migrate.NewMigrator(ctx, conn.Conn(), "gatehouse_schema_version")
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	files, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return err
	}
	if err := m.LoadMigrations(files); err != nil {
		return fmt.Errorf("migrate: load: %w", err)
	}
	if err := m.Migrate(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

// User is a row of users, without the password hash.
type User struct {
	ID        int64
	Username  string
	Active    bool
	CreatedAt time.Time
}

// Session is a row of sessions, without the token hash.
type Session struct {
	ID            string
	UserID        int64
	CreatedAt     time.Time
	ExpiresAt     time.Time
	RevokedAt     *time.Time
	UserAgent     string
	ClientAddress string
}

// EndReason is why a session ended, as stored in sessions.end_reason.
type EndReason string

// The reasons a session ends.
const (
	EndLogout          EndReason = "logout"
	EndRevoked         EndReason = "revoked"
	EndUserDisabled    EndReason = "user_disabled"
	EndPasswordChanged EndReason = "password_changed"
	EndSessionLimit    EndReason = "session_limit"
)

func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

func notFound(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	return err
}

// Exec runs one statement; for tests and maintenance.
func (s *Store) Exec(ctx context.Context, sql string, args ...any) error {
	_, err := s.pool.Exec(ctx, sql, args...)
	return err
}
