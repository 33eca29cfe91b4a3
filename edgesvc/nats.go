package main

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/gatehouse/gatehouse/edgesvc/edge"
	"github.com/gatehouse/gatehouse/edgesvc/internal/natslayer"
)

// natsConfig is how the edge joins other edges over NATS.
type natsConfig struct {
	url, prefix               string
	caFile, certFile, keyFile string
	credsFile                 string
	nkeyFile, tokenFile       string
	insecure                  bool
}

// howToMakeAKey is said wherever a layer key is missing or too short.
const howToMakeAKey = "make one with `openssl rand -base64 48 > layer.key` (at least 32 bytes), give every edge of the system the same file as EDGESVC_LAYER_KEY_FILE, and keep it as secret as a password"

func (n *natsConfig) flags(fs *flag.FlagSet) {
	fs.StringVar(&n.url, "nats-url", env("EDGESVC_NATS_URL", ""), "NATS server URL(s), comma-separated: edges on one NATS, prefix and layer key are one system; empty: this edge alone. Needs a layer key (EDGESVC_LAYER_KEY_FILE or EDGESVC_LAYER_KEY, never a flag). Off loopback it needs TLS and credentials. Credentials in the URL belong in the environment, not the command line (EDGESVC_NATS_URL)")
	fs.StringVar(&n.prefix, "nats-prefix", env("EDGESVC_NATS_PREFIX", "gatehouse"), "prefix of every NATS subject the edges use: dot-separated tokens of letters, digits, '-', '_' (EDGESVC_NATS_PREFIX)")
	fs.StringVar(&n.caFile, "nats-ca", env("EDGESVC_NATS_CA", ""), "PEM CA bundle to verify the NATS server's certificate; setting it connects with TLS (EDGESVC_NATS_CA)")
	fs.StringVar(&n.certFile, "nats-cert", env("EDGESVC_NATS_CERT", ""), "PEM client certificate for TLS to NATS; needs -nats-key and -nats-ca (EDGESVC_NATS_CERT)")
	fs.StringVar(&n.keyFile, "nats-key", env("EDGESVC_NATS_KEY", ""), "PEM private key for -nats-cert (EDGESVC_NATS_KEY)")
	fs.StringVar(&n.credsFile, "nats-creds", env("EDGESVC_NATS_CREDS", ""), "NATS credentials file (user JWT and NKey seed) (EDGESVC_NATS_CREDS)")
	fs.StringVar(&n.nkeyFile, "nats-nkey-file", env("EDGESVC_NATS_NKEY_FILE", ""), "file holding the edge's NATS NKey seed (SU...), for a server that knows its public key (EDGESVC_NATS_NKEY_FILE)")
	fs.StringVar(&n.tokenFile, "nats-token-file", env("EDGESVC_NATS_TOKEN_FILE", ""), "file holding the NATS server's authorization token (EDGESVC_NATS_TOKEN_FILE)")
	fs.BoolVar(&n.insecure, "nats-insecure", env("EDGESVC_NATS_INSECURE", "") == "1", "allow a NATS server off loopback without TLS or credentials (EDGESVC_NATS_INSECURE=1); anyone on the path then sees who talks to whom, though not what (the layer key seals it)")
}

