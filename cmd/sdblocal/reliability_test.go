package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	sdb "github.com/scaleway/scaleway-sdk-go/api/serverless_sqldb/v1alpha1"
	bolt "go.etcd.io/bbolt"

	"github.com/sdblocal/sdblocal/catalog"
)

// These tests check that sdblocal loses no committed transaction and keeps
// serving in five situations: it is killed, an instance is killed, it is
// shut down under load, clients arrive in a storm, and the data directory
// fills up. Each runs a short form under `go test`. With SDBLOCAL_SOAK=1,
// as `make soak` sets it, they run longer, with more clients and more
// cycles. docs/reliability.md lists what each one checks.

// soakMode reports whether the long forms run.
func soakMode() bool { return os.Getenv("SDBLOCAL_SOAK") != "" }

// scaled returns short under `go test` and long under `make soak`.
func scaled[T any](short, long T) T {
	if soakMode() {
		return long
	}
	return short
}

// writeLoad runs writers that each insert rows with increasing ids into
// table t, one transaction per row, and records every id whose COMMIT
// returned success. A writer whose connection fails reconnects after a
// short pause until the load is halted.
type writeLoad struct {
	connString string
	// payload is the size of the text column written with each row.
	payload int
	halt    chan struct{}
	wg      sync.WaitGroup

	mu        sync.Mutex
	committed []int64
	// failures counts failed transactions by SQLSTATE, or by
	// "connection" for errors without one.
	failures map[string]int
	// lastFailure is the text of the newest failure, for test output.
	lastFailure string
}

// startWriteLoad starts writers on connString. Writer w inserts ids from
// firstID + w*1e9 upwards.
func startWriteLoad(connString string, writers, payload int, firstID int64) *writeLoad {
	l := &writeLoad{connString: connString, payload: payload, halt: make(chan struct{}), failures: map[string]int{}}
	for w := range writers {
		l.wg.Add(1)
		go l.write(firstID + int64(w)*1_000_000_000)
	}
	return l
}

func (l *writeLoad) write(nextID int64) {
	defer l.wg.Done()
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	// The whole load is bounded even if the test never halts it.
	deadline := time.Now().Add(10 * time.Minute)
	for time.Now().Before(deadline) {
		select {
		case <-l.halt:
			return
		default:
		}
		if conn == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			c, err := pgx.Connect(ctx, l.connString)
			cancel()
			if err != nil {
				l.failed(err)
				time.Sleep(50 * time.Millisecond)
				continue
			}
			conn = c
		}
		id := nextID
		nextID++
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "INSERT INTO t (id, payload) VALUES ($1, repeat('x', $2))", id, l.payload)
			return err
		})
		cancel()
		if err != nil {
			l.failed(err)
			conn.Close(context.Background())
			conn = nil
			time.Sleep(20 * time.Millisecond)
			continue
		}
		l.mu.Lock()
		l.committed = append(l.committed, id)
		l.mu.Unlock()
	}
}

func (l *writeLoad) failed(err error) {
	key := "connection"
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		key = pgErr.Code
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failures[key]++
	l.lastFailure = err.Error()
}

// stop halts the writers and waits for them.
func (l *writeLoad) stop() {
	select {
	case <-l.halt:
	default:
		close(l.halt)
	}
	l.wg.Wait()
}

// committedCount returns how many transactions have committed so far.
func (l *writeLoad) committedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.committed)
}

// failureCount returns how many transactions have failed so far.
func (l *writeLoad) failureCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, count := range l.failures {
		n += count
	}
	return n
}

func (l *writeLoad) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprintf("%d committed, failures by SQLSTATE %v, last failure %q", len(l.committed), l.failures, l.lastFailure)
}

// createRowsTable creates table t for a writeLoad.
func createRowsTable(t *testing.T, s *testServer, db *sdb.Database) {
	t.Helper()
	s.mustPsql(t, db, "CREATE TABLE t (id bigint PRIMARY KEY, payload text)")
}

