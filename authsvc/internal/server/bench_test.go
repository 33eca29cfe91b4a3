package server_test

import (
	"testing"

	authv1 "github.com/gatehouse/gatehouse/gen/gatehouse/auth/v1"

	"github.com/gatehouse/gatehouse/authsvc/internal/server"
)

// BenchmarkValidateSession: ValidateSession over loopback gRPC against PostgreSQL,
// one caller (latency) and 8 per CPU (throughput), 256 distinct sessions.
func BenchmarkValidateSession(b *testing.B) {
	e := newEnv(b, server.Config{AdminToken: adminToken})
	e.createUser(b, "alice", "password1")
	tokens := make([]string, 256)
	for i := range tokens {
		l, err := e.auth.Login(b.Context(), &authv1.LoginRequest{Username: "alice", Password: "password1"})
		if err != nil {
			b.Fatal(err)
		}
		tokens[i] = l.GetToken()
	}
	b.Run("serial", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if _, err := e.auth.ValidateSession(b.Context(), &authv1.ValidateSessionRequest{Token: tokens[i%len(tokens)]}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				i++
				if _, err := e.auth.ValidateSession(b.Context(), &authv1.ValidateSessionRequest{Token: tokens[i%len(tokens)]}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkHashToken is the per-call hashing ValidateSession does.
func BenchmarkHashToken(b *testing.B) {
	for b.Loop() {
		server.HashToken("wISXoPAn1KUkyp2RJQtJ4CxJXrAUx59HGX5mTCTuHjk")
	}
}
