package main

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestTmpColdWakeRepro(t *testing.T) {
	s := startServer(t, "--idle-timeout", "50ms")
	db := s.createDatabase(t, "wake", 0, 1)
	for i := range 150 {
		waitFor(t, 10*time.Second, "suspend", func() bool { return s.postmasterPID(t, db.ID) == 0 })
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		conn, err := pgx.Connect(ctx, s.connString(db))
		if err != nil {
			cancel()
			t.Fatalf("iteration %d connect: %v", i, err)
		}
		if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
			_ = s.cmd.Process.Signal(syscall.SIGQUIT)
			time.Sleep(2 * time.Second)
			cancel()
			t.Fatalf("iteration %d exec: %v", i, err)
		}
		conn.Close(ctx)
		cancel()
	}
}