// expectCommittedRows fails for every id in committed that table t of db
// does not hold.
func expectCommittedRows(t *testing.T, s *testServer, db *sdb.Database, committed []int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.connString(db))
	if err != nil {
		t.Fatalf("connect to %s to check its rows: %v", db.Name, err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "SELECT id FROM t")
	if err != nil {
		t.Fatalf("read the rows of %s: %v", db.Name, err)
	}
	present := map[int64]bool{}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		present[id] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read the rows of %s: %v", db.Name, err)
	}
	var missing []int64
	for _, id := range committed {
		if !present[id] {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		sort.Slice(missing, func(i, j int) bool { return missing[i] < missing[j] })
		t.Errorf("database %s lost %d of %d committed rows, for example ids %v", db.Name, len(missing), len(committed), missing[:min(len(missing), 10)])
	}
	if len(present) < len(committed) {
		t.Errorf("database %s holds %d rows, fewer than the %d commits that succeeded", db.Name, len(present), len(committed))
	}
}

// kill ends the server with SIGKILL and waits until it is reaped.
func (s *testServer) kill(t *testing.T) {
	t.Helper()
	if err := s.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill sdblocal: %v", err)
	}
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("sdblocal still running 10s after SIGKILL")
	}
}

// waitForStatus polls the API until the database has status want. It
// fails at once on status error.
func (s *testServer) waitForStatus(t *testing.T, id string, want sdb.DatabaseStatus, timeout time.Duration) *sdb.Database {
	t.Helper()
	var db *sdb.Database
	waitFor(t, timeout, fmt.Sprintf("database %s to reach status %s", id, want), func() bool {
		db = s.getDatabase(t, id)
		if db.Status == sdb.DatabaseStatusError && want != sdb.DatabaseStatusError {
			t.Fatalf("database %s has status error, want %s:\n%s", id, want, tail(s.logs.String(), 4000))
		}
		return db.Status == want
	})
	return db
}

