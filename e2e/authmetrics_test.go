package e2e

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAuthMetrics: authsvc serves its metrics on AUTHSVC_METRICS_LISTEN, and they
// count a login through it, its gRPC call, and the edge's event feed subscription.
func TestAuthMetrics(t *testing.T) {
	addr := freeAddr(t)
	s := newSystem(t, []string{"AUTHSVC_METRICS_LISTEN=" + addr}, nil)
	if !strings.Contains(s.auth.logs(), `msg="metrics listening" addr=`+addr) {
		t.Errorf("authsvc did not log metrics listening on %s:\n%s", addr, s.auth.logs())
	}
	u, pw := s.newUser(t)
	s.login(t, u, pw)

	for series, least := range map[string]float64{
		`gatehouse_auth_logins_total{outcome="ok"}`: 1,
		`grpc_server_handled_total{grpc_code="OK",grpc_method="Login",grpc_service="gatehouse.auth.v1.AuthService",grpc_type="unary"}`: 1,
		`gatehouse_auth_event_subscribers`: 1, // the edge's
	} {
		if v := metric(t, addr, series); v < least {
			t.Errorf("%s = %v, want at least %v", series, v, least)
		}
	}
	if v := metric(t, addr, "gatehouse_auth_event_feed_live"); v != 1 {
		t.Errorf("gatehouse_auth_event_feed_live = %v, want 1", v)
	}
	// Labelled series are there before anything happened to them.
	if !hasSeries(t, addr, `gatehouse_auth_logins_total{outcome="busy"} 0`) {
		t.Error(`gatehouse_auth_logins_total{outcome="busy"} is not exposed at 0`)
	}
}

// hasSeries reports whether the /metrics at addr has the line line.
func hasSeries(t *testing.T, addr, line string) bool {
	t.Helper()
	resp, err := http.Get("http://" + metricsAddr(addr) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains("\n"+string(body), "\n"+line+"\n")
}

// TestAuthMetricsListenRefused: a metrics address authsvc cannot listen on stops it
// at start, naming the setting, rather than leaving it running unobserved.
func TestAuthMetricsListenRefused(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for _, c := range []struct{ addr, want string }{
		{"nonsense", "missing port"},
		{taken.Addr().String(), "address already in use"},
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		cmd := exec.CommandContext(ctx, filepath.Join(binDir, "authsvc"))
		cmd.Env = append(os.Environ(), authEnv("127.0.0.1:0", "AUTHSVC_METRICS_LISTEN="+c.addr)...)
		out, err := cmd.CombinedOutput()
		cancel()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(string(out), "AUTHSVC_METRICS_LISTEN") || !strings.Contains(string(out), c.want) {
			t.Errorf("AUTHSVC_METRICS_LISTEN=%s: %v\n%s\nwant exit status 1 naming AUTHSVC_METRICS_LISTEN and saying %q", c.addr, err, out, c.want)
		}
	}
}
