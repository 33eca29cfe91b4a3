package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"
	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// certAuthority is a throwaway CA made in-process for one test.
type certAuthority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t testing.TB, name string) *certAuthority {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &certAuthority{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue signs a leaf certificate for 127.0.0.1, localhost and the extra DNS names,
// usable as a server or a client certificate, and returns its PEM certificate and key.
func (ca *certAuthority) issue(t testing.TB, cn string, dns ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: append([]string{"localhost"}, dns...),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// tlsFiles writes the PEM files the services and grpcurl read, as the README names
// them, into dir: ca.pem, server.pem/server-key.pem, client.pem/client-key.pem (the
// edge's, also named edge.gatehouse.internal), service.pem/service-key.pem (another
// client of the same CA, not a front end) and rogue.pem/rogue-key.pem (a client
// certificate from another CA).
func tlsFiles(t testing.TB, dir string) map[string]string {
	t.Helper()
	ca, other := newCA(t, "gatehouse test CA"), newCA(t, "rogue CA")
	srv, srvKey := ca.issue(t, "authsvc")
	cli, cliKey := ca.issue(t, "edgesvc", edgeCertName)
	svc, svcKey := ca.issue(t, "some-service", "service.gatehouse.internal")
	rogue, rogueKey := other.issue(t, "edgesvc", edgeCertName)
	files := map[string][]byte{
		"ca.pem": ca.pem, "server.pem": srv, "server-key.pem": srvKey,
		"client.pem": cli, "client-key.pem": cliKey, "service.pem": svc, "service-key.pem": svcKey,
		"rogue.pem": rogue, "rogue-key.pem": rogueKey,
	}
	out := map[string]string{}
	for name, b := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		out[name] = p
	}
	return out
}

func TestTLSAndMTLS(t *testing.T) {
	f := tlsFiles(t, t.TempDir())
	auth := start(t, "authsvc", authEnv("127.0.0.1:0",
		"AUTHSVC_TLS_CERT="+f["server.pem"], "AUTHSVC_TLS_KEY="+f["server-key.pem"], "AUTHSVC_TLS_CLIENT_CA="+f["ca.pem"])...)

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(mustRead(t, f["ca.pem"]))
	dialWith := func(t *testing.T, creds credentials.TransportCredentials) error {
		cc, err := grpc.NewClient(auth.addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		_, err = authv1.NewAdminServiceClient(cc).ListUsers(adminCtx(t.Context()), &authv1.ListUsersRequest{})
		return err
	}
	clientCert := func(t *testing.T, cert, key string) []tls.Certificate {
		c, err := tls.LoadX509KeyPair(f[cert], f[key])
		if err != nil {
			t.Fatal(err)
		}
		return []tls.Certificate{c}
	}
	t.Run("plaintext is refused", func(t *testing.T) {
		if err := dialWith(t, insecure.NewCredentials()); err == nil {
			t.Fatal("a plaintext call to a TLS authsvc succeeded")
		}
	})
	t.Run("TLS without a client certificate is refused", func(t *testing.T) {
		if err := dialWith(t, credentials.NewTLS(&tls.Config{RootCAs: pool})); err == nil {
			t.Fatal("a call without a client certificate succeeded")
		}
	})
	t.Run("a client certificate from another CA is refused", func(t *testing.T) {
		if err := dialWith(t, credentials.NewTLS(&tls.Config{RootCAs: pool, Certificates: clientCert(t, "rogue.pem", "rogue-key.pem")})); err == nil {
			t.Fatal("a call with a rogue client certificate succeeded")
		}
	})
	t.Run("the right client certificate is accepted", func(t *testing.T) {
		if err := dialWith(t, credentials.NewTLS(&tls.Config{RootCAs: pool, Certificates: clientCert(t, "client.pem", "client-key.pem")})); err != nil {
			t.Fatalf("mTLS call: %v", err)
		}
	})
	t.Run("an edge with a rogue client certificate fails closed", func(t *testing.T) {
		edge := startEdge(t, auth.addr, "EDGESVC_AUTH_CA="+f["ca.pem"], "EDGESVC_AUTH_CERT="+f["rogue.pem"], "EDGESVC_AUTH_KEY="+f["rogue-key.pem"])
		_, code := dialWS(t, wsURL(edge.addr, 1), http.Header{"Authorization": {"Bearer AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}})
		if code != http.StatusServiceUnavailable {
			t.Fatalf("handshake through an edge authsvc refuses = %d, want 503", code)
		}
	})

	t.Run("browser path over HTTPS and WSS with mTLS to authsvc", func(t *testing.T) {
		edge := startEdge(t, auth.addr,
			"EDGESVC_TLS_CERT="+f["server.pem"], "EDGESVC_TLS_KEY="+f["server-key.pem"],
			"EDGESVC_AUTH_CA="+f["ca.pem"], "EDGESVC_AUTH_CERT="+f["client.pem"], "EDGESVC_AUTH_KEY="+f["client-key.pem"])
		cc, err := grpc.NewClient(auth.addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, Certificates: clientCert(t, "client.pem", "client-key.pem")})))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		s := &system{admin: authv1.NewAdminServiceClient(cc), authC: authv1.NewAuthServiceClient(cc)}
		u, pw := s.newUser(t)

		base := "https://" + edge.addr
		c := browser(t)
		c.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
		resp := postForm(t, c, base+"/login", url.Values{"username": {u.GetUsername()}, "password": {pw}}, base)
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("login over HTTPS: %d %s", resp.StatusCode, readBody(resp))
		}
		var cookie *http.Cookie
		for _, ck := range resp.Cookies() {
			if ck.Name == "__Host-sessionid" { // under https, the __Host- form only
				cookie = ck
			}
		}
		if cookie == nil || !cookie.Secure || !cookie.HttpOnly || cookie.Path != "/" || cookie.Domain != "" {
			t.Fatalf("cookie over HTTPS = %+v, want __Host-sessionid, Secure, HttpOnly, Path=/", cookie)
		}
		d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}, HandshakeTimeout: 10 * time.Second}
		ws, r, err := d.Dial("wss://"+edge.addr+"/ws/myapp/"+itoa(u.GetId())+"/", http.Header{
			"Cookie": {"__Host-sessionid=" + cookie.Value}, "Origin": {base},
		})
		if err != nil {
			t.Fatalf("wss dial: %v %v", err, r)
		}
		defer ws.Close()
		echo(t, ws, "over wss")
		if _, err := s.admin.RevokeUserSessions(adminCtx(t.Context()), &authv1.RevokeUserSessionsRequest{UserId: u.GetId()}); err != nil {
			t.Fatal(err)
		}
		expectClose(t, ws, 4401, "revoked", closeWithin)
		// Plain HTTP to the TLS edge gets nothing useful.
		if resp, err := http.Get("http://" + edge.addr + "/healthz"); err == nil && resp.StatusCode == 200 {
			t.Fatal("the TLS edge answered plain HTTP")
		}
	})
}

