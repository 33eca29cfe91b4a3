// Package edgeapi serves gatehouse.edge.v1.EdgeService for an edge.Server: the gRPC
// API through which services in any language push to signed-in users, manage groups,
// kick connections and ask who is connected. The edgesvc command serves it on
// EDGESVC_API_LISTEN; a Go program running its own edge can serve it the same way.
package edgeapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	edgev1 "github.com/gatehouse/gatehouse/gen/gatehouse/edge/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gatehouse/gatehouse/edgesvc/edge"
	"github.com/gatehouse/gatehouse/edgesvc/internal/layer"
)

// ErrorDomain is the google.rpc.ErrorInfo domain of every EdgeService error.
const ErrorDomain = "edge.gatehouse.dev"

// Service implements EdgeService over an edge.Server.
type Service struct {
	edgev1.UnimplementedEdgeServiceServer
	srv *edge.Server
	log *slog.Logger
}

// New returns the service for srv. Register it on a grpc.Server built with Auth.
func New(srv *edge.Server, log *slog.Logger) *Service {
	return &Service{srv: srv, log: log}
}

// Register adds the service to g.
func (s *Service) Register(g *grpc.Server) { edgev1.RegisterEdgeServiceServer(g, s) }

// Auth returns the server options that guard EdgeService: every call needs
// "authorization: Bearer <token>" (compared in constant time), or, when mtls is true,
// may instead come with a verified client certificate. With no token and no mTLS
// every call is refused (API_DISABLED). Other services on the same server (health,
// reflection) need no credential.
func Auth(token string, mtls bool) []grpc.ServerOption {
	a := &authn{mtls: mtls, set: token != ""}
	a.hash = sha256.Sum256([]byte(token))
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(a.unary), grpc.ChainStreamInterceptor(a.stream)}
}

type authn struct {
	set, mtls bool
	hash      [sha256.Size]byte
}

const servicePrefix = "/gatehouse.edge.v1.EdgeService/"

func (a *authn) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if strings.HasPrefix(info.FullMethod, servicePrefix) {
		if err := a.check(ctx); err != nil {
			return nil, err
		}
	}
	return h(ctx, req)
}

func (a *authn) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if strings.HasPrefix(info.FullMethod, servicePrefix) {
		if err := a.check(ss.Context()); err != nil {
			return err
		}
	}
	return h(srv, ss)
}

// check admits a call with the right bearer token, or with a verified client
// certificate under mTLS.
func (a *authn) check(ctx context.Context) error {
	if a.mtls {
		if p, ok := peer.FromContext(ctx); ok {
			if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 {
				return nil
			}
		}
	}
	if !a.set && a.mtls {
		return fail(codes.Unauthenticated, edgev1.ErrorReason_ERROR_REASON_API_TOKEN_REQUIRED,
			"a client certificate signed by the edge API's CA is required (the edge has no API token configured)")
	}
	if !a.set {
		return fail(codes.Unauthenticated, edgev1.ErrorReason_ERROR_REASON_API_DISABLED,
			"the edge API is disabled: the edge has no API token configured (set EDGESVC_API_TOKEN or EDGESVC_API_TOKEN_FILE)")
	}
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) != 1 {
		return fail(codes.Unauthenticated, edgev1.ErrorReason_ERROR_REASON_API_TOKEN_REQUIRED,
			"API token required: send metadata 'authorization: Bearer <api token>'")
	}
	scheme, tok, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return fail(codes.Unauthenticated, edgev1.ErrorReason_ERROR_REASON_API_TOKEN_REQUIRED,
			"API token required: send metadata 'authorization: Bearer <api token>'")
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	if subtle.ConstantTimeCompare(got[:], a.hash[:]) != 1 {
		return fail(codes.Unauthenticated, edgev1.ErrorReason_ERROR_REASON_API_TOKEN_INVALID, "invalid API token")
	}
	return nil
}

// fail returns a status error with an ErrorInfo detail.
func fail(code codes.Code, reason edgev1.ErrorReason, msg string) error {
	st, err := status.New(code, msg).WithDetails(&errdetails.ErrorInfo{Reason: reason.Reason(), Domain: ErrorDomain})
	if err != nil { // cannot happen: ErrorInfo is a registered message
		return status.Error(code, msg)
	}
	return st.Err()
}

