package store

import (
	"context"
	"fmt"
	"time"
)

// Attempts is a key's count of login attempts in its current window.
type Attempts struct {
	N       int       // including the attempt just counted
	ResetAt time.Time // when the window ends and the count starts again
}

// CountLoginAttempt counts one failure against each key, starting a new window for a
// key whose window is older than window, and returns each key's count including this
// attempt. It is one statement, so concurrent attempts each see a distinct count.
func (s *Store) CountLoginAttempt(ctx context.Context, keys []string, window time.Duration) (map[string]Attempts, error) {
	rows, err := s.pool.Query(ctx, `
		INSERT INTO login_failures AS f (key, failures, window_start)
		SELECT k, 1, now() FROM unnest($1::text[]) AS k
		ON CONFLICT (key) DO UPDATE SET
			failures = CASE WHEN f.window_start < now() - $2 * interval '1 millisecond' THEN 1 ELSE f.failures + 1 END,
			window_start = CASE WHEN f.window_start < now() - $2 * interval '1 millisecond' THEN now() ELSE f.window_start END
		RETURNING key, failures, window_start + $2 * interval '1 millisecond'`,
		keys, window.Milliseconds())
	if err != nil {
		return nil, fmt.Errorf("count login attempt: %w", err)
	}
	defer rows.Close()
	out := make(map[string]Attempts, len(keys))
	for rows.Next() {
		var k string
		var a Attempts
		if err := rows.Scan(&k, &a.N, &a.ResetAt); err != nil {
			return nil, err
		}
		out[k] = a
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count login attempt: %w", err)
	}
	return out, nil
}

// RefundLoginAttempt undoes CountLoginAttempt after a successful login: the failures
// under resetKey (the username at this address) are forgotten, and the attempt is
// taken back from each of others (the username's total, the address).
func (s *Store) RefundLoginAttempt(ctx context.Context, resetKey string, others ...string) error {
	_, err := s.pool.Exec(ctx, `
		WITH r AS (DELETE FROM login_failures WHERE key = $1)
		UPDATE login_failures SET failures = greatest(failures - 1, 0) WHERE key = ANY($2::text[])`, resetKey, others)
	if err != nil {
		return fmt.Errorf("refund login attempt: %w", err)
	}
	return nil
}