// checkCatalogFile runs bbolt's consistency check on the catalog of a
// stopped server: every page reachable, none freed twice.
func checkCatalogFile(t *testing.T, dataDir string) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dataDir, catalog.FileName), 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("open the catalog of the killed server: %v", err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			t.Errorf("catalog check: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestCrashUnderWriteLoad kills sdblocal with SIGKILL while clients commit
// rows to two databases, one kept running by cpu_min 1 and one that wakes
// on demand, and while a third database is being created. After a restart
// on the same data directory, every commit that returned success must be
// there and the databases must keep their status and settings. The
// instances of the killed process must be gone, and the database being
// created must become ready.
func TestCrashUnderWriteLoad(t *testing.T) {
	cycles := scaled(1, 5)
	writers := scaled(4, 8)
	loadTime := scaled(1500*time.Millisecond, 5*time.Second)

	dataDir := newDataDir(t)
	s := startServerIn(t, dataDir)
	busy := s.createDatabase(t, "busy", 1, 2)
	lazy := s.createDatabase(t, "lazy", 0, 1)
	createRowsTable(t, s, busy)
	createRowsTable(t, s, lazy)
	committed := map[string][]int64{}

	for cycle := range cycles {
		firstID := int64(cycle) * 1_000_000_000_000
		busyLoad := startWriteLoad(s.connString(busy), writers, 100, firstID)
		lazyLoad := startWriteLoad(s.connString(lazy), writers, 100, firstID)
		time.Sleep(loadTime)
		waitFor(t, 30*time.Second, "the first commits", func() bool {
			return busyLoad.committedCount() > 0 && lazyLoad.committedCount() > 0
		})

		// A database whose instance is being provisioned when sdblocal
		// dies: its initdb or first postmaster is cut off half-way.
		var newborn *sdb.Database
		var provisioners []int
		if cycle == 0 {
			var err error
			newborn, err = s.api.CreateDatabase(&sdb.CreateDatabaseRequest{ProjectID: s.creds.ProjectID, Name: "newborn", CPUMin: 0, CPUMax: 1})
			if err != nil {
				t.Fatalf("create database newborn: %v", err)
			}
			instanceDir := filepath.Join(dataDir, "instances", newborn.ID)
			waitFor(t, 30*time.Second, "initdb or postgres to work on the new instance", func() bool {
				provisioners = processesNaming(t, instanceDir)
				return len(provisioners) > 0
			})
		}
		oldPostmasters := []int{s.postmasterPID(t, busy.ID), s.postmasterPID(t, lazy.ID)}

		s.kill(t)
		busyLoad.stop()
		lazyLoad.stop()
		t.Logf("cycle %d: busy %s; lazy %s", cycle, busyLoad.summary(), lazyLoad.summary())
		committed[busy.ID] = append(committed[busy.ID], busyLoad.committed...)
		committed[lazy.ID] = append(committed[lazy.ID], lazyLoad.committed...)

		checkCatalogFile(t, dataDir)
		s = startServerIn(t, dataDir)
		for _, want := range []*sdb.Database{busy, lazy} {
			got := s.getDatabase(t, want.ID)
			if got.Status != sdb.DatabaseStatusReady {
				t.Errorf("cycle %d: database %s has status %s after the restart, want ready", cycle, want.Name, got.Status)
			}
			if got.CPUMin != want.CPUMin || got.CPUMax != want.CPUMax || got.Name != want.Name {
				t.Errorf("cycle %d: database %s is %s with cpu %d-%d after the restart, want %s with cpu %d-%d",
					cycle, want.ID, got.Name, got.CPUMin, got.CPUMax, want.Name, want.CPUMin, want.CPUMax)
			}
		}
		if newborn != nil {
			db := s.waitForStatus(t, newborn.ID, sdb.DatabaseStatusReady, 90*time.Second)
			for _, pid := range provisioners {
				if processAlive(pid) && slices.Contains(processesNaming(t, filepath.Join(dataDir, "instances", newborn.ID)), pid) {
					t.Errorf("process %d of the interrupted provisioning still runs after the restart", pid)
				}
			}

			if got := s.mustPsql(t, db, "SELECT 1"); got != "1" {
				t.Errorf("database created across the crash: SELECT 1 returned %q", got)
			}
		}
		for _, pid := range oldPostmasters {
			if pid == 0 {
				continue
			}
			waitFor(t, 30*time.Second, fmt.Sprintf("postmaster %d of the killed sdblocal to exit", pid), func() bool {
				return !processAlive(pid) || pid == s.postmasterPID(t, busy.ID) || pid == s.postmasterPID(t, lazy.ID)
			})
			if pid == s.postmasterPID(t, busy.ID) || pid == s.postmasterPID(t, lazy.ID) {
				t.Errorf("cycle %d: the restarted sdblocal serves postmaster %d of the killed one", cycle, pid)
			}
		}
		waitFor(t, 60*time.Second, "the cpu_min 1 database to run again", func() bool {
			pid := s.postmasterPID(t, busy.ID)
			return pid != 0 && processAlive(pid)
		})
		expectCommittedRows(t, s, busy, committed[busy.ID])
		expectCommittedRows(t, s, lazy, committed[lazy.ID])
		if t.Failed() {
			return
		}
	}
}

// TestPostmasterKilledMidQuery kills an instance's postmaster with SIGKILL
// while one client sleeps in a query, one runs a CPU-bound loop that never
// checks for the postmaster's death, and one holds an uncommitted insert.
// The clients with a query in flight must get an error with a SQLSTATE
// within seconds, and the next query must wake the database, which runs
// crash recovery and keeps exactly its committed rows.
func TestPostmasterKilledMidQuery(t *testing.T) {
	s := startServer(t)
	db := s.createDatabase(t, "victim", 0, 1)
	s.mustPsql(t, db, "CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 1000)")
	ctx := context.Background()

	connect := func() *pgx.Conn {
		t.Helper()
		conn, err := pgx.Connect(ctx, s.connString(db))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close(context.Background()) })
		return conn
	}
	sleeper, cruncher, writer, watcher := connect(), connect(), connect(), connect()
	tx, err := writer.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO t VALUES (-1)"); err != nil {
		t.Fatal(err)
	}

	type outcome struct {
		name    string
		err     error
		elapsed time.Duration
	}
	outcomes := make(chan outcome, 2)
	run := func(name string, conn *pgx.Conn, sql string) {
		queryCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		start := time.Now()
		_, err := conn.Exec(queryCtx, sql)
		outcomes <- outcome{name: name, err: err, elapsed: time.Since(start)}
	}
	// The loop ends by itself after 90s, so that even a backend orphaned
	// by its postmaster cannot outlive the test by much.
	const loop = "DO $$DECLARE started timestamptz := clock_timestamp(); BEGIN WHILE clock_timestamp() < started + interval '90 seconds' LOOP END LOOP; END$$"
	go run("pg_sleep", sleeper, "SELECT pg_sleep(60)")
	go run("CPU loop", cruncher, loop)
	waitFor(t, 10*time.Second, "both queries to run", func() bool {
		var n int
		err := watcher.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query IN ('SELECT pg_sleep(60)', $1)", loop).Scan(&n)
		return err == nil && n == 2
	})

	postmaster := s.postmasterPID(t, db.ID)
	children := childProcesses(t, postmaster)
	t.Cleanup(func() {
		for _, pid := range children {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	if err := syscall.Kill(postmaster, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	for range 2 {
		select {
		case got := <-outcomes:
			t.Logf("%s: %v after %s", got.name, got.err, got.elapsed)
			pgErr, ok := errors.AsType[*pgconn.PgError](got.err)
			switch {
			case got.err == nil:
				t.Errorf("%s: succeeded after its postmaster was killed", got.name)
			case !ok:
				t.Errorf("%s: error %v without a SQLSTATE, after %s", got.name, got.err, got.elapsed)
			case !strings.HasPrefix(pgErr.Code, "08") && !strings.HasPrefix(pgErr.Code, "57"):
				t.Errorf("%s: SQLSTATE %s (%s), want a connection (08) or operator-intervention (57) error", got.name, pgErr.Code, pgErr.Message)
			}
		case <-time.After(15*time.Second - time.Since(killed)):
			t.Fatalf("a query was still running 15s after its postmaster was killed")
		}
	}

	for _, pid := range children {
		waitFor(t, 10*time.Second, fmt.Sprintf("process %d of the killed postmaster to exit", pid), func() bool { return !processAlive(pid) })
	}

	// The next query wakes the database, with crash recovery.
	if got := s.mustPsql(t, db, "SELECT count(*), min(x), max(x) FROM t"); got != "1000|1|1000" {
		t.Errorf("rows after crash recovery: count|min|max = %q, want 1000|1|1000", got)
	}
	if pid := s.postmasterPID(t, db.ID); pid == postmaster || pid == 0 {
		t.Errorf("postmaster after the wake is %d, want a new one (the killed one was %d)", pid, postmaster)
	}
	serverLog, err := os.ReadFile(filepath.Join(s.dataDir, "instances", db.ID, "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(serverLog), "automatic recovery in progress") {
		t.Errorf("server.log does not show crash recovery after the kill:\n%s", tail(string(serverLog), 2000))
	}
	if n, _ := s.metric(t, "sdblocal_instance_unexpected_exits_total", `database_id="`+db.ID+`"`); n != 1 {
		t.Errorf("sdblocal_instance_unexpected_exits_total = %v, want 1", n)
	}
}

// processesNaming returns the processes whose command line contains path.
func processesNaming(t *testing.T, path string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, entry := range entries {
		pid, err := strconv.Atoi(entry.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", entry.Name(), "cmdline"))
		if err == nil && strings.Contains(string(cmdline), path) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// childProcesses returns the processes whose parent is ppid, read from
// /proc/<pid>/stat.
func childProcesses(t *testing.T, ppid int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, entry := range entries {
		pid, err := strconv.Atoi(entry.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", entry.Name(), "stat"))
		if err != nil {
			continue
		}
		// After the command name, which is in parentheses and may contain
		// any character, come the state and the parent's PID.
		end := strings.LastIndexByte(string(stat), ')')
		fields := strings.Fields(string(stat)[end+1:])
		if end < 0 || len(fields) < 2 {
			continue
		}
		if parent, err := strconv.Atoi(fields[1]); err == nil && parent == ppid {
			pids = append(pids, pid)
		}
	}
	return pids
}

// tail returns the last n bytes of s.
func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// signalServer sends sig to the server.
func (s *testServer) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("send %s to sdblocal: %v", sig, err)
	}
}

// waitExit waits up to timeout for the server to exit and returns how long
// that took. It fails unless the exit status is 0.
func (s *testServer) waitExit(t *testing.T, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	select {
	case <-s.exited:
	case <-time.After(timeout):
		t.Fatalf("sdblocal still running %s after the signal", timeout)
	}
	if code := s.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("sdblocal exited with status %d, want 0:\n%s", code, tail(s.logs.String(), 4000))
	}
	return time.Since(start)
}

// refusesConnections reports whether nothing listens on the proxy port.
func (s *testServer) refusesConnections() bool {
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("%s:%d", s.pgHost, s.pgPort), time.Second)
	if err != nil {
		return true
	}
	conn.Close()
	return false
}

// expectCleanStop checks that the instance of databaseID was shut down
// cleanly: no postmaster.pid left and the shutdown logged.
func expectCleanStop(t *testing.T, dataDir, databaseID string) {
	t.Helper()
	instance := filepath.Join(dataDir, "instances", databaseID)
	if _, err := os.Stat(filepath.Join(instance, "data", "postmaster.pid")); !os.IsNotExist(err) {
		t.Errorf("postmaster.pid still present after the shutdown (stat error %v)", err)
	}
	serverLog, err := os.ReadFile(filepath.Join(instance, "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(strings.TrimSpace(string(serverLog)), "database system is shut down") {
		t.Errorf("server.log does not end with a clean shutdown:\n%s", tail(string(serverLog), 1000))
	}
}

// TestGracefulShutdown sends SIGTERM while a client is inside a
// transaction. The listeners close at once, the transaction may still
// commit within --shutdown-timeout, and then the session ends with
// SQLSTATE 57P01 and every instance stops cleanly. A transaction still
// open at the timeout is rolled back, and a second signal ends the wait
// at once.
func TestGracefulShutdown(t *testing.T) {
	ctx := context.Background()
	open := func(t *testing.T, s *testServer, db *sdb.Database, id int) pgx.Tx {
		t.Helper()
		conn, err := pgx.Connect(ctx, s.connString(db))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close(context.Background()) })
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO t VALUES ($1)", id); err != nil {
			t.Fatal(err)
		}
		return tx
	}
	rows := func(t *testing.T, s *testServer, db *sdb.Database) string {
		t.Helper()
		return s.mustPsql(t, db, "SELECT coalesce(string_agg(x::text, ',' ORDER BY x), '') FROM t")
	}

	t.Run("transaction commits during the drain", func(t *testing.T) {
		dataDir := newDataDir(t)
		s := startServerIn(t, dataDir, "--shutdown-timeout", "20s")
		db := s.createDatabase(t, "drain", 0, 1)
		s.mustPsql(t, db, "CREATE TABLE t (x int)")
		tx := open(t, s, db, 1)

		s.signal(t, syscall.SIGTERM)
		waitFor(t, 5*time.Second, "the proxy to stop accepting connections", s.refusesConnections)
		if _, err := tx.Exec(ctx, "INSERT INTO t VALUES (2)"); err != nil {
			t.Fatalf("insert during the drain: %v", err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatalf("commit during the drain: %v", err)
		}
		committedAt := time.Now()
		s.waitExit(t, 10*time.Second)
		if waited := time.Since(committedAt); waited > 5*time.Second {
			t.Errorf("sdblocal exited %s after the last transaction ended, want within 5s", waited)
		}
		_, err := tx.Conn().Exec(ctx, "SELECT 1")
		if pgErr, ok := errors.AsType[*pgconn.PgError](err); !ok || pgErr.Code != "57P01" {
			t.Errorf("query after the drain: error %v, want SQLSTATE 57P01", err)
		}
		expectCleanStop(t, dataDir, db.ID)

		s = startServerIn(t, dataDir)
		if got := rows(t, s, db); got != "1,2" {
			t.Errorf("rows after the restart = %q, want 1,2", got)
		}
	})

	t.Run("open transaction at the timeout", func(t *testing.T) {
		dataDir := newDataDir(t)
		s := startServerIn(t, dataDir, "--shutdown-timeout", "1s")
		db := s.createDatabase(t, "timeout", 0, 1)
		s.mustPsql(t, db, "CREATE TABLE t (x int)")
		tx := open(t, s, db, 1)

		s.signal(t, syscall.SIGTERM)
		took := s.waitExit(t, 15*time.Second)
		if took < 900*time.Millisecond {
			t.Errorf("sdblocal exited %s after SIGTERM, before the 1s shutdown timeout", took)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO t VALUES (2)"); err == nil {
			t.Error("insert after the shutdown timeout succeeded")
		}
		expectCleanStop(t, dataDir, db.ID)

		s = startServerIn(t, dataDir)
		if got := rows(t, s, db); got != "" {
			t.Errorf("rows after the restart = %q, want none: the open transaction must roll back", got)
		}
	})

	t.Run("second signal", func(t *testing.T) {
		dataDir := newDataDir(t)
		s := startServerIn(t, dataDir, "--shutdown-timeout", "60s")
		db := s.createDatabase(t, "impatient", 0, 1)
		s.mustPsql(t, db, "CREATE TABLE t (x int)")
		open(t, s, db, 1)

		s.signal(t, syscall.SIGTERM)
		waitFor(t, 5*time.Second, "the proxy to stop accepting connections", s.refusesConnections)
		select {
		case <-s.exited:
			t.Fatal("sdblocal exited with a transaction open, before the shutdown timeout and without a second signal")
		case <-time.After(500 * time.Millisecond):
		}
		s.signal(t, syscall.SIGINT)
		if took := s.waitExit(t, 15*time.Second); took > 5*time.Second {
			t.Errorf("sdblocal exited %s after the second signal, want within 5s", took)
		}
		expectCleanStop(t, dataDir, db.ID)
	})
}

// clientLimitPattern finds the limit in the proxy's per-database 53300
// message.
var clientLimitPattern = regexp.MustCompile(`\(limit (\d+)\)`)

// TestConnectionStorm connects 500 clients at once to a suspended
// database. The instance starts once, and each client is either served or
// rejected with SQLSTATE 53300: exactly the per-database limit of them are
// served while they all stay connected.
func TestConnectionStorm(t *testing.T) {
	s := startServer(t)
	db := s.createDatabase(t, "storm", 0, 1)
	if pid := s.postmasterPID(t, db.ID); pid != 0 && processAlive(pid) {
		t.Fatalf("the new database runs (pid %d), want it suspended", pid)
	}
	rounds := scaled(1, 3)
	for round := range rounds {
		served, rejected, limit := connectionStorm(t, s, db, 500)
		t.Logf("round %d: %d served, %d rejected with 53300, limit %d", round, served, rejected, limit)
		if served == 0 {
			t.Fatal("no client was served")
		}
		if rejected > 0 && served != limit {
			t.Errorf("round %d: %d clients served at once, want the per-database limit %d", round, served, limit)
		}
		if wakes, _ := s.metric(t, "sdblocal_instance_wakes_total", `database_id="`+db.ID+`"`); wakes != 1 {
			t.Errorf("round %d: sdblocal_instance_wakes_total = %v, want 1", round, wakes)
		}
	}
	if got := s.mustPsql(t, db, "SELECT 1"); got != "1" {
		t.Errorf("SELECT 1 after the storm = %q", got)
	}
}

// connectionStorm starts n clients at once. Each connects, runs a query
// and stays connected until every client has its result, so the number
// served is the number the proxy admits at once. It returns the clients
// served, those rejected with 53300 and the limit that the rejection
// message names (0 when none was rejected). Any other outcome fails t.
func connectionStorm(t *testing.T, s *testServer, db *sdb.Database, n int) (served, rejected, limit int) {
	t.Helper()
	var wg, answered sync.WaitGroup
	release := make(chan struct{})
	start := make(chan struct{})
	var mu sync.Mutex
	var failures []string
	answered.Add(n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			conn, err := pgx.Connect(ctx, s.connString(db))
			if err == nil {
				var got int
				err = conn.QueryRow(ctx, "SELECT $1::int", i).Scan(&got)
				if err == nil && got != i {
					err = fmt.Errorf("SELECT returned %d", got)
				}
				defer conn.Close(context.Background())
			}
			mu.Lock()
			switch pgErr, ok := errors.AsType[*pgconn.PgError](err); {
			case err == nil:
				served++
			case ok && pgErr.Code == "53300":
				rejected++
				if m := clientLimitPattern.FindStringSubmatch(pgErr.Message); m != nil {
					limit, _ = strconv.Atoi(m[1])
				}
			default:
				failures = append(failures, fmt.Sprintf("client %d: %v", i, err))
			}
			mu.Unlock()
			answered.Done()
			if err == nil {
				select {
				case <-release:
				case <-ctx.Done():
				}
			}
		}()
	}
	close(start)
	answered.Wait()
	close(release)
	wg.Wait()
	for _, f := range failures[:min(len(failures), 10)] {
		t.Error(f)
	}
	if len(failures) > 0 {
		t.Fatalf("%d of %d clients neither served nor rejected with 53300", len(failures), n)
	}
	return served, rejected, limit
}

// TestIdleClientsAcrossSuspend holds 1,000 idle clients on one database
// while its instance suspends and wakes again. Every client must keep its
// session and get the result of its next query. This needs the
// per-database client limit above 1,000, so clients must share backends:
// an instance has max_connections 100.
func TestIdleClientsAcrossSuspend(t *testing.T) {
	const clients = 1000
	s := startServer(t, "--idle-timeout", "2s", "--database-client-limit", "1000", "--max-clients", "1100")
	db := s.createDatabase(t, "crowd", 0, 1)
	ctx := context.Background()

	conns := make([]*pgx.Conn, clients)
	t.Cleanup(func() {
		for _, conn := range conns {
			if conn != nil {
				conn.Close(context.Background())
			}
		}
	})
	query := func(what string) {
		t.Helper()
		errs := make(chan error, clients)
		var wg sync.WaitGroup
		limit := make(chan struct{}, 100)
		for i := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				limit <- struct{}{}
				defer func() { <-limit }()
				queryCtx, cancel := context.WithTimeout(ctx, 90*time.Second)
				defer cancel()
				if conns[i] == nil {
					conn, err := pgx.Connect(queryCtx, s.connString(db))
					if err != nil {
						errs <- fmt.Errorf("client %d: connect: %w", i, err)
						return
					}
					conns[i] = conn
				}
				var got int
				if err := conns[i].QueryRow(queryCtx, "SELECT $1::int", i).Scan(&got); err != nil || got != i {
					errs <- fmt.Errorf("client %d: query returned %d, %w", i, got, err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		n := 0
		for err := range errs {
			if n < 5 {
				t.Errorf("%s: %v", what, err)
			}
			n++
		}
		if n > 0 {
			t.Fatalf("%s: %d of %d clients failed", what, n, clients)
		}
	}

	query("first query")
	pid := s.postmasterPID(t, db.ID)
	cycles := scaled(1, 3)
	for cycle := range cycles {
		waitFor(t, 60*time.Second, "the instance to suspend", func() bool { return pid == 0 || !processAlive(pid) })
		query(fmt.Sprintf("query after suspend %d", cycle+1))
		pid = s.postmasterPID(t, db.ID)
	}
	if wakes, _ := s.metric(t, "sdblocal_instance_wakes_total", `database_id="`+db.ID+`"`); wakes != float64(cycles+1) {
		t.Errorf("sdblocal_instance_wakes_total = %v, want %d", wakes, cycles+1)
	}
}

// mountTmpfs mounts a tmpfs of size bytes on dir and unmounts it when the
// test ends. It skips the test, saying why, where the mount is refused.
func mountTmpfs(t *testing.T, dir string, size string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	if _, err := exec.LookPath("mount"); err != nil {
		t.Skipf("no mount command: %v", err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0755", "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Skipf("cannot mount a tmpfs on %s: %v: %s", dir, err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
			_ = exec.Command("umount", "-l", dir).Run()
		}
	})
}

// fillDisk writes a file in dir until the file system is full and returns
// its path.
func fillDisk(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 1<<20)
	for {
		if _, err := f.Write(chunk); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return path
			}
			t.Fatalf("fill %s: %v", dir, err)
		}
	}
}

// TestDiskFullDuringWrites runs a write load while the data directory, a
// 200 MB tmpfs, fills up. Writes fail with an error while it is full,
// no commit that returned success is lost, and once space returns the
// database takes writes again and sdblocal still serves its API.
func TestDiskFullDuringWrites(t *testing.T) {
	parent := newDataDir(t)
	// The service user must traverse the directory above the mount.
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(parent, "d")
	if err := os.Mkdir(dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	mountTmpfs(t, dataDir, "200m")

	s := startServerIn(t, dataDir)
	db := s.createDatabase(t, "full", 0, 1)
	createRowsTable(t, s, db)
	load := startWriteLoad(s.connString(db), 4, 2000, 0)
	defer load.stop()
	waitFor(t, 30*time.Second, "the first commits", func() bool { return load.committedCount() >= 20 })

	filler := fillDisk(t, dataDir)
	failuresBefore := load.failureCount()
	waitFor(t, scaled(30*time.Second, 60*time.Second), "a write to fail on the full disk", func() bool {
		return load.failureCount() > failuresBefore
	})
	time.Sleep(scaled(2*time.Second, 20*time.Second))
	t.Logf("while full: %s", load.summary())

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	committedAfterFree := load.committedCount()
	waitFor(t, 90*time.Second, "writes to succeed once space returned", func() bool {
		return load.committedCount() > committedAfterFree+20
	})
	load.stop()
	t.Logf("after space returned: %s", load.summary())

	expectCommittedRows(t, s, db, load.committed)
	if got := s.getDatabase(t, db.ID); got.Status != sdb.DatabaseStatusReady {
		t.Errorf("database status after the disk was full = %s, want ready", got.Status)
	}
	other := s.createDatabase(t, "after", 0, 1)
	if got := s.mustPsql(t, other, "SELECT 1"); got != "1" {
		t.Errorf("new database after the disk was full: SELECT 1 = %q", got)
	}
}

// vmRSS returns the resident set size of pid in bytes, from
// /proc/<pid>/status.
func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if value, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(value), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("parse %q: %v", line, err)
			}
			return kb * 1024
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// TestDiskFullDuringBackup takes a backup while the data directory, a
// 200 MB tmpfs, is full: the backup ends in status error with no file
// left behind and the database untouched, and once space returns the next
// backup succeeds.
func TestDiskFullDuringBackup(t *testing.T) {
	parent := newDataDir(t)
	// The service user must traverse the directory above the mount.
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(parent, "d")
	if err := os.Mkdir(dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	mountTmpfs(t, dataDir, "200m")

	s := startServerIn(t, dataDir, "--backup-interval", "0")
	db := s.createDatabase(t, "fullbackup", 1, 1)
	s.mustPsql(t, db, "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS payload FROM generate_series(1, 50000) g")

	filler := fillDisk(t, dataDir)
	failed := s.takeBackup(t, db.ID)
	if failed.Status != "error" {
		t.Errorf("backup on a full disk has status %s, want error", failed.Status)
	}
	entries, _ := os.ReadDir(filepath.Join(dataDir, "backups", db.ID))
	for _, entry := range entries {
		t.Errorf("file left in the backup directory after the failed backup: %s", entry.Name())
	}
	if !strings.Contains(s.logs.String(), "backup failed") {
		t.Errorf("no log line for the failed backup")
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if got := s.mustPsql(t, db, "SELECT count(*), sum(id) FROM t"); got != "50000|1250025000" {
		t.Errorf("rows after the failed backup = %q, want 50000|1250025000", got)
	}
	ok := s.takeBackup(t, db.ID)
	if ok.Status != "ready" {
		t.Errorf("backup once space returned has status %s, want ready", ok.Status)
	}
	if info, err := os.Stat(s.backupFile(db.ID, ok.ID)); err != nil || info.Size() == 0 {
		t.Errorf("backup file once space returned: %v, %v", info, err)
	}
}
