// This file is written by hand (make generate keeps it): the one place that turns an
// ErrorReason into the google.rpc.ErrorInfo reason on the wire, for the edge API and its
// clients alike.

package edgev1

import "strings"

// Reason returns r as google.rpc.ErrorInfo.reason carries it: its name without the
// ERROR_REASON_ prefix, such as "INVALID_TARGET". An unknown value gives its number.
func (r ErrorReason) Reason() string {
	return strings.TrimPrefix(r.String(), "ERROR_REASON_")
}
