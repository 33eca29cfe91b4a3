package server

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	"google.golang.org/grpc/codes"

	"github.com/gatehouse/gatehouse/authsvc/internal/store"
)

type adminServer struct {
	authv1.UnimplementedAdminServiceServer
	s *Server
}

const (
	minPassword     = 8
	defaultPageSize = 50
	maxPageSize     = 500
)

// ValidUsername returns an INVALID_ARGUMENT status unless name is 1 to 150
// characters of letters, digits and @.+-_ (Django's username rule).
func ValidUsername(name string) error {
	if name == "" || utf8.RuneCountInString(name) > maxUsername {
		return failf(codes.InvalidArgument, authv1.ErrorReason_ERROR_REASON_INVALID_USERNAME, "username must be 1 to %d characters", maxUsername)
	}
	for _, r := range name {
		if !unicode.IsLetter(r) && !unicode.IsDigit(r) && !strings.ContainsRune("@.+-_", r) {
			return failf(codes.InvalidArgument, authv1.ErrorReason_ERROR_REASON_INVALID_USERNAME, "username may contain only letters, digits and @.+-_ (found %q)", r)
		}
	}
	return nil
}

func validPassword(pw string) error {
	if len(pw) < minPassword || len(pw) > maxPassword {
		return failf(codes.InvalidArgument, authv1.ErrorReason_ERROR_REASON_INVALID_PASSWORD, "password must be %d to %d bytes", minPassword, maxPassword)
	}
	return nil
}

func validUserID(id int64) error {
	if id <= 0 {
		return failf(codes.InvalidArgument, authv1.ErrorReason_ERROR_REASON_INVALID_USER_ID, "user_id must be positive")
	}
	return nil
}

func pageSize(n int32) (int, error) {
	switch {
	case n < 0:
		return 0, failf(codes.InvalidArgument, authv1.ErrorReason_ERROR_REASON_INVALID_PAGE_SIZE, "page_size must not be negative")
	case n == 0:
		return defaultPageSize, nil
	case n > maxPageSize:
		return maxPageSize, nil
	}
	return int(n), nil
}

func (a *adminServer) CreateUser(ctx context.Context, req *authv1.CreateUserRequest) (*authv1.CreateUserResponse, error) {
	if err := ValidUsername(req.GetUsername()); err != nil {
		return nil, err
	}
	if err := validPassword(req.GetPassword()); err != nil {
		return nil, err
	}
	hash, err := a.s.hasher.Hash(ctx, req.GetPassword())
	if err != nil {
		return nil, toStatus(ctx, a.s.log, err)
	}
	u, err := a.s.store.CreateUser(ctx, req.GetUsername(), hash)
	if err != nil {
		return nil, toStatus(ctx, a.s.log, err)
	}
	a.s.log.InfoContext(ctx, "user created", "user_id", u.ID)
	return &authv1.CreateUserResponse{User: userPB(u)}, nil
}

func (a *adminServer) GetUser(ctx context.Context, req *authv1.GetUserRequest) (*authv1.GetUserResponse, error) {
	if err := validUserID(req.GetUserId()); err != nil {
		return nil, err
	}
	u, err := a.s.store.GetUser(ctx, req.GetUserId())
	if err != nil {
		return nil, toStatus(ctx, a.s.log, userErr(req.GetUserId(), err))
	}
	return &authv1.GetUserResponse{User: userPB(u)}, nil
}

func sessionNotFound(id string) error {
	return fail(codes.NotFound, authv1.ErrorReason_ERROR_REASON_SESSION_NOT_FOUND, 0, fmt.Sprintf("session %.64q not found", id), "session_id", id)
}

func (a *adminServer) ListUsers(ctx context.Context, req *authv1.ListUsersRequest) (*authv1.ListUsersResponse, error) {
	n, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	var after int64
	if t := req.GetPageToken(); t != "" {
		v, ok := decodePageToken(t, "users")
		if ok {
			after, err = strconv.ParseInt(v, 10, 64)
		}
		if !ok || err != nil || after < 0 {
			return nil, failf(codes.InvalidArgument, authv1.ErrorReason_ERROR_REASON_INVALID_PAGE_TOKEN, "invalid page_token: pass the next_page_token of a previous ListUsers response")
		}
	}
	users, err := a.s.store.ListUsers(ctx, after, n+1)
	if err != nil {
		return nil, toStatus(ctx, a.s.log, err)
	}
	resp := &authv1.ListUsersResponse{}
	if len(users) > n {
		users = users[:n]
		resp.NextPageToken = encodePageToken("users", strconv.FormatInt(users[n-1].ID, 10))
	}
	for _, u := range users {
		resp.Users = append(resp.Users, userPB(u))
	}
	return resp, nil
}

func (a *adminServer) SetPassword(ctx context.Context, req *authv1.SetPasswordRequest) (*authv1.SetPasswordResponse, error) {
	if err := validUserID(req.GetUserId()); err != nil {
		return nil, err
	}
	if err := validPassword(req.GetPassword()); err != nil {
		return nil, err
	}
	hash, err := a.s.hasher.Hash(ctx, req.GetPassword())
	if err != nil {
		return nil, toStatus(ctx, a.s.log, err)
	}
	if err := a.s.store.SetPassword(ctx, req.GetUserId(), hash); err != nil {
		return nil, toStatus(ctx, a.s.log, userErr(req.GetUserId(), err))
	}
	a.s.log.InfoContext(ctx, "password set", "user_id", req.GetUserId())
	a.s.ended(ctx)
	return &authv1.SetPasswordResponse{}, nil
}

