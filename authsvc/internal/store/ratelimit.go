package store

import (
	"context"
	"fmt"
	"time"
)

// LoginFailures returns the failures counted for each key in its current window
// (keys with no window, or a window older than window, count 0).
func (s *Store) LoginFailures(ctx context.Context, keys []string, window time.Duration) (map[string]int, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT key, failures FROM login_failures
		WHERE key = ANY($1) AND window_start >= now() - $2 * interval '1 millisecond'`, keys, window.Milliseconds())
	if err != nil {
		return nil, fmt.Errorf("read login failures: %w", err)
	}
	defer rows.Close()
	out := make(map[string]int, len(keys))
	for rows.Next() {
		var k string
		var n int
		if err := rows.Scan(&k, &n); err != nil {
			return nil, err
		}
		out[k] = n
	}
	return out, rows.Err()
}

// RecordLoginFailure counts one failure against each key, starting a new window for a
// key whose window is older than window.
func (s *Store) RecordLoginFailure(ctx context.Context, keys []string, window time.Duration) error {
	_, err := s.pool.Exec(ctx, `
		INSERT INTO login_failures AS f (key, failures, window_start)
		SELECT k, 1, now() FROM unnest($1::text[]) AS k
		ON CONFLICT (key) DO UPDATE SET
			failures = CASE WHEN f.window_start < now() - $2 * interval '1 millisecond' THEN 1 ELSE f.failures + 1 END,
			window_start = CASE WHEN f.window_start < now() - $2 * interval '1 millisecond' THEN now() ELSE f.window_start END`,
		keys, window.Milliseconds())
	if err != nil {
		return fmt.Errorf("record login failure: %w", err)
	}
	return nil
}

// ClearLoginFailures forgets the failures counted against key.
func (s *Store) ClearLoginFailures(ctx context.Context, key string) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM login_failures WHERE key = $1`, key)
	return err
}
