package e2e

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gorilla/websocket"
)

// The benchmarks run the built binaries against PostgreSQL, next to a bare gorilla
// echo server with no authentication measured in the same run, so results can be
// read as ratios (the machine is noisy; absolute numbers are not comparable).

// bareEcho is the baseline: upgrade at once, echo "You said: X".
func bareEcho(b *testing.B) string {
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		for {
			_, msg, err := ws.ReadMessage()
			if err != nil {
				return
			}
			if err := ws.WriteMessage(websocket.TextMessage, append([]byte("You said: "), msg...)); err != nil {
				return
			}
		}
	}))
	b.Cleanup(srv.Close)
	return "ws" + srv.URL[len("http"):] + "/ws/myapp/1/"
}

func benchSystem(b *testing.B) (*system, []*authv1.LoginResponse) {
	// 256 sessions of one user, as fast as they go: the message rates are off, unless
	// GATEHOUSE_BENCH_EDGE_ENV (space-separated NAME=value) sets other settings, such
	// as the rates, to measure what they cost.
	s := newSystem(b, []string{"AUTHSVC_MAX_SESSIONS_PER_USER=0"}, append(unpaced, strings.Fields(os.Getenv("GATEHOUSE_BENCH_EDGE_ENV"))...))
	u, pw := s.newUser(b)
	// Many distinct sessions, as real traffic has.
	logins := make([]*authv1.LoginResponse, 256)
	for i := range logins {
		l, err := s.authC.Login(b.Context(), &authv1.LoginRequest{Username: u.GetUsername(), Password: pw})
		if err != nil {
			b.Fatal(err)
		}
		logins[i] = l
	}
	return s, logins
}

func benchHandshake(b *testing.B, url func(i int) (string, http.Header)) {
	var n atomic.Int64
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			u, h := url(int(n.Add(1)))
			ws, _, err := d.Dial(u, h)
			if err != nil {
				b.Error(err)
				return
			}
			ws.Close()
		}
	})
}

// BenchmarkHandshake: WebSocket handshakes per second with 2×GOMAXPROCS concurrent
// dialers; "bare" is the no-auth baseline, "gatehouse" validates each connect with
// authsvc over gRPC against PostgreSQL (cookie credential, 256 distinct sessions).
func BenchmarkHandshake(b *testing.B) {
	b.Run("bare", func(b *testing.B) {
		u := bareEcho(b)
		b.SetParallelism(2)
		benchHandshake(b, func(int) (string, http.Header) { return u, nil })
	})
	b.Run("gatehouse", func(b *testing.B) {
		s, logins := benchSystem(b)
		b.SetParallelism(2)
		benchHandshake(b, func(i int) (string, http.Header) {
			l := logins[i%len(logins)]
			return wsURL(s.edge.addr, l.GetUser().GetId()), cookieHeader(s.edge.addr, l.GetToken())
		})
	})
}

// BenchmarkEchoRoundTrip: one message out and its echo back, on one socket per
// parallel goroutine.
func BenchmarkEchoRoundTrip(b *testing.B) {
	run := func(b *testing.B, dial func() *websocket.Conn) {
		b.SetParallelism(2)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			ws := dial()
			defer ws.Close()
			msg := []byte("hello")
			for pb.Next() {
				if err := ws.WriteMessage(websocket.TextMessage, msg); err != nil {
					b.Error(err)
					return
				}
				if _, _, err := ws.ReadMessage(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	b.Run("bare", func(b *testing.B) {
		u := bareEcho(b)
		run(b, func() *websocket.Conn {
			ws, _, err := websocket.DefaultDialer.Dial(u, nil)
			if err != nil {
				b.Fatal(err)
			}
			return ws
		})
	})
	b.Run("gatehouse", func(b *testing.B) {
		s, logins := benchSystem(b)
		var n atomic.Int64
		run(b, func() *websocket.Conn {
			l := logins[int(n.Add(1))%len(logins)]
			ws, _, err := websocket.DefaultDialer.Dial(wsURL(s.edge.addr, l.GetUser().GetId()), cookieHeader(s.edge.addr, l.GetToken()))
			if err != nil {
				b.Fatal(err)
			}
			return ws
		})
	})
}