func mustRead(t testing.TB, p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// edgeCertName is the DNS name of the edge's client certificate from tlsFiles.
const edgeCertName = "edge.gatehouse.internal"

// mtlsConn dials addr with the CA and client certificate in f (from tlsFiles).
func mtlsConn(t testing.TB, addr string, f map[string]string) *grpc.ClientConn {
	return mtlsConnAs(t, addr, f, "client")
}

// mtlsConnAs dials addr with the CA in f and the client certificate name.pem.
func mtlsConnAs(t testing.TB, addr string, f map[string]string, name string) *grpc.ClientConn {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(mustRead(t, f["ca.pem"]))
	cert, err := tls.LoadX509KeyPair(f[name+".pem"], f[name+"-key.pem"])
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// TestPlaintextOffLoopback: authsvc refuses to serve plaintext gRPC on an address
// other than loopback unless told so by a setting named insecure; the edge warns when
// it would dial authsvc in plaintext off loopback. (No test listens off loopback: the
// address used, 192.0.2.1 from TEST-NET-1, is not this machine's, so the one allowed
// start fails at the bind, past the check.)
func TestPlaintextOffLoopback(t *testing.T) {
	run := func(env ...string) string {
		ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(binDir, "authsvc"))
		cmd.Env = append([]string{"DATABASE_URL=" + dbURL}, env...)
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("authsvc %v started", env)
		}
		return string(out)
	}
	if out := run("AUTHSVC_LISTEN=192.0.2.1:0"); !strings.Contains(out, "not a loopback address") || !strings.Contains(out, "AUTHSVC_INSECURE_PLAINTEXT") {
		t.Fatalf("plaintext off loopback: %s; want a refusal saying how to serve TLS or allow it", out)
	}
	if out := run("AUTHSVC_LISTEN=192.0.2.1:0", "AUTHSVC_INSECURE_PLAINTEXT=1"); strings.Contains(out, "not a loopback address") || !strings.Contains(out, "192.0.2.1") {
		t.Fatalf("with AUTHSVC_INSECURE_PLAINTEXT=1: %s; want past the check, failing at the bind", out)
	}
	edge := startEdge(t, "192.0.2.1:50051") // not reachable: the edge starts all the same, unready
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(edge.logs(), "dialing authsvc in plaintext off loopback"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no warning about plaintext off loopback:\n%s", edge.logs())
		}
	}
}
