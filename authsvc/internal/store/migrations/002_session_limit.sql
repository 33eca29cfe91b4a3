-- A user's live sessions are capped (AUTHSVC_MAX_SESSIONS_PER_USER): a login past the
-- cap ends the oldest with this reason.
ALTER TABLE sessions DROP CONSTRAINT sessions_end_reason_check;
ALTER TABLE sessions ADD CONSTRAINT sessions_end_reason_check
    CHECK (end_reason IN ('logout', 'revoked', 'user_disabled', 'password_changed', 'session_limit'));
