package registry

import (
	"strings"
	"testing"
)

func TestNodeIDs(t *testing.T) {
	for id, ok := range map[string]bool{"edge-1": true, "a_b": true, strings.Repeat("x", 64): true,
		"": false, "a.b": false, "é": false, strings.Repeat("x", 65): false} {
		if ValidNodeID(id) != ok {
			t.Errorf("ValidNodeID(%q) = %v", id, !ok)
		}
	}
	if got := NodeID("host.example.com"); got != "host-example-com" {
		t.Errorf("NodeID cleans to %q", got)
	}
	a, b := NodeID(""), NodeID("")
	if !ValidNodeID(a) || a == b {
		t.Errorf("default node ids %q, %q: want valid and new at every start", a, b)
	}
	ids := NewIDs("edge-1")
	if x, y := ids.Next(), ids.Next(); x != "edge-1.1" || y != "edge-1.2" {
		t.Errorf("ids %q, %q", x, y)
	}
}