func (a *adminServer) SetUserActive(ctx context.Context, req *authv1.SetUserActiveRequest) (*authv1.SetUserActiveResponse, error) {
	if err := validUserID(req.GetUserId()); err != nil {
		return nil, err
	}
	u, err := a.s.store.SetUserActive(ctx, req.GetUserId(), req.GetActive())
	if err != nil {
		return nil, toStatus(ctx, a.s.log, userErr(req.GetUserId(), err))
	}
	a.s.log.InfoContext(ctx, "user active set", "user_id", u.ID, "active", u.Active)
	if !u.Active {
		a.s.ended(ctx)
	}
	return &authv1.SetUserActiveResponse{User: userPB(u)}, nil
}

func (a *adminServer) ListSessions(ctx context.Context, req *authv1.ListSessionsRequest) (*authv1.ListSessionsResponse, error) {
	if err := validUserID(req.GetUserId()); err != nil {
		return nil, err
	}
	n, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	var after *store.SessionCursor
	if t := req.GetPageToken(); t != "" {
		after = sessionCursor(t, req.GetUserId())
		if after == nil {
			return nil, failf(codes.InvalidArgument, authv1.ErrorReason_ERROR_REASON_INVALID_PAGE_TOKEN,
				"invalid page_token: pass the next_page_token of a previous ListSessions response for the same user")
		}
	}
	sessions, err := a.s.store.ListSessions(ctx, req.GetUserId(), after, n+1)
	if err != nil {
		return nil, toStatus(ctx, a.s.log, userErr(req.GetUserId(), err))
	}
	resp := &authv1.ListSessionsResponse{}
	if len(sessions) > n {
		sessions = sessions[:n]
		last := sessions[n-1]
		resp.NextPageToken = encodePageToken("sessions",
			fmt.Sprintf("%d:%d:%s", req.GetUserId(), last.CreatedAt.UnixMicro(), last.ID))
	}
	for _, s := range sessions {
		resp.Sessions = append(resp.Sessions, sessionPB(s))
	}
	return resp, nil
}

// sessionCursor decodes a ListSessions page token, or returns nil if it is not one
// for userID.
func sessionCursor(tok string, userID int64) *store.SessionCursor {
	v, ok := decodePageToken(tok, "sessions")
	if !ok {
		return nil
	}
	parts := strings.SplitN(v, ":", 3)
	if len(parts) != 3 || parts[0] != strconv.FormatInt(userID, 10) || parts[2] == "" {
		return nil
	}
	us, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return nil
	}
	return &store.SessionCursor{CreatedAt: time.UnixMicro(us), ID: parts[2]}
}

func (a *adminServer) RevokeSession(ctx context.Context, req *authv1.RevokeSessionRequest) (*authv1.RevokeSessionResponse, error) {
	id := req.GetSessionId()
	if id == "" {
		return nil, failf(codes.InvalidArgument, authv1.ErrorReason_ERROR_REASON_SESSION_ID_REQUIRED, "session_id is required")
	}
	if len(id) > 64 {
		return nil, sessionNotFound(id)
	}
	if err := a.s.store.RevokeSession(ctx, id, store.EndRevoked); errors.Is(err, store.ErrNotFound) {
		return nil, sessionNotFound(id)
	} else if err != nil {
		return nil, toStatus(ctx, a.s.log, err)
	}
	a.s.log.InfoContext(ctx, "session revoked", "session_id", id)
	a.s.ended(ctx)
	return &authv1.RevokeSessionResponse{}, nil
}

func (a *adminServer) RevokeUserSessions(ctx context.Context, req *authv1.RevokeUserSessionsRequest) (*authv1.RevokeUserSessionsResponse, error) {
	if err := validUserID(req.GetUserId()); err != nil {
		return nil, err
	}
	n, err := a.s.store.RevokeUserSessions(ctx, req.GetUserId(), store.EndRevoked)
	if err != nil {
		return nil, toStatus(ctx, a.s.log, userErr(req.GetUserId(), err))
	}
	a.s.log.InfoContext(ctx, "user sessions revoked", "user_id", req.GetUserId(), "count", n)
	a.s.ended(ctx)
	return &authv1.RevokeUserSessionsResponse{RevokedCount: n}, nil
}

// Page tokens are opaque to clients: base64url of "<kind>:<position>". They carry no
// secret, so they need no signature; decoding checks the kind and the shape.
func encodePageToken(kind, pos string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(kind + ":" + pos))
}

func decodePageToken(tok, kind string) (string, bool) {
	b, err := base64.RawURLEncoding.Strict().DecodeString(tok)
	if err != nil || base64.RawURLEncoding.EncodeToString(b) != tok { // the decoder skips \r and \n
		return "", false
	}
	k, pos, ok := strings.Cut(string(b), ":")
	return pos, ok && k == kind && pos != ""
}
