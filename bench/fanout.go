package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
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
		if r.URL.Query().Has("floor") {
			floor(w, body, &mu, conns)
			return
		}
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

// floor writes body as one text frame to every socket with a plain write(2) each (no
// websocket library, no deadline), and answers with the loop's duration in
// X-Loop-Micros: the least time any server on this CPU needs to reach every member,
// which the fan-out latency target is compared with.
func floor(w http.ResponseWriter, body []byte, mu *sync.Mutex, conns map[*websocket.Conn]bool) {
	frame := append([]byte{0x81, 126, byte(len(body) >> 8), byte(len(body))}, body...)
	if len(body) < 126 {
		frame = append([]byte{0x81, byte(len(body))}, body...)
	}
	mu.Lock()
	list := make([]net.Conn, 0, len(conns))
	for c := range conns {
		list = append(list, c.NetConn())
	}
	mu.Unlock()
	start := time.Now()
	for _, c := range list {
		_, _ = c.Write(frame)
	}
	w.Header().Set("X-Loop-Micros", strconv.FormatInt(time.Since(start).Microseconds(), 10))
	w.WriteHeader(http.StatusNoContent)
}

// writeFloor asks the bare broadcast server for the write(2) floor of its members
// (the median of five loops), in milliseconds; 0 if it could not.
func writeFloor(addr string) float64 {
	var loops []float64
	for range 5 {
		resp, err := http.Post("http://"+addr+"/broadcast?floor", "text/plain", strings.NewReader("floor|"+strings.Repeat("x", 100)))
		if err != nil {
			return 0
		}
		resp.Body.Close()
		us, err := strconv.ParseFloat(resp.Header.Get("X-Loop-Micros"), 64)
		if err != nil {
			return 0
		}
		loops = append(loops, us/1000)
	}
	slices.Sort(loops)
	return loops[len(loops)/2]
}

// fanout measures one side's fan-out to conns: k sends one at a time, each timed
// until its last member has it (latencies), then k sends back to back, timed until
// every member has every one (deliveries per second). The members are read by one
// epoll loop (fanoutReader), not a goroutine each: the load generator has one CPU,
// and it must take frames faster than a server on one CPU writes them, or the
// figures would be its own.
//
// If not nil, before runs once the members are being read, before the first send.
func fanout(conns []*websocket.Conn, k int, send func(payload []byte) error, before func()) sample {
	n := len(conns)
	total := 2 * k
	counts := make([]atomic.Int64, total)
	last := make([]atomic.Int64, total) // unix ns of the latest arrival
	rd, err := newFanoutReader(conns, func(seq int, now int64) {
		if seq < 0 || seq >= total {
			return
		}
		counts[seq].Add(1)
		if now > last[seq].Load() {
			last[seq].Store(now) // one reader: no race between loads and stores
		}
	})
	if err != nil {
		closeNow(conns)
		return sample{Errors: 1}
	}
	var wg sync.WaitGroup
	wg.Go(rd.run)
	if before != nil {
		before()
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
	rd.stop.Store(true)
	wg.Wait()
	rd.close()
	return s
}

// fanoutReader reads the members' sockets with one epoll instance and a raw read per
// ready socket, parsing the server's (unmasked) frames itself: a text frame's
// payload starts with "seq|". It takes each socket from its websocket.Conn (a
// duplicate of its descriptor, the Conn then closed), so that the Go runtime's own
// poller no longer watches it: otherwise every delivery would also wake the load
// generator's runtime, and the server would pay for that wake-up on loopback.
type fanoutReader struct {
	ep   int
	fds  []int
	rest map[int][]byte // the start of a frame a read cut off, by fd
	got  func(seq int, now int64)
	stop atomic.Bool
}

func newFanoutReader(conns []*websocket.Conn, got func(seq int, now int64)) (*fanoutReader, error) {
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	r := &fanoutReader{ep: ep, rest: map[int][]byte{}, got: got}
	for _, c := range conns {
		sc, err := c.NetConn().(syscall.Conn).SyscallConn()
		if err != nil {
			r.close()
			return nil, err
		}
		fd := -1
		var derr error
		if err := sc.Control(func(orig uintptr) { fd, derr = syscall.Dup(int(orig)) }); err != nil || derr != nil {
			r.close()
			return nil, errors.Join(err, derr)
		}
		r.fds = append(r.fds, fd)
		_ = c.NetConn().Close() // the duplicate keeps the socket open; O_NONBLOCK is shared
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)}
		if err := syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
			r.close()
			return nil, err
		}
	}
	return r, nil
}

// close closes the sockets at once (no TIME_WAIT: the bench opens tens of thousands)
// and the epoll instance.
func (r *fanoutReader) close() {
	for _, fd := range r.fds {
		_ = syscall.SetsockoptLinger(fd, syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1, Linger: 0})
		_ = syscall.Close(fd)
	}
	_ = syscall.Close(r.ep)
}

