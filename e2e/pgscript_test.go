package e2e

import (
	"context"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// The private PostgreSQL that `make run` and `make test` start when DATABASE_URL is
// unset (scripts/pg.sh). As root its server runs as the postgres user, which cannot
// enter a checkout below a private directory such as root's 0700 home; the cluster
// must work there too. These tests run the real script in fresh checkouts (a copy of
// scripts/, all the script reads) and query the cluster it starts.

// pgCheckout is a checkout holding scripts/pg.sh below a parent directory of the
// given mode, with its own TMPDIR (the "system temporary folder" the script may use).
type pgCheckout struct {
	dir, tmp string
}

func newPGCheckout(t *testing.T, parentMode, tmpMode os.FileMode) *pgCheckout {
	t.Helper()
	parent, err := os.MkdirTemp("", "gatehouse-pg-parent")
	if err != nil {
		t.Fatal(err)
	}
	tmp, err := os.MkdirTemp("", "gatehouse-pg-tmp")
	if err != nil {
		t.Fatal(err)
	}
	for dir, mode := range map[string]os.FileMode{parent: parentMode, tmp: tmpMode} {
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
	}
	c := &pgCheckout{dir: filepath.Join(parent, "gatehouse"), tmp: tmp}
	if err := os.MkdirAll(filepath.Join(c.dir, "scripts"), 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(filepath.Join("..", "scripts", "pg.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.dir, "scripts", "pg.sh"), src, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if out, err := c.run("clean"); err != nil {
			t.Errorf("pg.sh clean: %v\n%s", err, out)
		}
		os.RemoveAll(parent)
		os.RemoveAll(tmp)
	})
	return c
}

// run runs scripts/pg.sh with DATABASE_URL unset; it returns stdout, or stderr on
// failure.
func (c *pgCheckout) run(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(c.dir, "scripts", "pg.sh"), args...)
	cmd.Dir = c.dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DATABASE_URL=") && !strings.HasPrefix(kv, "TMPDIR=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "TMPDIR="+c.tmp)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return stderr.String(), err
	}
	return strings.TrimSpace(string(out)), nil
}

func (c *pgCheckout) start(t *testing.T) string {
	t.Helper()
	url, err := c.run()
	if err != nil {
		t.Fatalf("pg.sh start: %v\n%s", err, url)
	}
	return url
}

func (c *pgCheckout) clusterDir(t *testing.T) string {
	t.Helper()
	dir, err := c.run("dir")
	if err != nil {
		t.Fatalf("pg.sh dir: %v\n%s", err, dir)
	}
	return dir
}

// pgQuery connects to url and returns the database's name, or the error.
func pgQuery(url string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	var db string
	err = conn.QueryRow(ctx, "SELECT current_database()").Scan(&db)
	return db, err
}

func mustQuery(t *testing.T, url string) {
	t.Helper()
	db, err := pgQuery(url)
	if err != nil || db != "gatehouse" {
		t.Fatalf("query the private cluster at %s: %q, %v", url, db, err)
	}
}

// checkPrivateDir: dir is a real directory only the postgres user can enter.
func checkPrivateDir(t *testing.T, dir string) {
	t.Helper()
	pg, err := user.Lookup("postgres")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		t.Fatal(err)
	}
	uid := strconv.Itoa(int(fi.Sys().(*syscall.Stat_t).Uid))
	if !fi.IsDir() || fi.Mode().Perm() != 0o700 || uid != pg.Uid {
		t.Fatalf("%s: mode %v, owner uid %s; want a directory, 0700, owned by postgres (uid %s)", dir, fi.Mode(), uid, pg.Uid)
	}
}

func skipUnlessRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("runs only as root: as another user the private cluster is owned by that user, who can always reach its own checkout, so the case cannot arise")
	}
}

