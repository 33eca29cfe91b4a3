package main

import (
	"errors"
	"flag"
	"fmt"
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
}

func (n *natsConfig) flags(fs *flag.FlagSet) {
	fs.StringVar(&n.url, "nats-url", env("EDGESVC_NATS_URL", ""), "NATS server URL(s), comma-separated: edges on one NATS and prefix are one system; empty: this edge alone. Credentials in the URL belong in the environment, not the command line (EDGESVC_NATS_URL)")
	fs.StringVar(&n.prefix, "nats-prefix", env("EDGESVC_NATS_PREFIX", "gatehouse"), "prefix of every NATS subject the edges use: dot-separated tokens of letters, digits, '-', '_' (EDGESVC_NATS_PREFIX)")
	fs.StringVar(&n.caFile, "nats-ca", env("EDGESVC_NATS_CA", ""), "PEM CA bundle to verify the NATS server's certificate; setting it connects with TLS (EDGESVC_NATS_CA)")
	fs.StringVar(&n.certFile, "nats-cert", env("EDGESVC_NATS_CERT", ""), "PEM client certificate for TLS to NATS; needs -nats-key and -nats-ca (EDGESVC_NATS_CERT)")
	fs.StringVar(&n.keyFile, "nats-key", env("EDGESVC_NATS_KEY", ""), "PEM private key for -nats-cert (EDGESVC_NATS_KEY)")
	fs.StringVar(&n.credsFile, "nats-creds", env("EDGESVC_NATS_CREDS", ""), "NATS credentials file (user JWT and NKey seed) (EDGESVC_NATS_CREDS)")
}

// apply checks the settings and puts them in cfg.
func (n *natsConfig) apply(fs *flag.FlagSet, cfg *edge.Config) error {
	if n.url == "" {
		if n.caFile != "" || n.certFile != "" || n.keyFile != "" || n.credsFile != "" {
			return errors.New("EDGESVC_NATS_CA, _CERT, _KEY and _CREDS need EDGESVC_NATS_URL")
		}
		return nil
	}
	fromFlag := false
	fs.Visit(func(f *flag.Flag) { fromFlag = fromFlag || f.Name == "nats-url" })
	if fromFlag && strings.Contains(n.url, "@") {
		return errors.New("-nats-url holds credentials, which any user can read from the command line: set EDGESVC_NATS_URL in the environment or use EDGESVC_NATS_CREDS")
	}
	if err := natslayer.Validate(n.url, n.prefix); err != nil {
		return fmt.Errorf("EDGESVC_NATS_URL / EDGESVC_NATS_PREFIX: %w", err)
	}
	cfg.NATSURL, cfg.NATSPrefix = n.url, n.prefix
	if n.caFile != "" {
		tc, err := clientTLS("NATS", "EDGESVC_NATS", n.caFile, n.certFile, n.keyFile)
		if err != nil {
			return err
		}
		cfg.NATSOptions = append(cfg.NATSOptions, nats.Secure(tc))
	} else if n.certFile != "" || n.keyFile != "" {
		return errors.New("EDGESVC_NATS_CERT/EDGESVC_NATS_KEY need EDGESVC_NATS_CA")
	}
	if n.credsFile != "" {
		if _, err := os.ReadFile(n.credsFile); err != nil {
			return fmt.Errorf("EDGESVC_NATS_CREDS: %w", err)
		}
		cfg.NATSOptions = append(cfg.NATSOptions, nats.UserCredentials(n.credsFile))
	}
	return nil
}
