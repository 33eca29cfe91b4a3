package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gorilla/websocket"
)

// sample is what one timed run of a load produced.
type sample struct {
	Ops     int           `json:"ops"`
	Errors  int           `json:"errors"`
	Elapsed time.Duration `json:"elapsed_ns"`
	lat     []time.Duration
}

func (s sample) rate() float64 { return float64(s.Ops) / s.Elapsed.Seconds() }

func (s sample) percentile(p float64) time.Duration {
	if len(s.lat) == 0 {
		return 0
	}
	l := slices.Clone(s.lat)
	slices.Sort(l)
	return l[min(len(l)-1, int(p*float64(len(l))))]
}

// runWorkers runs n workers, each calling op in a loop until d passes, and collects
// the latency of every successful op.
func runWorkers(n int, d time.Duration, op func(worker, i int) error) sample {
	var mu sync.Mutex
	var all []time.Duration
	var errs atomic.Int64
	var firstErr atomic.Value
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range n {
		wg.Go(func() {
			lat := make([]time.Duration, 0, 4096)
			for i := 0; time.Now().Before(deadline); i++ {
				t0 := time.Now()
				if err := op(w, i); err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					time.Sleep(time.Millisecond)
					continue
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		})
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		fmt.Fprintf(os.Stderr, "  (%d errors, first: %s)\n", errs.Load(), e)
	}
	return sample{Ops: len(all), Errors: int(errs.Load()), Elapsed: time.Since(start), lat: all}
}

var dialer = websocket.Dialer{HandshakeTimeout: 10 * time.Second, ReadBufferSize: 1024, WriteBufferSize: 1024}

// handshakes opens and closes sockets with n concurrent dialers for d. target names
// the URL and headers of the i-th dial.
func handshakes(n int, d time.Duration, target func(i int) (string, http.Header)) sample {
	var seq atomic.Int64
	return runWorkers(n, d, func(_, _ int) error {
		u, h := target(int(seq.Add(1)))
		ws, _, err := dialer.Dial(u, h)
		if err != nil {
			return err
		}
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		return ws.Close()
	})
}

// ipBindAddressNoPort is Linux's IP_BIND_ADDRESS_NO_PORT: with a source address
// bound, the port is then chosen at connect time per destination, instead of from
// one range shared by every destination (which TIME_WAIT sockets exhaust).
const ipBindAddressNoPort = 24

func bindNoPort(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// retried counts dials retried after a 503 (reported with the results).
var retried atomic.Int64

// openConns opens n sockets, 64 at a time.
func openConns(n int, target func(i int) (string, http.Header), local net.Addr) ([]*websocket.Conn, error) {
	d := dialer
	if local != nil {
		d.NetDialContext = (&net.Dialer{LocalAddr: local, Control: bindNoPort}).DialContext
	}
	conns := make([]*websocket.Conn, n)
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			u, h := target(i)
			// A refusal under a connect storm (503: authsvc too slow) is the edge
			// failing closed; retry it a few times, as a client with backoff would.
			var ws *websocket.Conn
			var err error
			for attempt := range 10 {
				var resp *http.Response
				if ws, resp, err = d.Dial(u, h); err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
					break
				}
				retried.Add(1)
				time.Sleep(min(time.Duration(100<<attempt)*time.Millisecond, 2*time.Second))
			}
			if err != nil {
				firstErr.CompareAndSwap(nil, err)
				return
			}
			conns[i] = ws
		})
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		closeAll(conns)
		return nil, e.(error)
	}
	return conns, nil
}

func closeAll(conns []*websocket.Conn) {
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}

// echoes runs send/receive round trips on every connection for d.
func echoes(conns []*websocket.Conn, d time.Duration) sample {
	msg := []byte("hello gatehouse")
	return runWorkers(len(conns), d, func(w, _ int) error {
		c := conns[w]
		if err := c.WriteMessage(websocket.TextMessage, msg); err != nil {
			return err
		}
		_, _, err := c.ReadMessage()
		return err
	})
}

