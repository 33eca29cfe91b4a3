package e2e

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	edgev1 "github.com/gatehouse/gatehouse/gen/gatehouse/edge/v1"
	"github.com/gorilla/websocket"

	"github.com/gatehouse/gatehouse/authsvc/pgtest"
)

var update = flag.Bool("update", false, "rewrite the outputs shown in README.md from a real run")

// A console block in the README: `<!-- grpcurl-test: MODE -->` followed by a
// ```console fence of `$ command` lines (a trailing backslash continues a command)
// each followed by the output it prints.
type consoleBlock struct {
	mode       string // plaintext, edge or mtls
	start, end int    // line range of the block body in the README
	steps      []consoleStep
}

type consoleStep struct {
	cmd  string   // as written, continuation lines joined with newlines
	want []string // output lines
}

var blockRE = regexp.MustCompile(`^<!-- grpcurl-test: (\w+) -->$`)

func parseConsoleBlocks(t *testing.T, lines []string) []consoleBlock {
	t.Helper()
	var blocks []consoleBlock
	for i := 0; i < len(lines); i++ {
		m := blockRE.FindStringSubmatch(lines[i])
		if m == nil {
			continue
		}
		if i+1 >= len(lines) || lines[i+1] != "```console" {
			t.Fatalf("README line %d: grpcurl-test marker not followed by ```console", i+1)
		}
		b := consoleBlock{mode: m[1], start: i + 2}
		j := b.start
		for ; j < len(lines) && lines[j] != "```"; j++ {
			line := lines[j]
			if cmd, ok := strings.CutPrefix(line, "$ "); ok {
				for strings.HasSuffix(cmd, `\`) && j+1 < len(lines) {
					j++
					cmd += "\n" + lines[j]
				}
				b.steps = append(b.steps, consoleStep{cmd: cmd})
				continue
			}
			if len(b.steps) == 0 {
				t.Fatalf("README line %d: output before the first command", j+1)
			}
			s := &b.steps[len(b.steps)-1]
			s.want = append(s.want, line)
		}
		b.end = j
		blocks = append(blocks, b)
		i = j
	}
	return blocks
}

// normalize hides what differs from run to run: times, tokens, ids, cursors, and the
// names of the users a block makes (alice- or bob- and its scratch directory's
// random suffix, so that every run of a block makes a new user). Numeric user ids are
// compared as they are: on a fresh database they do not vary, and a command aimed at
// the wrong user shows.
var normalizers = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`), "<TIME>"},
	{regexp.MustCompile(`"[A-Za-z0-9_-]{43}"`), `"<TOKEN>"`},
	{regexp.MustCompile(`\b[0-9a-f]{32}\b`), "<ID>"},
	{regexp.MustCompile(`("nextPageToken": )"[A-Za-z0-9_-]+"`), `$1"<PAGE>"`},
	{regexp.MustCompile(`127\.0\.0\.1:\d+`), "127.0.0.1:<PORT>"},
	{regexp.MustCompile(`\b(alice|bob)-[A-Za-z0-9]+\b`), "$1-<NAME>"},
}

func normalize(lines []string) string {
	s := strings.TrimRight(strings.Join(lines, "\n"), "\n ")
	for _, n := range normalizers {
		s = n.re.ReplaceAllString(s, n.with)
	}
	return s
}

// TestReadmeGrpcurl runs every grpcurl walkthrough in the README, command by command,
// with the pinned grpcurl against a real authsvc on a fresh database, and compares
// what each command prints with what the README shows. `go test -run
// TestReadmeGrpcurl -update` rewrites the README's outputs from a real run.
func TestReadmeGrpcurl(t *testing.T) {
	grpcurl := filepath.Join(binDir, "grpcurl")
	if _, err := os.Stat(grpcurl); err != nil {
		t.Fatalf("grpcurl is not in %s: run `make tools` (make test does)", binDir)
	}
	if _, err := exec.LookPath("jq"); err != nil {
		t.Fatal("the README walkthrough uses jq: install it (apt-get install jq; .ci/run does)")
	}
	readme := filepath.Join("..", "README.md")
	raw, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(raw), "\n")
	blocks := parseConsoleBlocks(t, lines)
	if len(blocks) < 2 {
		t.Fatalf("found %d grpcurl-test blocks in the README, want the plaintext and the mTLS walkthroughs", len(blocks))
	}
	covered := map[string]bool{}
	for bi := range blocks {
		b := &blocks[bi]
		t.Run(fmt.Sprintf("%s block at line %d", b.mode, b.start), func(t *testing.T) {
			dir, addrs, after := readmeWorld(t, b.mode)
			got := runConsole(t, dir, addrs, b.steps)
			// A reader runs the blocks in their checkout, again and again: scratch
			// files go to a `mktemp -d` directory or under .run/ (git-ignored).
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				if e.Name() != "bin" && e.Name() != ".run" {
					t.Errorf("the block wrote %s into the repository's root: put scratch files in a `mktemp -d` directory or under .run/", e.Name())
				}
			}
			for i, st := range b.steps {
				for _, m := range regexp.MustCompile(`gatehouse\.(auth|edge)\.v1\.\w+/(\w+)|grpc\.health\.v1\.Health/Check|\b(list|describe)\b`).FindAllString(st.cmd, -1) {
					covered[m] = true
				}
				if *update {
					b.steps[i].want = got[i]
					continue
				}
				if w, g := normalize(st.want), normalize(got[i]); w != g {
					t.Errorf("README command:\n$ %s\nprinted:\n%s\nthe README shows:\n%s", st.cmd, strings.Join(got[i], "\n"), strings.Join(st.want, "\n"))
				}
			}
			after(t)
		})
	}
	for _, m := range []string{"list", "describe", "grpc.health.v1.Health/Check",
		"AdminService/CreateUser", "AuthService/Login", "AuthService/ValidateSession", "AdminService/ListUsers",
		"AdminService/ListSessions", "AdminService/RevokeSession", "AdminService/RevokeUserSessions",
		"AdminService/SetPassword", "AdminService/SetUserActive", "AuthService/WatchSessionEvents",
		"EdgeService/Send", "EdgeService/GroupAdd", "EdgeService/GroupPresence", "EdgeService/ListConnections",
		"EdgeService/Disconnect"} {
		found := false
		for c := range covered {
			if strings.HasSuffix(c, m) {
				found = true
			}
		}
		if !found {
			t.Errorf("the README's grpcurl walkthrough does not show %s", m)
		}
	}
	if *update && !t.Failed() {
		// Others may have edited the README while the blocks ran: splice the new
		// outputs into it as it is now, provided the blocks' commands are unchanged.
		if raw, err = os.ReadFile(readme); err != nil {
			t.Fatal(err)
		}
		lines = strings.Split(string(raw), "\n")
		now := parseConsoleBlocks(t, lines)
		if len(now) != len(blocks) {
			t.Fatalf("README.md changed while the blocks ran (%d blocks, then %d): run -update again", len(blocks), len(now))
		}
		for bi := range now {
			if len(now[bi].steps) != len(blocks[bi].steps) {
				t.Fatalf("README.md's block at line %d changed while the blocks ran: run -update again", now[bi].start)
			}
			for i := range now[bi].steps {
				if now[bi].steps[i].cmd != blocks[bi].steps[i].cmd {
					t.Fatalf("README.md's block at line %d changed while the blocks ran: run -update again", now[bi].start)
				}
			}
			now[bi].steps = blocks[bi].steps
		}
		blocks = now
		var out []string
		last := 0
		for _, b := range blocks {
			out = append(out, lines[last:b.start]...)
			for _, st := range b.steps {
				out = append(out, "$ "+st.cmd)
				out = append(out, st.want...)
			}
			last = b.end
		}
		out = append(out, lines[last:]...)
		if err := os.WriteFile(readme, []byte(strings.Join(out, "\n")), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// readmeWorld sets up what the README assumes after `make run`: a working directory
// with bin/grpcurl, .run/admin-token and .run/frontend-token, a database whose first user is demo (id 1), and
// authsvc listening (with mTLS and .run/certs/ for the mtls block; for the edge block, an
// edge too, with .run/api-token, node id edge-1, and demo's page open in two tabs). It
// returns the directory, the README's addresses mapped to the real ones, and a check
// to run after the block.
func readmeWorld(t *testing.T, mode string) (string, map[string]string, func(*testing.T)) {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"bin", ".run"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(binDir, "grpcurl"), filepath.Join(dir, "bin", "grpcurl")); err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{"admin-token": adminToken, "frontend-token": frontToken} {
		if err := os.WriteFile(filepath.Join(dir, ".run", name), []byte(tok), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	db := pgtest.New(t)
	cmd := exec.CommandContext(t.Context(), filepath.Join(binDir, "authsvc"), "demo-user", "demo")
	cmd.Env = append(authEnv("127.0.0.1:0"), "DATABASE_URL="+db)
	cmd.Stdin = strings.NewReader("demo-password\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("demo-user: %v %s", err, out)
	}
	env := append(authEnv("127.0.0.1:0"), "DATABASE_URL="+db)
	if mode == "mtls" {
		c := filepath.Join(dir, ".run", "certs") // where the README's `scripts/devcerts.sh .run/certs` puts them
		script := exec.CommandContext(t.Context(), filepath.Join("..", "scripts", "devcerts.sh"), c)
		if out, err := script.CombinedOutput(); err != nil {
			t.Fatalf("scripts/devcerts.sh: %v %s", err, out)
		}
		env = append(env, "AUTHSVC_TLS_CERT="+filepath.Join(c, "server.pem"), "AUTHSVC_TLS_KEY="+filepath.Join(c, "server-key.pem"),
			"AUTHSVC_TLS_CLIENT_CA="+filepath.Join(c, "ca.pem"))
	}
	auth := start(t, "authsvc", env...)
	addrs := map[string]string{"127.0.0.1:50051": auth.addr}
	if mode != "edge" {
		return dir, addrs, func(*testing.T) {}
	}
	if err := os.WriteFile(filepath.Join(dir, ".run", "api-token"), []byte(apiToken), 0o600); err != nil {
		t.Fatal(err)
	}
	edge := startEdge(t, auth.addr, "EDGESVC_NODE_ID=edge-1")
	addrs["127.0.0.1:50052"] = edge.apiAddr(t)
	l, err := authv1.NewAuthServiceClient(dial(t, auth.addr)).Login(t.Context(), &authv1.LoginRequest{Username: "demo", Password: "demo-password"})
	if err != nil {
		t.Fatal(err)
	}
	waitReady(t, edge.addr)
	tabs := []*websocket.Conn{mustOpen(t, edge.addr, l), mustOpen(t, edge.addr, l)}
	return dir, addrs, func(t *testing.T) {
		// What the block did reached demo's page: the push, the room message, the kick.
		for _, ws := range tabs {
			readText(t, ws, "Hello from grpcurl")
			readText(t, ws, "Breaking news")
			expectClose(t, ws, 4001, "maintenance: back in 5 minutes", 5*time.Second)
		}
	}
}

// runConsole runs the steps in one bash, in dir, with the README's addresses
// replaced by the real ones (addrs), and returns each step's output lines (stdout and
// stderr). TMPDIR is a directory of the test's, so the blocks' `mktemp -d` scratch
// directories go away with it.
func runConsole(t *testing.T, dir string, addrs map[string]string, steps []consoleStep) [][]string {
	t.Helper()
	var script strings.Builder
	script.WriteString("exec 2>&1\n")
	for i, st := range steps {
		cmd := st.cmd
		for readme, real := range addrs {
			cmd = strings.ReplaceAll(cmd, readme, real)
		}
		fmt.Fprintf(&script, "%s\necho '@@step %d done'\n", cmd, i)
	}
	cmd := exec.CommandContext(t.Context(), "bash", "--noprofile", "--norc")
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(script.String())
	cmd.Env = append(os.Environ(), "PATH="+os.Getenv("PATH"), "TMPDIR="+t.TempDir())
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	got := make([][]string, len(steps))
	i := 0
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		if strings.HasPrefix(line, "@@step ") {
			i++
			continue
		}
		if i < len(got) {
			for readme, real := range addrs {
				line = strings.ReplaceAll(line, real, readme)
			}
			got[i] = append(got[i], line)
		}
	}
	if i != len(steps) {
		t.Fatalf("ran %d of %d steps:\n%s", i, len(steps), bytes.TrimSpace(out))
	}
	return got
}

// TestReadmeListsEveryErrorReason: every gatehouse.auth.v1 and gatehouse.edge.v1
// ErrorReason has a row in the README's error tables, spelled as it goes on the wire.
func TestReadmeListsEveryErrorReason(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for n := range authv1.ErrorReason_name {
		r := authv1.ErrorReason(n)
		if r == authv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
			continue
		}
		if !bytes.Contains(readme, []byte("| `"+r.Reason()+"` |")) {
			t.Errorf("README's error table has no row for %s (%s)", r.Reason(), r)
		}
	}
	for n := range edgev1.ErrorReason_name {
		r := edgev1.ErrorReason(n)
		if r != edgev1.ErrorReason_ERROR_REASON_UNSPECIFIED && !bytes.Contains(readme, []byte("`"+r.Reason()+"`")) {
			t.Errorf("README's edge API error table has no row for %s (%s)", r.Reason(), r)
		}
	}
}
