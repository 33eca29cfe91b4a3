package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// TestFrontEndRules checks who counts as a front end for peers the loopback tests
// cannot be: another host, and mTLS clients with and without a listed name.
func TestFrontEndRules(t *testing.T) {
	const tok = "front-end-token-0123456789abcdefgh"
	remote := &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 4000}
	local := &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 4000}
	withCert := func(dns ...string) credentials.AuthInfo {
		leaf := &x509.Certificate{DNSNames: dns}
		return credentials.TLSInfo{State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf}}}}
	}
	for _, c := range []struct {
		name   string
		cfg    Config
		addr   net.Addr
		auth   credentials.AuthInfo
		bearer string
		want   bool
	}{
		{"nothing configured, loopback", Config{}, local, nil, "", true},
		{"nothing configured, another host", Config{}, remote, nil, "", false},
		{"token configured, loopback without it", Config{FrontendToken: tok}, local, nil, "", false},
		{"token configured, another host with it", Config{FrontendToken: tok}, remote, nil, tok, true},
		{"admin token from another host", Config{AdminToken: tok}, remote, nil, tok, true},
		{"listed certificate name", Config{FrontendClientNames: []string{"Edge.Internal"}}, remote, withCert("other", "edge.internal"), "", true},
		{"unlisted certificate name", Config{FrontendClientNames: []string{"edge.internal"}}, remote, withCert("service.internal"), "", false},
		{"names configured, loopback without a listed certificate", Config{FrontendClientNames: []string{"edge.internal"}}, local, withCert("x"), "", false},
	} {
		s := New(nil, nil, nil, c.cfg, nil)
		ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: c.addr, AuthInfo: c.auth})
		if c.bearer != "" {
			ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", "Bearer "+c.bearer))
		}
		got, err := s.frontEnd(ctx)
		if err != nil || got != c.want {
			t.Errorf("%s: front end = %v, %v; want %v", c.name, got, err, c.want)
		}
	}
}

// TestLimit: the bounds hold per key and in total, and a release frees the place once.
func TestLimit(t *testing.T) {
	l := &limit{max: 3, per: 2}
	r1, o1 := l.take("a")
	_, o2 := l.take("a")
	if o1 != within || o2 != within {
		t.Fatal("refused within the bounds")
	}
	if _, o := l.take("a"); o != overKey {
		t.Fatalf("third for one key: %v, want overKey", o)
	}
	if _, o := l.take("b"); o != within {
		t.Fatal("another key refused")
	}
	if _, o := l.take("c"); o != overTotal {
		t.Fatalf("fourth in all: %v, want overTotal", o)
	}
	r1()
	r1() // a second release changes nothing
	if _, o := l.take("a"); o != within {
		t.Fatal("a released place was not free")
	}
	if _, o := l.take("c"); o != overTotal {
		t.Fatal("a double release freed two places")
	}
	open := &limit{} // zero bounds: no limit
	for range 1000 {
		if _, o := open.take("k"); o != within {
			t.Fatal("a zero limit refused")
		}
	}
}
