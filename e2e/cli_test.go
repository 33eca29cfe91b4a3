package e2e

import (
	"context"
	"net/url"
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
		{"authsvc -h", []string{"authsvc", "-h"}, nil, true, []string{"Usage: authsvc [command] [flags]", "migrate", "demo-user NAME", "-listen", "AUTHSVC_LOG_LEVEL"}},
		{"authsvc help", []string{"authsvc", "help"}, nil, true, []string{"Usage: authsvc"}},
		{"authsvc migrate -h", []string{"authsvc", "migrate", "-h"}, nil, true, []string{"Usage: authsvc"}},
		{"authsvc unknown command", []string{"authsvc", "bogus"}, nil, false, []string{`unknown command "bogus"`, "Usage: authsvc"}},
		{"authsvc bad flag", []string{"authsvc", "-no-such-flag"}, nil, false, []string{"flag provided but not defined: -no-such-flag"}},
		{"authsvc log level", []string{"authsvc"}, []string{"AUTHSVC_LOG_LEVEL=loud"}, false, []string{"AUTHSVC_LOG_LEVEL", `"loud" is not a log level`}},
		// A database that does not exist cannot come into being by waiting: at once.
		{"authsvc no such database", []string{"authsvc", "migrate"}, []string{"DATABASE_URL=" + noSuchDatabase(t)}, false,
			[]string{"does not exist", "createdb"}},
		{"authsvc bad database url", []string{"authsvc", "migrate"}, []string{"DATABASE_URL=mysql://nope"}, false, []string{"DATABASE_URL"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, filepath.Join(binDir, tc.args[0]), tc.args[1:]...)
			cmd.Env = append(os.Environ(), tc.env...)
			start := time.Now()
			out, err := cmd.CombinedOutput()
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("%v took %s: a command line or a database that cannot work must fail at once", tc.args, took)
			}
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

// noSuchDatabase is the test server's URL with a database name nobody made.
func noSuchDatabase(t *testing.T) string {
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/gatehouse_no_such_database"
	return u.String()
}