// apply checks the settings and puts them in cfg; warnings are for the log.
func (n *natsConfig) apply(fs *flag.FlagSet, cfg *edge.Config) (warnings []string, err error) {
	if n.url == "" {
		if n.caFile != "" || n.certFile != "" || n.keyFile != "" || n.credsFile != "" || n.nkeyFile != "" || n.tokenFile != "" {
			return nil, errors.New("EDGESVC_NATS_CA, _CERT, _KEY, _CREDS, _NKEY_FILE and _TOKEN_FILE need EDGESVC_NATS_URL")
		}
		if os.Getenv("EDGESVC_LAYER_KEY") != "" || os.Getenv("EDGESVC_LAYER_KEY_FILE") != "" || os.Getenv("EDGESVC_LAYER_KEY_FALLBACKS_FILE") != "" {
			return nil, errors.New("EDGESVC_LAYER_KEY, _FILE and _FALLBACKS_FILE need EDGESVC_NATS_URL (one edge alone seals nothing)")
		}
		return nil, nil
	}
	fromFlag := false
	fs.Visit(func(f *flag.Flag) { fromFlag = fromFlag || f.Name == "nats-url" })
	if fromFlag && strings.Contains(n.url, "@") {
		return nil, errors.New("-nats-url holds credentials, which any user can read from the command line: set EDGESVC_NATS_URL in the environment or use EDGESVC_NATS_CREDS")
	}
	if err := natslayer.Validate(n.url, n.prefix); err != nil {
		return nil, fmt.Errorf("EDGESVC_NATS_URL / EDGESVC_NATS_PREFIX: %w", err)
	}
	cfg.NATSURL, cfg.NATSPrefix = n.url, n.prefix
	if n.caFile != "" {
		tc, err := clientTLS("NATS", "EDGESVC_NATS", n.caFile, n.certFile, n.keyFile)
		if err != nil {
			return nil, err
		}
		cfg.NATSOptions = append(cfg.NATSOptions, nats.Secure(tc))
	} else if n.certFile != "" || n.keyFile != "" {
		return nil, errors.New("EDGESVC_NATS_CERT/EDGESVC_NATS_KEY need EDGESVC_NATS_CA")
	}
	creds := 0
	if n.credsFile != "" {
		if _, err := os.ReadFile(n.credsFile); err != nil {
			return nil, fmt.Errorf("EDGESVC_NATS_CREDS: %w", err)
		}
		cfg.NATSOptions = append(cfg.NATSOptions, nats.UserCredentials(n.credsFile))
		creds++
	}
	if n.nkeyFile != "" {
		opt, err := nats.NkeyOptionFromSeed(n.nkeyFile)
		if err != nil {
			return nil, fmt.Errorf("EDGESVC_NATS_NKEY_FILE: %w", err)
		}
		cfg.NATSOptions = append(cfg.NATSOptions, opt)
		creds++
	}
	if n.tokenFile != "" {
		tok, err := readSecret("NATS token", "", "EDGESVC_NATS_TOKEN_FILE", n.tokenFile)
		if err != nil {
			return nil, err
		}
		cfg.NATSOptions = append(cfg.NATSOptions, nats.Token(tok))
		creds++
	}
	if creds > 1 {
		return nil, errors.New("EDGESVC_NATS_CREDS, EDGESVC_NATS_NKEY_FILE and EDGESVC_NATS_TOKEN_FILE: set one")
	}
	hasCreds := creds > 0
	for _, u := range natsURLs(n.url) {
		if isLoopbackHost(u.Hostname()) {
			continue
		}
		tls := n.caFile != "" || u.Scheme == "tls" || u.Scheme == "wss"
		userCreds := u.User != nil
		if tls && (hasCreds || userCreds) {
			continue
		}
		var missing []string
		if !tls {
			missing = append(missing, "TLS (EDGESVC_NATS_CA, or a tls:// URL)")
		}
		if !hasCreds && !userCreds {
			missing = append(missing, "credentials (EDGESVC_NATS_CREDS, EDGESVC_NATS_NKEY_FILE, EDGESVC_NATS_TOKEN_FILE, or user:password@ in the URL)")
		}
		what := fmt.Sprintf("NATS server %s is off loopback without %s", u.Host, strings.Join(missing, " or "))
		if !n.insecure {
			return nil, errors.New(what + ": anyone on the path sees the edges' traffic and anyone who reaches the server may publish on it. Set them, or EDGESVC_NATS_INSECURE=1 to go on without")
		}
		warnings = append(warnings, what+": going on as EDGESVC_NATS_INSECURE=1 says")
	}
	if cfg.LayerKey, cfg.LayerKeyFallbacks, err = layerKeys(); err != nil {
		return nil, err
	}
	return warnings, nil
}

// natsURLs parses the comma-separated URLs (Validate has checked them).
func natsURLs(urls string) []*url.URL {
	var out []*url.URL
	for _, u := range strings.Split(urls, ",") {
		u = strings.TrimSpace(u)
		if !strings.Contains(u, "://") {
			u = "nats://" + u
		}
		if p, err := url.Parse(u); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// layerKeys reads the layer key (EDGESVC_LAYER_KEY_FILE or EDGESVC_LAYER_KEY: never
// a flag, which any user could read) and the fallbacks (EDGESVC_LAYER_KEY_FALLBACKS_FILE,
// one a line).
func layerKeys() (key []byte, fallbacks [][]byte, err error) {
	k, err := readSecret("layer key", "EDGESVC_LAYER_KEY", "EDGESVC_LAYER_KEY_FILE", os.Getenv("EDGESVC_LAYER_KEY_FILE"))
	if err != nil {
		return nil, nil, err
	}
	if k == "" {
		return nil, nil, errors.New("EDGESVC_NATS_URL is set but no layer key is: every message between edges is sealed with it, so a NATS client without it can read nothing and forge nothing. " + howToMakeAKey)
	}
	if len(k) < edge.MinLayerKeyBytes {
		return nil, nil, fmt.Errorf("the layer key is %d bytes, at least %d are needed: %s", len(k), edge.MinLayerKeyBytes, howToMakeAKey)
	}
	if f := os.Getenv("EDGESVC_LAYER_KEY_FALLBACKS_FILE"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, nil, fmt.Errorf("EDGESVC_LAYER_KEY_FALLBACKS_FILE: %w", err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			line = strings.TrimSpace(line)
			if line == "" {
				continue
			}
			if len(line) < edge.MinLayerKeyBytes {
				return nil, nil, fmt.Errorf("EDGESVC_LAYER_KEY_FALLBACKS_FILE %s: line %d is %d bytes, at least %d are needed (one key a line)", f, i+1, len(line), edge.MinLayerKeyBytes)
			}
			fallbacks = append(fallbacks, []byte(line))
		}
	}
	return []byte(k), fallbacks, nil
}
