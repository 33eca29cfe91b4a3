// Package pgtest gives each test package its own fresh PostgreSQL database, created
// from the server named by GATEHOUSE_TEST_DATABASE and dropped when the package's
// tests end. Tests never skip for a missing database: they fail and say how to get
// one (`make test` starts one).
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvVar names the environment variable holding an admin URL of the test server.
const EnvVar = "GATEHOUSE_TEST_DATABASE"

// Main creates a database, stores its URL in *dbURL, runs the package's tests and
// drops the database. Call it from TestMain. Each after function runs once the tests
// pass; an error from one fails the run.
func Main(m *testing.M, dbURL *string, after ...func() error) {
	u, drop, err := Create(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
		os.Exit(1)
	}
	*dbURL = u
	code := m.Run()
	for _, f := range after {
		if err := f(); code == 0 && err != nil {
			fmt.Fprintln(os.Stderr, "FAIL:", err)
			code = 1
		}
	}
	if err := drop(); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest: drop database:", err)
	}
	os.Exit(code)
}

// New creates a database for one test and drops it in tb.Cleanup.
func New(tb testing.TB) string {
	tb.Helper()
	u, drop, err := Create(tb.Context())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := drop(); err != nil {
			tb.Errorf("drop database: %v", err)
		}
	})
	return u
}

// Create makes a fresh database and returns its URL and a function that drops it.
func Create(ctx context.Context) (string, func() error, error) {
	admin := os.Getenv(EnvVar)
	if admin == "" {
		return "", nil, fmt.Errorf("%s is not set: run `make test`, which starts a PostgreSQL, "+
			"or set it to an admin URL such as postgres://postgres@127.0.0.1:5432/postgres", EnvVar)
	}
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return "", nil, fmt.Errorf("connect to %s=%s: %w", EnvVar, admin, err)
	}
	defer conn.Close(context.Background())
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "gatehouse_test_" + hex.EncodeToString(b[:])
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", nil, fmt.Errorf("create database: %w", err)
	}
	u, err := url.Parse(admin)
	if err != nil {
		return "", nil, err
	}
	u.Path = "/" + name
	drop := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, admin)
		if err != nil {
			return err
		}
		defer c.Close(ctx)
		_, err = c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
		return err
	}
	return u.String(), drop, nil
}
