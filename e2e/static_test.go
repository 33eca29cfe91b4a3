package e2e

import (
	"io/fs"
	"net/netip"
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

// TestManifestsKeepTheEdgesClosed: the Kubernetes settings serve metrics on a port of
// their own (the public one has none, so the Ingress needs no rule) and trust no
// broad range as proxies (anyone trusted names any client address).
func TestManifestsKeepTheEdgesClosed(t *testing.T) {
	b, err := os.ReadFile("../deploy/kubernetes/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^  (EDGESVC_\w+): "?([^"\n]*)"?$`).FindAllStringSubmatch(string(b), -1) {
		settings[m[1]] = m[2]
	}
	if settings["EDGESVC_METRICS_LISTEN"] == "" || settings["EDGESVC_METRICS_LISTEN"] == settings["EDGESVC_LISTEN"] {
		t.Errorf("config.yaml: EDGESVC_METRICS_LISTEN %q, want a port of its own", settings["EDGESVC_METRICS_LISTEN"])
	}
	for _, p := range strings.Split(settings["EDGESVC_TRUSTED_PROXIES"], ",") {
		if pfx, err := netip.ParsePrefix(strings.TrimSpace(p)); err == nil && pfx.Bits() < 24 {
			t.Errorf("config.yaml: EDGESVC_TRUSTED_PROXIES trusts %s: any pod there names any client", p)
		}
	}
	for _, f := range []string{"../deploy/haproxy.cfg", "../scripts/haproxy.cfg.sh"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "deny") && strings.Contains(string(b), "/metrics") && regexp.MustCompile(`(?m)^\s*http-request deny.*metrics`).Match(b) {
			t.Errorf("%s denies /metrics: a rule the edges no longer need (and /%%6Detrics passed it)", f)
		}
	}
}
