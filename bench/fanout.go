package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	edgev1 "github.com/gatehouse/gatehouse/gen/gatehouse/edge/v1"
	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// baselineBroadcast is the bare fan-out server a group send is compared with, as in
// gorilla's chat example without authentication: a map of sockets and, for each POST
// /broadcast, one PreparedMessage written to each socket in a loop.
func baselineBroadcast(args []string) error {
	fs := flag.NewFlagSet("baseline-broadcast", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	_ = fs.Parse(args)
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	var mu sync.Mutex
	conns := map[*websocket.Conn]bool{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws/", func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		mu.Lock()
		conns[ws] = true
		mu.Unlock()
		go func() {
			for {
				if _, _, err := ws.ReadMessage(); err != nil {
					mu.Lock()
					delete(conns, ws)
					mu.Unlock()
					ws.Close()
					return
				}
			}
		}()
	})
	mux.HandleFunc("POST /broadcast", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		pm, err := websocket.NewPreparedMessage(websocket.TextMessage, body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		mu.Lock()
		list := make([]*websocket.Conn, 0, len(conns))
		for c := range conns {
			list = append(list, c)
		}
		mu.Unlock()
		for _, c := range list {
			_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if c.WritePreparedMessage(pm) != nil {
				c.Close()
			}
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return serveUntilSignal(*listen, func(l net.Listener) error { return http.Serve(l, mux) })
}

// fanout measures one side's fan-out to conns: k sends one at a time, each timed
// until its last member has it (latencies), then k sends back to back, timed until
// every member has every one (deliveries per second).
func fanout(conns []*websocket.Conn, k int, send func(payload []byte) error) sample {
	n := len(conns)
	total := 2 * k
	counts := make([]atomic.Int64, total)
	last := make([]atomic.Int64, total) // unix ns of the latest arrival
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			for {
				_, msg, err := c.ReadMessage()
				if err != nil {
					return
				}
				now := time.Now().UnixNano()
				seq, _ := strconv.Atoi(string(msg[:bytes.IndexByte(msg, '|')]))
				if seq < 0 || seq >= total {
					continue
				}
				counts[seq].Add(1)
				for {
					l := last[seq].Load()
					if now <= l || last[seq].CompareAndSwap(l, now) {
						break
					}
				}
			}
		})
	}
	pad := bytes.Repeat([]byte("x"), 100)
	payload := func(seq int) []byte { return append([]byte(strconv.Itoa(seq)+"|"), pad...) }
	await := func(seq int) bool {
		deadline := time.Now().Add(20 * time.Second)
		for counts[seq].Load() < int64(n) {
			if time.Now().After(deadline) {
				return false
			}
			time.Sleep(200 * time.Microsecond)
		}
		return true
	}
	var s sample
	for seq := range k {
		start := time.Now()
		if err := send(payload(seq)); err != nil || !await(seq) {
			s.Errors++
			continue
		}
		s.lat = append(s.lat, time.Duration(last[seq].Load()-start.UnixNano()))
	}
	start := time.Now()
	for seq := k; seq < total; seq++ {
		if send(payload(seq)) != nil {
			s.Errors++
		}
	}
	for seq := k; seq < total; seq++ {
		if !await(seq) {
			s.Errors++
		}
	}
	s.Elapsed = time.Since(start)
	s.Ops = n * k // deliveries in the back-to-back phase
	closeNow(conns)
	wg.Wait()
	return s
}

// closeNow drops connections without TIME_WAIT (the bench opens tens of thousands).
func closeNow(conns []*websocket.Conn) {
	for _, c := range conns {
		if c == nil {
			continue
		}
		if tc, ok := c.NetConn().(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		c.Close()
	}
}

// benchFanout compares a send to a group of 1,000 and 10,000 members with the bare
// broadcast server: deliveries per second, and time until the last member has it.
func (w *world) benchFanout(r *report) error {
	cc, err := grpc.NewClient(w.edgeAPI, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	api := edgev1.NewEdgeServiceClient(cc)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer bench-api")
	const k = 20
	for _, n := range []int{1000, 10_000} {
		group := fmt.Sprintf("fanout-%d", n)
		b, g := w.pair(fmt.Sprintf("fanout%d", n),
			func() measurement {
				conns, err := openConns(n, func(int) (string, http.Header) { return "ws://" + w.bareCast.addr + "/ws/", nil }, nil)
				if err != nil {
					return measurement{Errors: 1}
				}
				return measure([]int{w.bareCast.pid()}, func() sample {
					return fanout(conns, k, func(p []byte) error {
						resp, err := http.Post("http://"+w.bareCast.addr+"/broadcast", "text/plain", bytes.NewReader(p))
						if err == nil {
							resp.Body.Close()
						}
						return err
					})
				})
			},
			func() measurement {
				conns, err := openConns(n, func(i int) (string, http.Header) { return w.edgeURL(), w.cookie(i) }, nil)
				if err != nil {
					return measurement{Errors: 1}
				}
				target := &edgev1.Target{Target: &edgev1.Target_UserId{UserId: w.userID}}
				if _, err := api.GroupAdd(ctx, &edgev1.GroupAddRequest{Group: group, Target: target}); err != nil {
					closeNow(conns)
					return measurement{Errors: 1}
				}
				to := &edgev1.Target{Target: &edgev1.Target_Group{Group: group}}
				return measure(w.gatehousePIDs(), func() sample {
					return fanout(conns, k, func(p []byte) error {
						_, err := api.Send(ctx, &edgev1.SendRequest{Target: to, Payload: &edgev1.SendRequest_Text{Text: string(p)}})
						return err
					})
				})
			})
		r.add(fmt.Sprintf("fan-out deliveries/s, one send to a group of %d (bare: a loop of PreparedMessage)", n), b, g, 1.2, "≥ 1.2 × bare")
		if n == 10_000 {
			r.Checks = append(r.Checks, check{
				Name:  fmt.Sprintf("fan-out: all 10,000 members have a send, p99 < 100 ms (p50 %.1f ms; bare p50 / p99 %.1f / %.1f ms)", g.P50, b.P50, b.P99),
				Value: g.P99, Target: 100, Met: g.P99 > 0 && g.P99 < 100,
			})
		}
	}
	return nil
}
