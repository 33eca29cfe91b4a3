package store

import (
	"context"
	"fmt"
	"time"
)

// CountLoginAttempt counts one failure against each key, starting a new window for a
// key whose window is older than window, and returns each key's count including this
// attempt. It is one statement, so concurrent attempts each see a distinct count.
func (s *Store) CountLoginAttempt(ctx context.Context, keys []string, window time.Duration) (map[string]int, error) {
	rows, err := s.pool.Query(ctx, `
		INSERT INTO login_failures AS f (key, failures, window_start)
		SELECT k, 1, now() FROM unnest($1::text[]) AS k
		ON CONFLICT (key) DO UPDATE SET
			failures = CASE WHEN f.window_start < now() - $2 * interval '1 millisecond' THEN 1 ELSE f.failures + 1 END,
			window_start = CASE WHEN f.window_start < now() - $2 * interval '1 millisecond' THEN now() ELSE f.window_start END
		RETURNING key, failures`,
		keys, window.Milliseconds())
	if err != nil {
		return nil, fmt.Errorf("count login attempt: %w", err)
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
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count login attempt: %w", err)
	}
	return out, nil
}

// RefundLoginAttempt undoes CountLoginAttempt after a successful login: the user's
// failures are forgotten, and the address's count drops by one.
func (s *Store) RefundLoginAttempt(ctx context.Context, userKey, addrKey string) error {
	_, err := s.pool.Exec(ctx, `
		WITH u AS (DELETE FROM login_failures WHERE key = $1)
		UPDATE login_failures SET failures = greatest(failures - 1, 0) WHERE key = $2`, userKey, addrKey)
	if err != nil {
		return fmt.Errorf("refund login attempt: %w", err)
	}
	return nil
}
