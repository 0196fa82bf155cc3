package main

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// BenchmarkColdWake measures a client's connect plus SELECT 1 on a
// suspended database: the wake of the instance, the TLS handshake, the
// login and the first backend connection. Each iteration waits, untimed,
// for the instance to suspend again.
func BenchmarkColdWake(b *testing.B) {
	s := startServer(b, "--idle-timeout", "50ms")
	db := s.createDatabase(b, "wake", 0, 1)
	ctx := context.Background()

	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		deadline := time.Now().Add(10 * time.Second)
		for s.postmasterPID(b, db.ID) != 0 {
			if time.Now().After(deadline) {
				b.Fatal("instance did not suspend within 10s")
			}
			time.Sleep(5 * time.Millisecond)
		}
		b.StartTimer()

		conn, err := pgx.Connect(ctx, s.connString(db))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		conn.Close(ctx)
		b.StartTimer()
	}
}

// BenchmarkWarmConnect measures connect plus SELECT 1 while the instance
// runs: TLS, login and a new backend connection.
func BenchmarkWarmConnect(b *testing.B) {
	s := startServer(b)
	db := s.createDatabase(b, "warm", 1, 1)
	ctx := context.Background()

	b.ResetTimer()
	for b.Loop() {
		conn, err := pgx.Connect(ctx, s.connString(db))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
			b.Fatal(err)
		}
		conn.Close(ctx)
	}
}

// BenchmarkQueryRoundTrip measures one SELECT 1 on an open connection
// through the proxy: the relay's cost per query.
func BenchmarkQueryRoundTrip(b *testing.B) {
	s := startServer(b)
	db := s.createDatabase(b, "roundtrip", 1, 1)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.connString(db))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)

	b.ResetTimer()
	for b.Loop() {
		if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkQueryRoundTripDirect is BenchmarkQueryRoundTrip without the
// proxy: pgx on the instance's Unix socket, the baseline for the relay's
// overhead. It reads the socket directory, so it runs as root or as the
// service user.
func BenchmarkQueryRoundTripDirect(b *testing.B) {
	s := startServer(b)
	db := s.createDatabase(b, "direct", 1, 1)
	ctx := context.Background()
	waitFor(b, 10*time.Second, "cpu_min 1 to start the instance", func() bool { return s.postmasterPID(b, db.ID) != 0 })
	socketDir := filepath.Join(s.dataDir, "instances", db.ID)
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=5432 user=role_admin dbname=%s sslmode=disable", socketDir, db.Name))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)

	b.ResetTimer()
	for b.Loop() {
		if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
			b.Fatal(err)
		}
	}
}
