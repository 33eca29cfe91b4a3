package edgeapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gatehouse/gatehouse/edgesvc/edge"
	edgev1 "github.com/gatehouse/gatehouse/gen/gatehouse/edge/v1"
)

// TestToStatus: every error the edge returns maps to one code and one reason, with
// ErrorInfo in the edge's domain, also when wrapped. The ones a single edge cannot
// produce (a layer call canceled, past its deadline, or failing) are checked here;
// the e2e suite checks the others through a real EdgeService.
func TestToStatus(t *testing.T) {
	s := &Service{log: slog.New(slog.DiscardHandler)}
	cases := []struct {
		err    error
		code   codes.Code
		reason string
	}{
		{edge.ErrInvalidTarget, codes.InvalidArgument, "INVALID_TARGET"},
		{edge.ErrInvalidGroup, codes.InvalidArgument, "INVALID_GROUP"},
		{edge.ErrInvalidCloseCode, codes.InvalidArgument, "INVALID_CLOSE_CODE"},
		{edge.ErrReasonTooLong, codes.InvalidArgument, "INVALID_CLOSE_REASON"},
		{edge.ErrPayloadTooLarge, codes.InvalidArgument, "PAYLOAD_TOO_LARGE"},
		{edge.ErrTooManyGroups, codes.ResourceExhausted, "TOO_MANY_GROUPS"},
		{edge.ErrInvalidPageSize, codes.InvalidArgument, "INVALID_PAGE_SIZE"},
		{errBadPageToken, codes.InvalidArgument, "INVALID_PAGE_TOKEN"},
		{fmt.Errorf("nats: %w", edge.ErrLayerUnavailable), codes.Unavailable, "LAYER_UNAVAILABLE"},
		{fmt.Errorf("layer: %w", context.Canceled), codes.Canceled, "CANCELED"},
		{fmt.Errorf("layer: %w", context.DeadlineExceeded), codes.DeadlineExceeded, "DEADLINE_EXCEEDED"},
		{errors.New("secret detail"), codes.Internal, "INTERNAL"},
	}
	// Every reason in the contract is produced: by this mapping, or by Auth.
	seen := map[string]bool{"API_TOKEN_REQUIRED": true, "API_TOKEN_INVALID": true, "API_DISABLED": true}
	for _, c := range cases {
		seen[c.reason] = true
	}
	for v := range edgev1.ErrorReason_name {
		if r := edgev1.ErrorReason(v); r != edgev1.ErrorReason_ERROR_REASON_UNSPECIFIED && !seen[r.Reason()] {
			t.Errorf("reason %s is in the contract but nothing returns it", r.Reason())
		}
	}
	for _, c := range cases {
		st := status.Convert(s.toStatus(context.Background(), c.err))
		var info *errdetails.ErrorInfo
		for _, d := range st.Details() {
			if i, ok := d.(*errdetails.ErrorInfo); ok {
				info = i
			}
		}
		if st.Code() != c.code || info == nil || info.GetReason() != c.reason || info.GetDomain() != ErrorDomain {
			t.Errorf("%v: %s %v, want %s with reason %s in %s", c.err, st.Code(), info, c.code, c.reason, ErrorDomain)
		}
		if c.code == codes.Internal && st.Message() != "internal error" {
			t.Errorf("an internal error's text reached the caller: %q", st.Message())
		}
	}
}