// TestPrivatePostgresCheckoutInPrivateDir: a checkout below a 0700 directory (root's
// home) gets its cluster in a fresh 0700 directory under TMPDIR owned by postgres,
// recorded in .run/pg-dir; it survives a stop, is re-created when its folder was
// cleared, is never shared with another checkout, and `pg.sh clean` removes it.
func TestPrivatePostgresCheckoutInPrivateDir(t *testing.T) {
	skipUnlessRoot(t)
	c := newPGCheckout(t, 0o700, 0o1777)
	url := c.start(t)
	mustQuery(t, url)
	dir := c.clusterDir(t)
	if !strings.HasPrefix(dir, filepath.Join(c.tmp, "gatehouse-pg.gatehouse.")) {
		t.Fatalf("cluster in %s; want a gatehouse-pg.gatehouse.* directory under TMPDIR %s", dir, c.tmp)
	}
	if !strings.Contains(url, "host="+dir+"&") {
		t.Fatalf("url %s does not name the socket directory %s", url, dir)
	}
	checkPrivateDir(t, dir)
	if rec, err := os.ReadFile(filepath.Join(c.dir, ".run", "pg-dir")); err != nil || strings.TrimSpace(string(rec)) != dir {
		t.Fatalf(".run/pg-dir: %q, %v; want %s", rec, err, dir)
	}

	// Stopped, it answers no more; started again, it is the same cluster.
	if out, err := c.run("stop"); err != nil {
		t.Fatalf("pg.sh stop: %v\n%s", err, out)
	}
	if _, err := pgQuery(url); err == nil {
		t.Fatal("the cluster still answers after pg.sh stop")
	}
	if again := c.start(t); again != url {
		t.Fatalf("restarted at %s; want the same cluster at %s", again, url)
	}
	mustQuery(t, url)

	// Another checkout of the same name never shares it.
	other := newPGCheckout(t, 0o700, 0o1777)
	other.tmp = c.tmp
	otherURL := other.start(t)
	mustQuery(t, otherURL)
	if otherDir := other.clusterDir(t); otherDir == dir {
		t.Fatalf("two checkouts share the cluster in %s", dir)
	}
	if out, err := other.run("clean"); err != nil {
		t.Fatalf("pg.sh clean: %v\n%s", err, out)
	}
	mustQuery(t, url)

	// Its folder cleared (as a reboot clears /tmp): a new one, a new cluster.
	if out, err := c.run("stop"); err != nil {
		t.Fatalf("pg.sh stop: %v\n%s", err, out)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	url = c.start(t)
	mustQuery(t, url)
	newDir := c.clusterDir(t)
	if newDir == dir {
		t.Fatalf("re-created in the same path %s; want a fresh mktemp directory", dir)
	}
	checkPrivateDir(t, newDir)

	// clean stops it and removes its folder and the record.
	if out, err := c.run("clean"); err != nil {
		t.Fatalf("pg.sh clean: %v\n%s", err, out)
	}
	if _, err := os.Lstat(newDir); !os.IsNotExist(err) {
		t.Fatalf("%s still exists after pg.sh clean (%v)", newDir, err)
	}
	if _, err := os.Lstat(filepath.Join(c.dir, ".run", "pg-dir")); !os.IsNotExist(err) {
		t.Fatalf(".run/pg-dir still exists after pg.sh clean (%v)", err)
	}
	if _, err := pgQuery(url); err == nil {
		t.Fatal("the cluster still answers after pg.sh clean")
	}
}

// TestPrivatePostgresCheckoutInOpenDir: where the postgres user can enter the
// checkout, the cluster stays in .run/pg (0700, so no other local user reaches its
// socket) and nothing is made under TMPDIR.
func TestPrivatePostgresCheckoutInOpenDir(t *testing.T) {
	skipUnlessRoot(t)
	c := newPGCheckout(t, 0o755, 0o1777)
	url := c.start(t)
	mustQuery(t, url)
	dir := c.clusterDir(t)
	if want := filepath.Join(c.dir, ".run", "pg"); dir != want {
		t.Fatalf("cluster in %s; want %s", dir, want)
	}
	checkPrivateDir(t, dir)
	if left, _ := os.ReadDir(c.tmp); len(left) != 0 {
		t.Fatalf("TMPDIR holds %v; want nothing", left)
	}
	if out, err := c.run("stop"); err != nil {
		t.Fatalf("pg.sh stop: %v\n%s", err, out)
	}
	if _, err := pgQuery(url); err == nil {
		t.Fatal("the cluster still answers after pg.sh stop")
	}
}

// TestPrivatePostgresNowhereToLive: when neither the checkout nor TMPDIR can be
// entered by the postgres user, pg.sh fails saying what it tried, why, and what to
// do, and leaves nothing behind.
func TestPrivatePostgresNowhereToLive(t *testing.T) {
	skipUnlessRoot(t)
	c := newPGCheckout(t, 0o700, 0o700)
	out, err := c.run()
	if err == nil {
		t.Fatalf("pg.sh start succeeded with nowhere to put the cluster: %s", out)
	}
	for _, want := range []string{"could not", "postgres user cannot enter", "TMPDIR", "DATABASE_URL="} {
		if !strings.Contains(out, want) {
			t.Errorf("the error does not say %q:\n%s", want, out)
		}
	}
	if left, _ := os.ReadDir(c.tmp); len(left) != 0 {
		t.Fatalf("TMPDIR holds %v after the failure; want nothing", left)
	}
}