// toStatus is the one mapping from the edge's errors to EdgeService statuses.
func (s *Service) toStatus(ctx context.Context, err error) error {
	type row struct {
		code   codes.Code
		reason edgev1.ErrorReason
	}
	for target, r := range map[error]row{
		edge.ErrInvalidTarget:    {codes.InvalidArgument, edgev1.ErrorReason_ERROR_REASON_INVALID_TARGET},
		edge.ErrInvalidGroup:     {codes.InvalidArgument, edgev1.ErrorReason_ERROR_REASON_INVALID_GROUP},
		edge.ErrInvalidCloseCode: {codes.InvalidArgument, edgev1.ErrorReason_ERROR_REASON_INVALID_CLOSE_CODE},
		edge.ErrReasonTooLong:    {codes.InvalidArgument, edgev1.ErrorReason_ERROR_REASON_INVALID_CLOSE_REASON},
		edge.ErrPayloadTooLarge:  {codes.InvalidArgument, edgev1.ErrorReason_ERROR_REASON_PAYLOAD_TOO_LARGE},
		edge.ErrTooManyGroups:    {codes.ResourceExhausted, edgev1.ErrorReason_ERROR_REASON_TOO_MANY_GROUPS},
		edge.ErrInvalidPageSize:  {codes.InvalidArgument, edgev1.ErrorReason_ERROR_REASON_INVALID_PAGE_SIZE},
		errBadPageToken:          {codes.InvalidArgument, edgev1.ErrorReason_ERROR_REASON_INVALID_PAGE_TOKEN},
		edge.ErrLayerUnavailable: {codes.Unavailable, edgev1.ErrorReason_ERROR_REASON_LAYER_UNAVAILABLE},
		context.Canceled:         {codes.Canceled, edgev1.ErrorReason_ERROR_REASON_CANCELED},
		context.DeadlineExceeded: {codes.DeadlineExceeded, edgev1.ErrorReason_ERROR_REASON_DEADLINE_EXCEEDED},
	} {
		if errors.Is(err, target) {
			return fail(r.code, r.reason, err.Error())
		}
	}
	s.log.ErrorContext(ctx, "edge API call failed", "err", err)
	return fail(codes.Internal, edgev1.ErrorReason_ERROR_REASON_INTERNAL, "internal error")
}

// target converts a request's target; nil is ErrInvalidTarget.
func target(t *edgev1.Target) (edge.Target, error) {
	switch v := t.GetTarget().(type) {
	case *edgev1.Target_UserId:
		return edge.ToUser(v.UserId), nil
	case *edgev1.Target_SessionId:
		return edge.ToSession(v.SessionId), nil
	case *edgev1.Target_ConnectionId:
		return edge.ToConnection(v.ConnectionId), nil
	case *edgev1.Target_Group:
		return edge.ToGroup(v.Group), nil
	}
	return edge.Target{}, edge.ErrInvalidTarget
}

// Send implements EdgeService.Send.
func (s *Service) Send(ctx context.Context, req *edgev1.SendRequest) (*edgev1.SendResponse, error) {
	ctx = layer.RequireAll(ctx) // with several edges: all of them, or UNAVAILABLE and nothing done
	to, err := target(req.GetTarget())
	if err == nil {
		switch p := req.GetPayload().(type) {
		case *edgev1.SendRequest_Binary:
			err = s.srv.SendBinary(ctx, to, p.Binary, req.GetExcludeConnectionIds()...)
		default: // text, including an empty or absent payload: an empty text message
			err = s.srv.Send(ctx, to, req.GetText(), req.GetExcludeConnectionIds()...)
		}
	}
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &edgev1.SendResponse{}, nil
}

// GroupAdd implements EdgeService.GroupAdd.
func (s *Service) GroupAdd(ctx context.Context, req *edgev1.GroupAddRequest) (*edgev1.GroupAddResponse, error) {
	ctx = layer.RequireAll(ctx) // with several edges: all of them, or UNAVAILABLE and nothing done
	to, err := target(req.GetTarget())
	if err == nil {
		err = s.srv.GroupAdd(ctx, req.GetGroup(), to)
	}
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &edgev1.GroupAddResponse{}, nil
}

