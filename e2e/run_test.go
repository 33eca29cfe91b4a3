package e2e

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/authsvc/pgtest"
)

// TestMakeRun: scripts/run.sh (make run) as a newcomer meets it, in a copy of the
// checkout's layout: the banner's grpcurl line works as printed, each log line says
// which service wrote it, a second run says which process holds the ports instead of
// starting, Ctrl-C stops both services, and a database that does not exist stops it
// at once, saying so.
func TestMakeRun(t *testing.T) {
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "scripts"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"run.sh", "common.sh", "pg.sh"} {
		b, err := os.ReadFile(filepath.Join("..", "scripts", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "scripts", f), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	abs, err := filepath.Abs(binDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(abs, filepath.Join(root, "bin")); err != nil {
		t.Fatal(err)
	}
	auth, edge, api, metrics, edgeMetrics := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	env := append(os.Environ(), "AUTHSVC_LISTEN="+auth, "EDGESVC_LISTEN="+edge, "EDGESVC_API_LISTEN="+api,
		"AUTHSVC_METRICS_LISTEN="+metrics, "EDGESVC_METRICS_LISTEN="+edgeMetrics, "AUTHSVC_ARGON2_MEMORY_KIB=1024", "AUTHSVC_ARGON2_TIME=1")
	script := func(db string) (*exec.Cmd, *lockedWriter) {
		cmd := exec.Command("bash", filepath.Join(root, "scripts", "run.sh"))
		cmd.Env = append(env, "DATABASE_URL="+db)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		out := &lockedWriter{&sync.Mutex{}, &strings.Builder{}}
		cmd.Stdout, cmd.Stderr = out, out
		return cmd, out
	}
	text := func(w *lockedWriter) string { w.mu.Lock(); defer w.mu.Unlock(); return w.b.String() }

	first, out := script(pgtest.New(t))
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- first.Wait() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-first.Process.Pid, syscall.SIGKILL)
		if t.Failed() {
			t.Logf("--- make run ---\n%s", text(out))
		}
	})
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(text(out), "gatehouse is running"); time.Sleep(100 * time.Millisecond) {
		select {
		case err := <-exited:
			t.Fatalf("run.sh exited before its banner: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no banner within 60 s")
		}
	}
	log := text(out)
	for _, want := range []string{"authsvc  | ", "edgesvc  | ", "http://" + edge + "/", "http://" + metrics + "/metrics", "http://" + edgeMetrics + "/metrics"} {
		if !strings.Contains(log, want) {
			t.Errorf("make run printed no %q", want)
		}
	}
	line := regexp.MustCompile(`grpcurl    (bin/grpcurl .*)`).FindStringSubmatch(log)
	if line == nil {
		t.Fatal("the banner has no grpcurl line that runs bin/grpcurl")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	g := exec.CommandContext(ctx, "bash", "-c", line[1])
	g.Dir = root
	if got, err := g.CombinedOutput(); err != nil || !bytes.Contains(got, []byte("gatehouse.auth.v1.AdminService")) {
		t.Errorf("the banner's grpcurl line, run as printed: %v\n%s", err, got)
	}

	// A second make run: refused, saying what holds the ports.
	second, out2 := script(pgtest.New(t))
	start := time.Now()
	if err := second.Run(); err == nil {
		t.Fatalf("a second make run succeeded:\n%s", text(out2))
	}
	if msg := text(out2); !strings.Contains(msg, auth+" is already in use") || strings.Contains(msg, "gatehouse is running") || time.Since(start) > 10*time.Second {
		t.Errorf("a second make run said:\n%s\nwant the busy ports named, at once and without a banner", msg)
	}

	// Ctrl-C stops both services.
	if err := syscall.Kill(-first.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		t.Fatal("make run did not stop within 20 s of Ctrl-C")
	}
	waitFree(t, auth, edge)

	// A database that does not exist: the reason, at once.
	third, out3 := script(noSuchDatabase(t))
	start = time.Now()
	if err := third.Run(); err == nil {
		t.Fatalf("make run on a database that does not exist succeeded:\n%s", text(out3))
	}
	if msg := text(out3); !strings.Contains(msg, "does not exist") || !strings.Contains(msg, "The database must exist") || time.Since(start) > 15*time.Second {
		t.Errorf("make run on a database that does not exist said, after %s:\n%s", time.Since(start), msg)
	}
}

// waitFree waits until nothing listens on the addresses.
func waitFree(t *testing.T, addrs ...string) {
	t.Helper()
	for _, a := range addrs {
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			c, err := (&net.Dialer{Timeout: time.Second}).Dial("tcp", a)
			if err != nil {
				break
			}
			c.Close()
			if time.Now().After(deadline) {
				t.Fatalf("%s still taken after make run stopped", a)
			}
		}
	}
}
