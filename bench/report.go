package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

type measurement struct {
	Rate      float64 `json:"rate_per_s"`
	P50       float64 `json:"p50_ms"`
	P99       float64 `json:"p99_ms"`
	CPUMicros float64 `json:"server_cpu_us_per_op"`
	Ops       int     `json:"ops"`
	Errors    int     `json:"errors"`
	// Failed says why nothing was measured (the load could not be set up, or no
	// operation completed): such a run is left out of the medians, and a row with
	// no measured run says so instead of printing a rate of 0.
	Failed string `json:"failed,omitempty"`
	lat    []time.Duration
}

// failed is a run that measured nothing, because of err.
func failed(err error) measurement {
	return measurement{Failed: err.Error(), Errors: 1}
}

// rate is m's rate for a report, or why it was not measured.
func (m measurement) rate() string {
	if m.Failed != "" {
		return "not measured (" + m.Failed + ")"
	}
	return fmt.Sprintf("%.0f/s", m.Rate)
}

type row struct {
	Name      string      `json:"name"`
	Baseline  measurement `json:"baseline"`
	Gatehouse measurement `json:"gatehouse"`
	Ratio     float64     `json:"ratio"`
	Target    float64     `json:"target_ratio,omitempty"`
	Goal      string      `json:"goal,omitempty"`
	Met       *bool       `json:"met,omitempty"`
}

type idle struct {
	Side        string  `json:"side"`
	Conns       int     `json:"connections"`
	KiBPerConn  float64 `json:"kib_per_connection"`
	HeldSeconds float64 `json:"held_s"`
	Dropped     int     `json:"dropped"`
}

type check struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Target float64 `json:"target"`
	Met    bool    `json:"met"`
	Unit   string  `json:"unit,omitempty"` // of Value and Target; empty: ms
}

type report struct {
	Quick      bool         `json:"quick"`
	Started    time.Time    `json:"started"`
	Finished   time.Time    `json:"finished"`
	Reps       int          `json:"repetitions"`
	Seconds    float64      `json:"seconds_per_measurement"`
	Rows       []row        `json:"rows"`
	Idle       []idle       `json:"idle_memory"`
	Revocation *measurement `json:"revocation,omitempty"`
	Checks     []check      `json:"checks"`
	// Retried503 counts connects the load generator retried after the edge answered 503
	// (authsvc too slow for the handshake deadline): fail-closed refusals under load.
	Retried503 int64 `json:"retried_503"`
}

func (r *report) add(name string, base, gh measurement, target float64, goal string) {
	ro := row{Name: name, Baseline: base, Gatehouse: gh, Target: target, Goal: goal}
	measured := base.Failed == "" && gh.Failed == ""
	if base.Rate > 0 && measured {
		ro.Ratio = gh.Rate / base.Rate
	}
	if target > 0 {
		met := measured && ro.Ratio >= target
		ro.Met = &met
	}
	r.Rows = append(r.Rows, ro)
	fmt.Fprintf(os.Stderr, "  %s: bare %s, gatehouse %s (%.2f×), p99 %.2f / %.2f ms\n", name, base.rate(), gh.rate(), ro.Ratio, base.P99, gh.P99)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "**no**"
}