// GroupDiscard implements EdgeService.GroupDiscard.
func (s *Service) GroupDiscard(ctx context.Context, req *edgev1.GroupDiscardRequest) (*edgev1.GroupDiscardResponse, error) {
	ctx = layer.RequireAll(ctx) // with several edges: all of them, or UNAVAILABLE and nothing done
	to, err := target(req.GetTarget())
	if err == nil {
		err = s.srv.GroupDiscard(ctx, req.GetGroup(), to)
	}
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &edgev1.GroupDiscardResponse{}, nil
}

// Disconnect implements EdgeService.Disconnect.
func (s *Service) Disconnect(ctx context.Context, req *edgev1.DisconnectRequest) (*edgev1.DisconnectResponse, error) {
	ctx = layer.RequireAll(ctx) // with several edges: all of them, or UNAVAILABLE and nothing done
	to, err := target(req.GetTarget())
	if err == nil {
		err = s.srv.Disconnect(ctx, to, int(req.GetCode()), req.GetReason())
	}
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	return &edgev1.DisconnectResponse{}, nil
}

// errBadPageToken: a page token that is not from a previous response to the same
// request.
var errBadPageToken = errors.New("page_token is not from a previous response to the same request")

// pageToken is what a page token carries: where the page ended, and which target it
// listed.
type pageToken struct {
	At     int64  `json:"t"` // ConnectedAt, unix ns
	ID     string `json:"i"`
	Target string `json:"f"`
}

// targetKey names a request's target, so a token is used only for the same one.
func targetKey(t *edgev1.Target) string {
	if t == nil {
		return ""
	}
	return fmt.Sprintf("%T:%v", t.GetTarget(), t.GetTarget())
}

// ListConnections implements EdgeService.ListConnections.
func (s *Service) ListConnections(ctx context.Context, req *edgev1.ListConnectionsRequest) (*edgev1.ListConnectionsResponse, error) {
	ctx = layer.RequireAll(ctx) // with several edges: all of them, or UNAVAILABLE and nothing done
	var to *edge.Target
	if req.GetTarget() != nil {
		t, err := target(req.GetTarget())
		if err != nil {
			return nil, s.toStatus(ctx, err)
		}
		to = &t
	}
	var after *edge.ConnectionInfo
	if tok := req.GetPageToken(); tok != "" {
		raw, err := base64.RawURLEncoding.DecodeString(tok)
		var pt pageToken
		if err != nil || json.Unmarshal(raw, &pt) != nil || pt.ID == "" || pt.Target != targetKey(req.GetTarget()) {
			return nil, s.toStatus(ctx, errBadPageToken)
		}
		after = &edge.ConnectionInfo{ID: pt.ID, ConnectedAt: time.Unix(0, pt.At)}
	}
	page, err := s.srv.ListConnections(ctx, to, after, int(req.GetPageSize()))
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	resp := &edgev1.ListConnectionsResponse{Partial: page.Partial}
	for _, c := range page.Connections {
		resp.Connections = append(resp.Connections, &edgev1.Connection{
			Id: c.ID, User: &edgev1.User{Id: c.User.ID, Username: c.User.Username}, SessionId: c.SessionID,
			Path: c.Path, Groups: c.Groups, ConnectedAt: timestamppb.New(c.ConnectedAt), Edge: c.Edge,
		})
	}
	if page.More && len(page.Connections) > 0 {
		last := page.Connections[len(page.Connections)-1]
		raw, _ := json.Marshal(pageToken{At: last.ConnectedAt.UnixNano(), ID: last.ID, Target: targetKey(req.GetTarget())})
		resp.NextPageToken = base64.RawURLEncoding.EncodeToString(raw)
	}
	return resp, nil
}

// GroupPresence implements EdgeService.GroupPresence.
func (s *Service) GroupPresence(ctx context.Context, req *edgev1.GroupPresenceRequest) (*edgev1.GroupPresenceResponse, error) {
	ctx = layer.RequireAll(ctx) // with several edges: all of them, or UNAVAILABLE and nothing done
	p, err := s.srv.GroupPresence(ctx, req.GetGroup())
	if err != nil {
		return nil, s.toStatus(ctx, err)
	}
	resp := &edgev1.GroupPresenceResponse{ConnectionCount: int32(p.Connections), Partial: p.Partial}
	for _, u := range p.Users {
		resp.Users = append(resp.Users, &edgev1.PresenceUser{Id: u.ID, Username: u.Username, ConnectionCount: int32(u.Connections)})
	}
	return resp, nil
}
