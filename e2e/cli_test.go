package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCommandLines: -h prints the usage and exits 0; a bad flag, a stray argument or
// a log level that is not one exits non-zero saying what is wrong.
func TestCommandLines(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		env    []string
		ok     bool
		output []string // each must appear
	}{
		{"edgesvc -h", []string{"edgesvc", "-h"}, nil, true, []string{"Usage: edgesvc [flags]", "-listen", "EDGESVC_LOG_LEVEL"}},
		{"edgesvc bad flag", []string{"edgesvc", "-no-such-flag"}, nil, false, []string{"flag provided but not defined: -no-such-flag", "Usage: edgesvc"}},
		{"edgesvc stray argument", []string{"edgesvc", "serve"}, nil, false, []string{`unexpected argument "serve"`}},
		{"edgesvc log level", []string{"edgesvc"}, []string{"EDGESVC_LOG_LEVEL=verbose"}, false, []string{"EDGESVC_LOG_LEVEL", `"verbose" is not a log level`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, filepath.Join(binDir, tc.args[0]), tc.args[1:]...)
			cmd.Env = append(os.Environ(), tc.env...)
			out, err := cmd.CombinedOutput()
			if (err == nil) != tc.ok {
				t.Fatalf("%v: exit %v, want success %v\n%s", tc.args, err, tc.ok, out)
			}
			for _, want := range tc.output {
				if !strings.Contains(string(out), want) {
					t.Errorf("%v printed no %q:\n%s", tc.args, want, out)
				}
			}
		})
	}
}