func (r *report) markdown() string {
	var b strings.Builder
	mode := "full"
	if r.Quick {
		mode = "quick"
	}
	fmt.Fprintf(&b, "gatehouse benchmark (%s: medians of %d interleaved runs of %.0f s; servers on CPU 0, load on CPU 1)\n\n", mode, r.Reps, r.Seconds)
	b.WriteString("| measurement | bare | gatehouse | ratio | bare p50 / p99 ms | gatehouse p50 / p99 ms | server CPU µs/op bare / gatehouse | target | met |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	for _, ro := range r.Rows {
		met := ""
		if ro.Met != nil {
			met = yesNo(*ro.Met)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %.2f× | %.2f / %.2f | %.2f / %.2f | %.0f / %.0f | %s | %s |\n",
			ro.Name, ro.Baseline.rate(), ro.Gatehouse.rate(), ro.Ratio, ro.Baseline.P50, ro.Baseline.P99,
			ro.Gatehouse.P50, ro.Gatehouse.P99, ro.Baseline.CPUMicros, ro.Gatehouse.CPUMicros, ro.Goal, met)
	}
	b.WriteString("\n| idle connections | bare KiB/conn | gatehouse KiB/conn (edge + authsvc) | ratio | held | dropped | target | met |\n|---|---|---|---|---|---|---|---|\n")
	for i := 0; i+1 < len(r.Idle); i += 2 {
		bare, gh := r.Idle[i], r.Idle[i+1]
		last := i+2 == len(r.Idle)
		target, met := "", ""
		if last {
			target, met = "≤ 10 KiB, none dropped", yesNo(gh.KiBPerConn <= 10 && gh.Dropped == 0)
		}
		fmt.Fprintf(&b, "| %d | %.1f | %.1f | %.2f× | %.0f s | %d / %d | %s | %s |\n", gh.Conns, bare.KiBPerConn, gh.KiBPerConn,
			gh.KiBPerConn/max(bare.KiBPerConn, 0.001), gh.HeldSeconds, bare.Dropped, gh.Dropped, target, met)
	}
	if r.Retried503 > 0 {
		fmt.Fprintf(&b, "\nConnects refused with 503 and retried while opening idle connections: %d\n", r.Retried503)
	}
	b.WriteString("\n| check | value | target | met |\n|---|---|---|---|\n")
	for _, c := range r.Checks {
		unit := c.Unit
		if unit == "" {
			unit = "ms"
		}
		fmt.Fprintf(&b, "| %s | %.2f %s | < %s %s | %s |\n", c.Name, c.Value, unit, strconv.FormatFloat(c.Target, 'f', -1, 64), unit, yesNo(c.Met))
	}
	return b.String()
}

func (r *report) write(dir string) error {
	md := r.markdown()
	fmt.Print("\n" + md)
	js, _ := json.MarshalIndent(r, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "results.json"), js, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(md), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "latency.svg"), []byte(r.svg()), 0o644); err != nil {
		return err
	}
	fmt.Printf("\nwrote %s/{results.md,results.json,latency.svg}\n", dir)
	return nil
}

// svg draws, for each rate row, the latency percentiles (p50, p90, p99, p99.9) of
// bare and gatehouse on a log scale.
func (r *report) svg() string {
	type series struct {
		label string
		ps    []float64
	}
	pcts := []float64{0.5, 0.9, 0.99, 0.999}
	pct := func(l []time.Duration) []float64 {
		s := slices.Clone(l)
		slices.Sort(s)
		out := make([]float64, len(pcts))
		for i, p := range pcts {
			if len(s) > 0 {
				out[i] = ms(s[min(len(s)-1, int(p*float64(len(s))))])
			}
		}
		return out
	}
	var rows [][2]series
	var names []string
	for _, ro := range r.Rows {
		rows = append(rows, [2]series{{"bare", pct(ro.Baseline.lat)}, {"gatehouse", pct(ro.Gatehouse.lat)}})
		names = append(names, ro.Name)
	}
	const w, rowH, left = 1000, 90, 450
	h := 60 + rowH*len(rows)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`, w, h)
	fmt.Fprintf(&b, `<text x="10" y="20" font-size="14" font-weight="bold">Latency percentiles (p50, p90, p99, p99.9; ms, log scale): bare grey, gatehouse blue</text>`)
	x := func(v float64) float64 { // 0.01 ms .. 1000 ms on a log scale
		return left + (math.Log10(max(v, 0.01))+2)/5*float64(w-left-20)
	}
	for _, tick := range []float64{0.01, 0.1, 1, 10, 100, 1000} {
		fmt.Fprintf(&b, `<line x1="%.0f" y1="35" x2="%.0f" y2="%d" stroke="#ddd"/><text x="%.0f" y="%d" text-anchor="middle">%g</text>`, x(tick), x(tick), h-15, x(tick), h-3, tick)
	}
	for i, ro := range rows {
		y0 := 50 + i*rowH
		fmt.Fprintf(&b, `<text x="10" y="%d">%s</text>`, y0+25, escape(names[i]))
		for j, s := range ro {
			color := []string{"#999", "#1f6feb"}[j]
			y := y0 + 10 + j*30
			for k, v := range s.ps {
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%d" r="%d" fill="%s"><title>%s p%g %.3f ms</title></circle>`, x(v), y, 3+k, color, s.label, pcts[k]*100, v)
			}
			if len(s.ps) > 0 {
				fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s"/>`, x(s.ps[0]), y, x(s.ps[len(s.ps)-1]), y, color)
			}
		}
	}
	b.WriteString(`</svg>`)
	return b.String()
}

func escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}
