package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/gatehouse/gatehouse/edgesvc/edge"
	"github.com/gatehouse/gatehouse/edgesvc/edgeapi"
)

// apiConfig is the edge API's listener and credentials.
type apiConfig struct {
	listen, token, tokenFile     string
	tlsCert, tlsKey, tlsClientCA string
}

// loadToken reads the token from EDGESVC_API_TOKEN or the token file (not both). The
// token is never a flag: flags show in /proc/*/cmdline.
func (c *apiConfig) loadToken() error {
	tok, err := readSecret("edge API token", "EDGESVC_API_TOKEN", "EDGESVC_API_TOKEN_FILE (-api-token-file)", c.tokenFile)
	if err != nil {
		return err
	}
	if n := len(tok); n > 0 && n < minToken {
		return fmt.Errorf("the edge API token must be at least %d bytes, not %d: anyone who guesses it can reach every user; make one with  head -c 32 /dev/urandom | base64", minToken, n)
	}
	c.token = tok
	return nil
}

// minToken is the shortest edge API token the edge accepts, in bytes.
const minToken = 32

// readSecret returns the secret (what, for messages) in the environment variable envVar or in file (named
// by the setting fileSetting), not both, with surrounding white space removed. ""
// when neither is set.
func readSecret(what, envVar, fileSetting, file string) (string, error) {
	v := strings.TrimSpace(os.Getenv(envVar)) // as a presented token is
	if file == "" {
		return v, nil
	}
	if v != "" {
		return "", fmt.Errorf("%s: set %s or %s, not both", what, envVar, fileSetting)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%s file (%s): %w", what, fileSetting, err)
	}
	if v = strings.TrimSpace(string(b)); v == "" {
		return "", fmt.Errorf("%s file %s (%s) is empty", what, file, fileSetting)
	}
	return v, nil
}

// serve builds the edge API's gRPC server (EdgeService, health, reflection), its
// health server and its listener. readLimit is the largest message the edge sends, so
// a larger Send is answered PAYLOAD_TOO_LARGE rather than cut off by gRPC.
func (c *apiConfig) serve(srv *edge.Server, readLimit int64, log *slog.Logger) (*grpc.Server, *health.Server, net.Listener, error) {
	creds, err := c.credentials()
	if err != nil {
		return nil, nil, nil, err
	}
	opts := append(edgeapi.Auth(c.token, c.tlsClientCA != ""), creds, grpc.MaxRecvMsgSize(int(readLimit)+64<<10))
	g := grpc.NewServer(opts...)
	edgeapi.New(srv, log).Register(g)
	hs := health.NewServer()
	hs.SetServingStatus("gatehouse.edge.v1.EdgeService", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(g, hs)
	reflection.Register(g)
	lis, err := net.Listen("tcp", c.listen)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("edge API (EDGESVC_API_LISTEN): %w", err)
	}
	if c.tlsCert == "" {
		if ap, err := netip.ParseAddrPort(lis.Addr().String()); err == nil && !ap.Addr().IsLoopback() {
			log.Warn("the edge API listens on a non-loopback address without TLS: its token crosses the network in clear (set EDGESVC_API_TLS_CERT and EDGESVC_API_TLS_KEY)", "addr", lis.Addr().String())
		}
	}
	return g, hs, lis, nil
}

// credentials returns TLS (with optional client certificates) when a certificate is
// configured, plaintext otherwise.
func (c *apiConfig) credentials() (grpc.ServerOption, error) {
	if c.tlsCert == "" && c.tlsKey == "" {
		if c.tlsClientCA != "" {
			return nil, errors.New("EDGESVC_API_TLS_CLIENT_CA needs EDGESVC_API_TLS_CERT and EDGESVC_API_TLS_KEY")
		}
		return grpc.EmptyServerOption{}, nil
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return nil, errors.New("EDGESVC_API_TLS_CERT and EDGESVC_API_TLS_KEY go together")
	}
	cert, err := tls.LoadX509KeyPair(c.tlsCert, c.tlsKey)
	if err != nil {
		return nil, fmt.Errorf("edge API TLS certificate: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if c.tlsClientCA != "" {
		pem, err := os.ReadFile(c.tlsClientCA)
		if err != nil {
			return nil, fmt.Errorf("edge API client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("edge API client CA %s: no PEM certificates", c.tlsClientCA)
		}
		// A certificate is optional: callers without one use the token.
		tc.ClientCAs, tc.ClientAuth = pool, tls.VerifyClientCertIfGiven
	}
	return grpc.Creds(credentials.NewTLS(tc)), nil
}