// pacedEchoes sends rate echoes a second in all over conns for d, each connection on
// a fixed schedule, and measures each round trip from the time it was due (so a
// stall delays the sends behind it and counts against them too, rather than hiding).
func pacedEchoes(conns []*websocket.Conn, d time.Duration, rate int) sample {
	msg := []byte("hello gatehouse")
	interval := time.Duration(float64(time.Second) * float64(len(conns)) / float64(rate))
	start := time.Now()
	var mu sync.Mutex
	var all []time.Duration
	var errs atomic.Int64
	var wg sync.WaitGroup
	for w, c := range conns {
		wg.Go(func() {
			// Spread the connections' schedules over one interval.
			due := start.Add(interval * time.Duration(w) / time.Duration(len(conns)))
			lat := make([]time.Duration, 0, int(d/interval)+1)
			for ; due.Before(start.Add(d)); due = due.Add(interval) {
				time.Sleep(time.Until(due))
				if err := c.WriteMessage(websocket.TextMessage, msg); err != nil {
					errs.Add(1)
					continue
				}
				if _, _, err := c.ReadMessage(); err != nil {
					errs.Add(1)
					continue
				}
				lat = append(lat, time.Since(due))
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		})
	}
	wg.Wait()
	return sample{Ops: len(all), Errors: int(errs.Load()), Elapsed: time.Since(start), lat: all}
}

// validations calls ValidateSession with n concurrent callers for d.
func validations(n int, d time.Duration, c authv1.AuthServiceClient, tokens []string) sample {
	var seq atomic.Int64
	return runWorkers(n, d, func(_, _ int) error {
		tok := tokens[int(seq.Add(1))%len(tokens)]
		_, err := c.ValidateSession(context.Background(), &authv1.ValidateSessionRequest{Token: tok})
		return err
	})
}

// hold is a child process that opens idle authenticated sockets from its own source
// address (one process may hold only 20,000 files), prints "held N retried R", keeps them
// (answering pings) until stdin closes, and prints "dropped K".
func hold(args []string) error {
	fs := flag.NewFlagSet("hold", flag.ExitOnError)
	url := fs.String("url", "", "socket URL")
	tokensFile := fs.String("tokens", "", "tokens file")
	from := fs.Int("from", 0, "first token")
	count := fs.Int("count", 0, "sockets to hold")
	src := fs.String("src", "", "source IP address")
	_ = fs.Parse(args)
	var tokens []string
	if *tokensFile != "" {
		var err error
		if tokens, err = readLines(*tokensFile); err != nil {
			return err
		}
	}
	var local net.Addr
	if *src != "" {
		local = &net.TCPAddr{IP: net.ParseIP(*src)}
	}
	conns, err := openConns(*count, func(i int) (string, http.Header) {
		if *tokensFile == "" {
			return *url, nil
		}
		return *url, http.Header{"Cookie": {"sessionid=" + tokens[(*from+i)%len(tokens)]}}
	}, local)
	if err != nil {
		return err
	}
	var dropped atomic.Int64
	var stopping atomic.Bool
	var firstDrop sync.Once
	for _, c := range conns {
		go func() {
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					if !stopping.Load() {
						dropped.Add(1)
						firstDrop.Do(func() { fmt.Fprintf(os.Stderr, "  holder: first dropped socket: %v\n", err) })
					}
					return
				}
			}
		}()
	}
	fmt.Printf("held %d retried %d\n", len(conns), retried.Load())
	done := make(chan struct{})
	go func() { _, _ = bufio.NewReader(os.Stdin).ReadString('\n'); close(done) }()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	select {
	case <-done:
	case <-sig:
	}
	stopping.Store(true)
	fmt.Printf("dropped %d\n", dropped.Load())
	closeAll(conns)
	return nil
}

// revocations opens one socket per token, then for each: revokes its session and
// times RevokeSession's return to the socket's 4401.
// revocations opens a socket per session, revokes the sessions one by one and
// returns the time from each RevokeSession returning to its socket seeing 4401 (0 if
// the socket closed first), the time from the call, and how many closed before the
// call returned.
func revocations(url string, tokens, sessionIDs []string, admin authv1.AdminServiceClient, adminCtx context.Context) (sample, sample, int, error) {
	conns, err := openConns(len(tokens), func(i int) (string, http.Header) {
		return url, http.Header{"Cookie": {"sessionid=" + tokens[i]}}
	}, nil)
	if err != nil {
		return sample{}, sample{}, 0, err
	}
	defer closeAll(conns)
	closed := make([]chan time.Time, len(conns))
	for i, c := range conns {
		closed[i] = make(chan time.Time, 1)
		go func() {
			for {
				_, _, err := c.ReadMessage()
				var ce *websocket.CloseError
				if errors.As(err, &ce) && ce.Code == 4401 {
					closed[i] <- time.Now()
					return
				}
				if err != nil {
					return
				}
			}
		}()
	}
	var s, fromCall sample
	early := 0
	start := time.Now()
	for i := range conns {
		called := time.Now()
		if _, err := admin.RevokeSession(adminCtx, &authv1.RevokeSessionRequest{SessionId: sessionIDs[i]}); err != nil {
			return s, fromCall, early, err
		}
		returned := time.Now()
		select {
		case at := <-closed[i]:
			if at.Before(returned) {
				early++
			}
			s.lat = append(s.lat, max(0, at.Sub(returned)))
			fromCall.lat = append(fromCall.lat, at.Sub(called))
			s.Ops++
			fromCall.Ops++
		case <-time.After(5 * time.Second):
			s.Errors++
		}
	}
	s.Elapsed = time.Since(start)
	fromCall.Elapsed = s.Elapsed
	return s, fromCall, early, nil
}

func readLines(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(b)), nil
}

// connectEach opens and closes one socket per header, n at a time, and returns how
// many failed.
func connectEach(n int, url string, headers []http.Header) int {
	work := make(chan http.Header)
	var failed atomic.Int64
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for h := range work {
				ws, _, err := dialer.Dial(url, h)
				if err != nil {
					failed.Add(1)
					continue
				}
				_ = ws.Close()
			}
		})
	}
	for _, h := range headers {
		work <- h
	}
	close(work)
	wg.Wait()
	return int(failed.Load())
}
