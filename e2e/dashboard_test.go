package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestGrafanaDashboard: every series docs/grafana-dashboard.json queries is one the
// services export (an edge on NATS with a remote route, and authsvc with its metrics
// listener), so a renamed series cannot leave the dashboard silently empty.
func TestGrafanaDashboard(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "docs", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("docs/grafana-dashboard.json: %v", err)
	}
	nats := startNATS(t)
	authMetrics := freeAddr(t)
	s := newSystem(t, []string{"AUTHSVC_METRICS_LISTEN=" + authMetrics},
		[]string{"EDGESVC_NATS_URL=" + nats.url(), "EDGESVC_LAYER_KEY=" + layerKey, "EDGESVC_ROUTES_FILE=" + routesFor(t, freeAddr(t), "")})
	exposed := scrape(t, "http://"+metricsAddr(s.edge.addr)+"/metrics") + scrape(t, "http://"+authMetrics+"/metrics")
	name := regexp.MustCompile(`\b(?:gatehouse|grpc_server)_[a-z_]+\b`)
	queried := 0
	for _, p := range dash.Panels {
		for _, q := range p.Targets {
			for _, n := range name.FindAllString(q.Expr, -1) {
				queried++
				if !regexp.MustCompile(`(?m)^` + n + `[{ ]`).MatchString(exposed) {
					t.Errorf("panel %q queries %s, which no service exports", p.Title, n)
				}
			}
		}
	}
	if queried < 30 {
		t.Fatalf("the dashboard queries %d series: not the dashboard expected", queried)
	}
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return strings.TrimSpace(string(b)) + "\n"
}
