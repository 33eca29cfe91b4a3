package e2e

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestTokenComparisonsConstantTime: no code in the repository compares a bearer token
// with ==, !=, === or !== (each leaks, through timing, how much of a guess is right):
// the services hash and compare in constant time, and so do the examples people copy.
func TestTokenComparisonsConstantTime(t *testing.T) {
	plain := regexp.MustCompile("(===|!==|==|!=)\\s*[`\"']Bearer |[`\"']Bearer [^`\"']*[`\"']\\s*\\+?\\s*\\w*\\s*(===|!==|==|!=)")
	checked := 0
	err := filepath.WalkDir("..", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "node_modules" || d.Name() == ".git" || d.Name() == "bin" || d.Name() == ".run" || d.Name() == "gen") {
			return filepath.SkipDir
		}
		if d.IsDir() || !(strings.HasSuffix(p, ".go") || strings.HasSuffix(p, ".js") || strings.HasSuffix(p, ".mjs")) || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		checked++
		for i, line := range strings.Split(string(b), "\n") {
			if plain.MatchString(line) {
				t.Errorf("%s:%d compares a token in variable time: %s", p, i+1, strings.TrimSpace(line))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 20 {
		t.Fatalf("checked %d files: the walk missed the repository", checked)
	}
	// The check finds what it looks for.
	for _, bad := range []string{"v[0] != \"Bearer \"+token", "md === `Bearer ${token}`"} {
		if !plain.MatchString(bad) {
			t.Fatalf("the check misses %q", bad)
		}
	}
}
