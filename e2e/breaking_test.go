package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBreakingChangeFailsLint: `make lint` runs `make breaking`, which compares proto/
// with the released contract image. On a copy of the repository's contract files,
// the unchanged protos pass, and removing a field fails with buf naming it.
func TestBreakingChangeFailsLint(t *testing.T) {
	if _, err := os.Stat(filepath.Join(binDir, "buf")); err != nil {
		t.Fatalf("buf is not in %s: run `make tools` (make test does)", binDir)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	mk, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mk), "@$(MAKE) breaking") {
		t.Fatal("make lint no longer runs make breaking")
	}
	dir := t.TempDir()
	cp := exec.Command("cp", "-r", "proto", "third_party", "contract", "buf.yaml", "buf.gen.yaml", "Makefile", dir)
	cp.Dir = root
	if out, err := cp.CombinedOutput(); err != nil {
		t.Fatalf("copy: %v %s", err, out)
	}
	if err := os.Symlink(binDir, filepath.Join(dir, "bin")); err != nil {
		t.Fatal(err)
	}
	breaking := func() (string, error) {
		cmd := exec.CommandContext(t.Context(), "make", "-s", "breaking")
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := breaking(); err != nil {
		t.Fatalf("make breaking on the unchanged contract: %v\n%s", err, out)
	}

	types := filepath.Join(dir, "proto", "gatehouse", "auth", "v1", "types.proto")
	src, err := os.ReadFile(types)
	if err != nil {
		t.Fatal(err)
	}
	const field = "  string user_agent = 5;\n"
	if !strings.Contains(string(src), field) {
		t.Fatalf("types.proto no longer has %q; pick another field for this test", field)
	}
	if err := os.WriteFile(types, []byte(strings.Replace(string(src), field, "", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := breaking()
	if err == nil {
		t.Fatalf("make breaking passed after a field was removed:\n%s", out)
	}
	if !strings.Contains(out, `"user_agent"`) || !strings.Contains(out, "Session") {
		t.Fatalf("make breaking failed without naming the removed field:\n%s", out)
	}
}