func (r *fanoutReader) run() {
	events := make([]syscall.EpollEvent, 256)
	buf := make([]byte, 64<<10)
	for !r.stop.Load() {
		// Never block in epoll_wait: the process has one CPU, and a goroutine
		// blocked in a system call would keep the senders waiting for the runtime
		// to notice. Poll, and sleep briefly when nothing is ready.
		n, err := syscall.EpollWait(r.ep, events, 0)
		if err != nil && err != syscall.EINTR {
			return
		}
		if n <= 0 {
			time.Sleep(50 * time.Microsecond)
			continue
		}
		now := time.Now().UnixNano()
		for _, ev := range events[:n] {
			fd := int(ev.Fd)
			m, err := syscall.Read(fd, buf)
			if m <= 0 {
				if err != syscall.EAGAIN && err != syscall.EINTR {
					_ = syscall.EpollCtl(r.ep, syscall.EPOLL_CTL_DEL, fd, nil) // it ended: its sends are missed, and counted so
				}
				continue
			}
			data := buf[:m]
			if p, ok := r.rest[fd]; ok {
				data = append(p, data...)
				delete(r.rest, fd)
			}
			if tail := r.frames(data, now); len(tail) > 0 {
				r.rest[fd] = append([]byte(nil), tail...)
			}
		}
	}
}

// frames hands each whole text frame in data to got and returns what is left of a
// frame not yet whole. Other frames (pings) are skipped.
func (r *fanoutReader) frames(data []byte, now int64) []byte {
	for len(data) >= 2 {
		hl, n := 2, int(data[1]&0x7f)
		switch n {
		case 126:
			if len(data) < 4 {
				return data
			}
			hl, n = 4, int(data[2])<<8|int(data[3])
		case 127:
			if len(data) < 10 {
				return data
			}
			hl, n = 10, int(binary.BigEndian.Uint64(data[2:10]))
		}
		if len(data) < hl+n {
			return data
		}
		if data[0]&0x0f == 0x1 {
			p := data[hl : hl+n]
			if i := bytes.IndexByte(p, '|'); i > 0 {
				if seq, err := strconv.Atoi(string(p[:i])); err == nil {
					r.got(seq, now)
				}
			}
		}
		data = data[hl+n:]
	}
	return data
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
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+benchAPIToken)
	const k = 20
	var floors []float64 // ms, one per repetition
	for _, n := range []int{1000, 10_000} {
		group := fmt.Sprintf("fanout-%d", n)
		b, g := w.pair(fmt.Sprintf("fanout%d", n),
			func() measurement {
				conns, err := openConns(n, func(int) (string, http.Header) { return "ws://" + w.bareCast.addr + "/ws/", nil }, nil)
				if err != nil {
					return failed(err)
				}
				return measure([]int{w.bareCast.pid()}, func() sample {
					return fanout(conns, k, func(p []byte) error {
						resp, err := http.Post("http://"+w.bareCast.addr+"/broadcast", "text/plain", bytes.NewReader(p))
						if err == nil {
							resp.Body.Close()
						}
						return err
					}, func() {
						if n == 10_000 { // under the same reading as the sends (its frames are skipped)
							floors = append(floors, writeFloor(w.bareCast.addr))
						}
					})
				})
			},
			func() measurement {
				conns, err := openConns(n, func(i int) (string, http.Header) { return w.edgeURL(), w.cookie(i) }, nil)
				if err != nil {
					return failed(err)
				}
				target := &edgev1.Target{Target: &edgev1.Target_UserId{UserId: w.userID}}
				if _, err := api.GroupAdd(ctx, &edgev1.GroupAddRequest{Group: group, Target: target}); err != nil {
					closeNow(conns)
					return failed(err)
				}
				to := &edgev1.Target{Target: &edgev1.Target_Group{Group: group}}
				return measure(w.gatehousePIDs(), func() sample {
					return fanout(conns, k, func(p []byte) error {
						_, err := api.Send(ctx, &edgev1.SendRequest{Target: to, Payload: &edgev1.SendRequest_Text{Text: string(p)}})
						return err
					}, nil)
				})
			})
		r.add(fmt.Sprintf("fan-out deliveries/s, one send to a group of %d (bare: a loop of PreparedMessage)", n), b, g, 1.2, "≥ 1.2 × bare")
		if n == 10_000 {
			slices.Sort(floors)
			fl := 0.0
			if len(floors) > 0 {
				fl = floors[len(floors)/2]
			}
			r.Checks = append(r.Checks, check{
				Name: fmt.Sprintf("fan-out: all 10,000 members have a send, p99 < 100 ms (p50 %.1f ms; bare p50 / p99 %.1f / %.1f ms; "+
					"floor: one write(2) per member, no library, takes %.1f ms on this CPU)", g.P50, b.P50, b.P99, fl),
				Value: g.P99, Target: 100, Met: g.P99 > 0 && g.P99 < 100,
			})
		}
	}
	return nil
}
