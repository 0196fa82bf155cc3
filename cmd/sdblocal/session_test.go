package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestPreparedStatementsSurviveSuspend uses pgx's default mode, which
// prepares each query as a named statement and reuses it: the proxy must
// prepare it again on the backend that replaces the one a suspend closed.
func TestPreparedStatementsSurviveSuspend(t *testing.T) {
	s := startServer(t, "--idle-timeout", "300ms")
	db := s.createDatabase(t, "prepared", 0, 1)
	ctx := context.Background()

	conn, err := pgx.Connect(ctx, s.connString(db))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var sum int
	if err := conn.QueryRow(ctx, "SELECT $1::int + 1", 41).Scan(&sum); err != nil || sum != 42 {
		t.Fatalf("first prepared query: %d, %v", sum, err)
	}
	if _, err := conn.Prepare(ctx, "explicit", "SELECT $1::text || '!'"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Prepare(ctx, "closed", "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if err := conn.Deallocate(ctx, "closed"); err != nil {
		t.Fatal(err)
	}

	pid := s.postmasterPID(t, db.ID)
	waitFor(t, 15*time.Second, "the instance to suspend", func() bool { return !processAlive(pid) })

	if err := conn.QueryRow(ctx, "SELECT $1::int + 1", 1).Scan(&sum); err != nil || sum != 2 {
		t.Errorf("cached prepared query after suspend: %d, %v", sum, err)
	}
	var text string
	if err := conn.QueryRow(ctx, "explicit", "hi").Scan(&text); err != nil || text != "hi!" {
		t.Errorf("explicitly prepared statement after suspend: %q, %v", text, err)
	}
	// The proxy prepares statements on a backend when a client uses
	// them, under names derived from their text, so the new backend has
	// the two used since the suspend and not the closed one.
	var statements string
	if err := conn.QueryRow(ctx, "SELECT string_agg(statement, ' | ' ORDER BY statement) FROM pg_prepared_statements", pgx.QueryExecModeSimpleProtocol).Scan(&statements); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(statements, "SELECT 1") || !strings.Contains(statements, "SELECT $1::text || '!'") || !strings.Contains(statements, "SELECT $1::int + 1") {
		t.Errorf("statements prepared on the new backend: %q, want the explicit and the cached one, not the closed one", statements)
	}
}

// TestPreparedStatementBudget ends a session whose named statements exceed
// 1,048,576 bytes, with the real service's SQLSTATE and message.
func TestPreparedStatementBudget(t *testing.T) {
	s := startServer(t)
	db := s.createDatabase(t, "budget", 0, 1)
	ctx := context.Background()

	conn, err := pgx.Connect(ctx, s.connString(db))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	padding := strings.Repeat("x", 200*1024)
	var lastErr error
	for i := range 10 {
		_, lastErr = conn.Prepare(ctx, fmt.Sprintf("big%d", i), fmt.Sprintf("SELECT 1 /* %s */", padding))
		if lastErr != nil {
			break
		}
	}
	var pgErr *pgconn.PgError
	if !errors.As(lastErr, &pgErr) {
		t.Fatalf("preparing 2 MB of statements: error %v, want a PgError", lastErr)
	}
	if pgErr.Code != "53400" || pgErr.Severity != "FATAL" || !strings.Contains(pgErr.Message, "exceed the limit of 1048576 bytes for client connection") {
		t.Errorf("error = %s %s %q", pgErr.Severity, pgErr.Code, pgErr.Message)
	}
	if got := s.mustPsql(t, db, "SELECT 1"); got != "1" {
		t.Errorf("the server stopped serving after the budget error")
	}
}

// TestShutdownTellsClients checks that SIGTERM ends connected sessions
// with PostgreSQL's administrator-shutdown error, not a bare EOF.
func TestShutdownTellsClients(t *testing.T) {
	s := startServer(t)
	db := s.createDatabase(t, "shutdown", 0, 1)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.connString(db))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)

	s.stop()
	_, err = conn.Exec(ctx, "SELECT 1")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "57P01" {
		t.Errorf("query after SIGTERM: error %v, want SQLSTATE 57P01", err)
	}
}

// TestBackendLossHiddenFromIdleClients ends the backends of idle clients
// from inside the instance, first with pg_terminate_backend, which sends
// the client FATAL 57P01, then with a crash: one backend killed with
// SIGKILL, after which PostgreSQL ends every backend and runs crash
// recovery. The idle clients keep their sessions and their next query runs
// on a new backend. It runs in session mode, where each client keeps its
// backend, so the victim's query never runs on the bystander's backend.
func TestBackendLossHiddenFromIdleClients(t *testing.T) {
	s := startServer(t, "--pool-mode", "session")
	db := s.createDatabase(t, "recovery", 1, 1)
	ctx := context.Background()

	victim, err := pgx.Connect(ctx, s.connString(db))
	if err != nil {
		t.Fatal(err)
	}
	defer victim.Close(ctx)
	bystander, err := pgx.Connect(ctx, s.connString(db))
	if err != nil {
		t.Fatal(err)
	}
	defer bystander.Close(ctx)
	if _, err := victim.Exec(ctx, "CREATE TABLE t (x int); INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	backendPID := func(conn *pgx.Conn) int {
		t.Helper()
		var pid int
		if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
			t.Fatal(err)
		}
		return pid
	}
	queryBoth := func(after string) {
		t.Helper()
		for name, conn := range map[string]*pgx.Conn{"bystander": bystander, "victim": victim} {
			var x int
			if err := conn.QueryRow(ctx, "SELECT x FROM t").Scan(&x); err != nil || x != 1 {
				t.Errorf("%s after %s: x=%d err=%v", name, after, x, err)
			}
		}
	}

	var terminated bool
	if err := victim.QueryRow(ctx, "SELECT pg_terminate_backend($1)", backendPID(bystander)).Scan(&terminated); err != nil || !terminated {
		t.Fatalf("pg_terminate_backend: %v, %v", terminated, err)
	}
	time.Sleep(200 * time.Millisecond) // the FATAL reaches the proxy
	queryBoth("pg_terminate_backend")

	if err := syscall.Kill(backendPID(victim), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// A query racing the crash gets an error, as it would from PostgreSQL;
	// after the pause every backend is gone and the clients are idle.
	time.Sleep(500 * time.Millisecond)
	queryBoth("crash recovery")
}
