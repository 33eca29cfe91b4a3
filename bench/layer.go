package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	edgev1 "github.com/gatehouse/gatehouse/gen/gatehouse/edge/v1"
	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// startNATS runs the pinned nats-server (bin/nats-server) on CPU 0, with the servers.
func (w *world) startNATS() (addr string, stop func(), err error) {
	addr = freeAddr()
	host, port, _ := net.SplitHostPort(addr)
	conf := filepath.Join(w.dir, "nats.conf")
	if err := os.WriteFile(conf, []byte("listen: "+net.JoinHostPort(host, port)+"\nmax_payload: 2MB\n"), 0o644); err != nil {
		return "", nil, err
	}
	cmd := exec.Command("taskset", "-c", "0", filepath.Join(w.bin, "nats-server"), "-c", conf)
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop = func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr, stop, nil
		}
		if time.Now().After(deadline) {
			stop()
			return "", nil, fmt.Errorf("nats-server did not listen on %s", addr)
		}
	}
}

// benchLayer measures the layer between edges: one send to a group of 10,000 members,
// half on each of two edges joined over NATS, against the same group on the single
// edge with the in-process layer (the baseline); then sends at 1,000/s from one
// edge's API to a user whose one socket is on the other edge.
func (w *world) benchLayer(r *report) error {
	natsAddr, stopNATS, err := w.startNATS()
	if err != nil {
		return err
	}
	defer stopNATS()
	apiA, apiB := freeAddr(), freeAddr()
	var edges [2]*proc
	for i, api := range []string{apiA, apiB} {
		edges[i], err = startPinned(fmt.Sprintf("edgesvc-nats-%d", i+1), edgeEnv(w.auth.addr, "EDGESVC_LISTEN=127.0.0.1:0", "EDGESVC_API_LISTEN="+api,
			"EDGESVC_API_TOKEN="+benchAPIToken, "EDGESVC_NATS_URL=nats://"+natsAddr, "EDGESVC_LAYER_KEY="+benchLayerKey, "EDGESVC_NODE_ID=edge-"+strconv.Itoa(i+1)), filepath.Join(w.bin, "edgesvc"))
		if err != nil {
			return err
		}
		defer edges[i].stop()
		if err := waitReady(edges[i].addr); err != nil {
			return err
		}
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+benchAPIToken)
	client := func(addr string) (edgev1.EdgeServiceClient, func(), error) {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, nil, err
		}
		return edgev1.NewEdgeServiceClient(cc), func() { cc.Close() }, nil
	}
	single, closeSingle, err := client(w.edgeAPI)
	if err != nil {
		return err
	}
	defer closeSingle()
	viaA, closeA, err := client(apiA)
	if err != nil {
		return err
	}
	defer closeA()
	user := &edgev1.Target{Target: &edgev1.Target_UserId{UserId: w.userID}}
	// Both edges know each other before anything is measured.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if m, err := goMemory(edges[0].addr); err == nil && m["gatehouse_edge_nats_edges"] == 2 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the two edges did not hear each other over NATS")
		}
	}

	const n, k = 10_000, 20
	edgeURL := func(p *proc) string { return fmt.Sprintf("ws://%s/ws/myapp/%d/", p.addr, w.userID) }
	group := func(name string, api edgev1.EdgeServiceClient) error {
		_, err := api.GroupAdd(ctx, &edgev1.GroupAddRequest{Group: name, Target: user})
		return err
	}
	send := func(api edgev1.EdgeServiceClient, name string) func(p []byte) error {
		to := &edgev1.Target{Target: &edgev1.Target_Group{Group: name}}
		return func(p []byte) error {
			_, err := api.Send(ctx, &edgev1.SendRequest{Target: to, Payload: &edgev1.SendRequest_Text{Text: string(p)}})
			return err
		}
	}
	b, g := w.pair("layer-fanout",
		func() measurement {
			conns, err := openConns(n, func(i int) (string, http.Header) { return w.edgeURL(), w.cookie(i) }, nil)
			if err == nil {
				err = group("layer-1", single)
			}
			if err != nil {
				closeNow(conns)
				return failed(err)
			}
			return measure(w.gatehousePIDs(), func() sample { return fanout(conns, k, send(single, "layer-1"), nil) })
		},
		func() measurement {
			conns, err := openConns(n, func(i int) (string, http.Header) { return edgeURL(edges[i%2]), w.cookie(i) }, nil)
			if err == nil {
				err = group("layer-2", viaA)
			}
			if err != nil {
				closeNow(conns)
				return failed(err)
			}
			pids := []int{w.auth.pid(), edges[0].pid(), edges[1].pid()}
			return measure(pids, func() sample { return fanout(conns, k, send(viaA, "layer-2"), nil) })
		})
	r.add(fmt.Sprintf("layer: fan-out deliveries/s, one send to a group of %d over 2 edges through NATS (baseline: the same group on 1 edge, in-process layer)", n), b, g, 0.7, "≥ 0.7 × 1 edge")
	r.Checks = append(r.Checks,
		check{Name: fmt.Sprintf("layer: time to the last of %d members over 2 edges, p50 (1 edge in-process: %.1f ms; 2 edges: %.1f ms), ≤ 1.3 × 1 edge", n, b.P50, g.P50),
			Value: ratio(g.P50, b.P50), Target: 1.3, Met: g.P50 > 0 && ratio(g.P50, b.P50) < 1.3, Unit: "×"},
		check{Name: fmt.Sprintf("layer: time to the last of %d members over 2 edges, p99 (1 edge in-process: %.1f ms; 2 edges: %.1f ms), ≤ 1.3 × 1 edge", n, b.P99, g.P99),
			Value: ratio(g.P99, b.P99), Target: 1.3, Met: g.P99 > 0 && ratio(g.P99, b.P99) < 1.3, Unit: "×"})

	// One user, one socket on edge 2; sends through edge 1's API at 1,000/s.
	m := w.crossEdgeSends(viaA, edgeURL(edges[1]), 1000)
	r.Checks = append(r.Checks, check{
		Name:  fmt.Sprintf("layer: Send to one user on the other edge at 1,000/s, p99 < 5 ms (p50 %.2f ms; %d sends, %d errors)", m.P50, m.Ops, m.Errors),
		Value: m.P99, Target: 5, Met: m.Errors == 0 && m.Ops > 0 && m.P99 < 5,
	})
	return nil
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// crossEdgeSends opens one socket at url and sends to its user through api, paced at
// rate per second for the plan's duration (not waiting for arrivals), each send timed
// from the call to its arrival.
func (w *world) crossEdgeSends(api edgev1.EdgeServiceClient, url string, rate int) measurement {
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+benchAPIToken)
	ws, _, err := websocket.DefaultDialer.Dial(url, w.cookie(0))
	if err != nil {
		return failed(err)
	}
	defer ws.Close()
	total := rate * int(w.plan.dur/time.Second)
	sent := make([]atomic.Int64, total) // unix ns of each send's call
	var s sample
	done := make(chan struct{})
	go func() {
		defer close(done)
		for s.Ops < total {
			_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, b, err := ws.ReadMessage()
			if err != nil {
				return
			}
			now := time.Now().UnixNano()
			if seq, err := strconv.Atoi(string(b)); err == nil && seq >= 0 && seq < total {
				s.lat = append(s.lat, time.Duration(now-sent[seq].Load()))
				s.Ops++
			}
		}
	}()
	to := &edgev1.Target{Target: &edgev1.Target_UserId{UserId: w.userID}}
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	start := time.Now()
	errs := 0
	for seq := range total {
		<-tick.C
		sent[seq].Store(time.Now().UnixNano())
		if _, err := api.Send(ctx, &edgev1.SendRequest{Target: to, Payload: &edgev1.SendRequest_Text{Text: strconv.Itoa(seq)}}); err != nil {
			errs++
		}
	}
	<-done
	s.Elapsed = time.Since(start)
	s.Errors = errs + total - s.Ops
	return measurement{Rate: s.rate(), P50: ms(s.percentile(0.5)), P99: ms(s.percentile(0.99)), Ops: s.Ops, Errors: s.Errors}
}
