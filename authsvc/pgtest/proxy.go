package pgtest

import (
	"cmp"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// Proxy is a TCP proxy for fault tests: between a client and a server (a database, a
// gRPC service) it can go silent — swallowing what either side sends without closing
// anything, as a peer whose host vanished looks — or down — closing every connection
// and refusing new ones, as a stopped server looks.
type Proxy struct {
	Addr string // host:port to dial instead of the server's

	silent atomic.Bool
	down   atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
}

// NewProxy proxies to the TCP server at addr until tb ends.
func NewProxy(tb testing.TB, addr string) *Proxy {
	tb.Helper()
	return newProxy(tb, "tcp", addr)
}

func newProxy(tb testing.TB, network, addr string) *Proxy {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &Proxy{Addr: lis.Addr().String()}
	tb.Cleanup(func() {
		_ = lis.Close()
		p.closeAll()
	})
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial(network, addr)
			if err != nil {
				_ = c.Close()
				continue
			}
			p.mu.Lock()
			if p.down.Load() { // checked under mu, which Down's closing takes too
				p.mu.Unlock()
				_ = c.Close()
				_ = s.Close()
				continue
			}
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			go p.pipe(s, c)
			go p.pipe(c, s)
		}
	}()
	return p
}

// ProxyURL returns the database URL dbURL pointed at a new Proxy to its server: over
// TCP whether the server is reached over TCP or, as the private cluster is (a host=
// of a directory), over a Unix socket.
func ProxyURL(tb testing.TB, dbURL string) (string, *Proxy) {
	tb.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		tb.Fatal(err)
	}
	q := u.Query()
	var p *Proxy
	if dir := q.Get("host"); strings.HasPrefix(dir, "/") {
		port := cmp.Or(u.Port(), q.Get("port"), "5432")
		p = newProxy(tb, "unix", filepath.Join(dir, ".s.PGSQL."+port))
		q.Del("host")
		q.Del("port")
		u.RawQuery = q.Encode()
	} else {
		p = NewProxy(tb, u.Host)
	}
	u.Host = p.Addr
	return u.String(), p
}

// Silence makes the proxy swallow everything (true) or carry it again (false).
func (p *Proxy) Silence(on bool) { p.silent.Store(on) }

// Down closes every connection and refuses new ones (true), or accepts them again.
func (p *Proxy) Down(on bool) {
	p.mu.Lock()
	p.down.Store(on)
	p.mu.Unlock()
	if on {
		p.closeAll()
	}
}

func (p *Proxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

func (p *Proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		if p.silent.Load() {
			continue
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}
