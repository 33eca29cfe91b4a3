package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/edgesvc/edge"
	"github.com/gatehouse/gatehouse/edgesvc/internal/remote"
)

// routesFile is EDGESVC_ROUTES_FILE: the routes whose connections a consumer service
// in any language runs (gatehouse.app.v1.ConsumerService).
type routesFile struct {
	Routes []routeSpec `json:"routes"`
}

type routeSpec struct {
	Path        string `json:"path"`          // a pattern: /ws/commands/{room}/ ({user_id}: only that user)
	Consumer    string `json:"consumer"`      // host:port of the service
	TokenFile   string `json:"token_file"`    // its bearer token, in a file
	CA          string `json:"ca"`            // PEM CA to verify it: TLS
	Cert        string `json:"cert"`          // client certificate: mTLS
	Key         string `json:"key"`           // its key
	Timeout     string `json:"timeout"`       // each call's deadline; default 2s
	MaxInFlight int    `json:"max_in_flight"` // calls at once; default 256
	Keepalive   string `json:"keepalive"`     // ping the service after this long without a word; default none
}

// loadRoutes reads the routes file at path (empty: none).
func loadRoutes(path string) ([]remote.Route, error) {
	if path == "" {
		return nil, nil
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("EDGESVC_ROUTES_FILE: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var f routesFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("EDGESVC_ROUTES_FILE %s: %w (want {\"routes\": [{\"path\": \"/ws/app/\", \"consumer\": \"host:port\", ...}]})", path, err)
	}
	var out []remote.Route
	seen := map[string]bool{}
	for i, s := range f.Routes {
		where := fmt.Sprintf("EDGESVC_ROUTES_FILE %s: route %d (%q)", path, i+1, s.Path)
		if !strings.HasPrefix(s.Path, "/") || strings.ContainsAny(s.Path, " \t") || seen[s.Path] {
			return nil, fmt.Errorf("%s: path must be a path pattern such as /ws/commands/{room}/, given once", where)
		}
		seen[s.Path] = true
		if s.Consumer == "" {
			return nil, fmt.Errorf("%s: consumer (host:port of the service) is required", where)
		}
		r := remote.Route{Pattern: s.Path, Address: s.Consumer, MaxInFlight: s.MaxInFlight}
		if s.Timeout != "" {
			if r.Timeout, err = time.ParseDuration(s.Timeout); err != nil || r.Timeout <= 0 {
				return nil, fmt.Errorf("%s: timeout %q: want a duration such as 2s", where, s.Timeout)
			}
		}
		if s.Keepalive != "" {
			if r.Keepalive, err = time.ParseDuration(s.Keepalive); err != nil || r.Keepalive < 10*time.Second {
				return nil, fmt.Errorf("%s: keepalive %q: want a duration of at least 10s (gRPC's floor), such as 30s", where, s.Keepalive)
			}
		}
		if s.MaxInFlight < 0 {
			return nil, fmt.Errorf("%s: max_in_flight must not be negative", where)
		}
		if s.TokenFile != "" {
			if r.Token, err = readSecret("consumer token", "", where+": token_file", s.TokenFile); err != nil {
				return nil, err
			}
		}
		if s.CA != "" {
			if r.TLS, err = clientTLS("consumer "+s.Consumer, where+": cert/key", s.CA, s.Cert, s.Key); err != nil {
				return nil, err
			}
		} else if s.Cert != "" || s.Key != "" {
			return nil, fmt.Errorf("%s: cert and key need ca (mTLS runs over TLS)", where)
		}
		out = append(out, r)
	}
	return out, nil
}

// handleRoutes serves each route with its consumer service.
func handleRoutes(srv *edge.Server, routes []remote.Route, log *slog.Logger) (closers []func() error, err error) {
	m := remote.NewMetrics(srv.Metrics())
	for _, r := range routes {
		cl, err := remote.New(srv, r, m, log)
		if err != nil {
			return closers, err
		}
		closers = append(closers, cl.Close)
		if err := handle(srv, r.Pattern, cl.Consumer); err != nil {
			return closers, fmt.Errorf("EDGESVC_ROUTES_FILE: route %q: %w", r.Pattern, err)
		}
		log.Info("route to a consumer service", "path", r.Pattern, "consumer", r.Address, "tls", r.TLS != nil, "token", r.Token != "")
		if r.Token == "" && r.TLS == nil {
			log.Warn("route to a consumer service without a token (token_file) or mTLS: the service cannot tell the edge from any other caller, which could act as any user", "path", r.Pattern, "consumer", r.Address)
		} else if r.Token == "" && r.TLS.Certificates == nil {
			log.Warn("route to a consumer service without a token (token_file) or a client certificate: the service cannot tell the edge from any other caller", "path", r.Pattern, "consumer", r.Address)
		}
		if r.TLS == nil && !isLoopback(r.Address) {
			log.Warn("route to a consumer service off loopback in plaintext: messages, user ids and the token cross the network in clear (set ca, and cert/key for mTLS)", "path", r.Pattern, "consumer", r.Address)
		}
	}
	return closers, nil
}

// handle is srv.Handle, with a pattern it refuses (a bad one, or one taken) an error.
func handle(srv *edge.Server, pattern string, consumer func() edge.Consumer) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = errors.New(fmt.Sprint(p))
		}
	}()
	srv.Handle(pattern, consumer)
	return nil
}
