package socket

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestTruncateUTF8(t *testing.T) {
	long := strings.Repeat("é", 100) // 200 bytes
	got := truncateUTF8(long, 123)
	if len(got) > 123 || !utf8.ValidString(got) || len(got) != 122 {
		t.Fatalf("truncateUTF8 = %d bytes, valid %v", len(got), utf8.ValidString(got))
	}
	if truncateUTF8("short", 123) != "short" {
		t.Fatal("short reason changed")
	}
}
