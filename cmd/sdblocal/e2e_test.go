package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	sdb "github.com/scaleway/scaleway-sdk-go/api/serverless_sqldb/v1alpha1"
)

// TestSuspendAndWake is the whole first-use story: create a database over
// the API, write rows with psql, let the instance suspend, and read the
// same rows back through a wake.
func TestSuspendAndWake(t *testing.T) {
	s := startServer(t, "--idle-timeout", "1s")
	db := s.createDatabase(t, "shop", 0, 4)

	if db.Started || db.CPUCurrent != 0 {
		t.Errorf("new database: started=%v cpu_current=%d, want false and 0", db.Started, db.CPUCurrent)
	}
	if !strings.Contains(db.Endpoint, "databaseid%3D"+db.ID) || !strings.Contains(db.Endpoint, "sslmode=require") {
		t.Errorf("endpoint %q lacks the routing option or sslmode=require", db.Endpoint)
	}

	s.mustPsql(t, db, "CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items VALUES (1, 'apple'), (2, 'pear')")
	if got := s.mustPsql(t, db, "SELECT string_agg(name, ',' ORDER BY id) FROM items"); got != "apple,pear" {
		t.Fatalf("rows before suspend = %q, want apple,pear", got)
	}
	running := s.getDatabase(t, db.ID)
	if !running.Started || running.CPUCurrent != 1 {
		t.Errorf("running database: started=%v cpu_current=%d, want true and 1", running.Started, running.CPUCurrent)
	}
	pid := s.postmasterPID(t, db.ID)
	if pid == 0 || !processAlive(pid) {
		t.Fatalf("no running postmaster after a query (pid %d)", pid)
	}

	waitFor(t, 15*time.Second, "the postmaster to exit after the idle timeout", func() bool { return !processAlive(pid) })
	waitFor(t, 5*time.Second, "the API to report the database suspended", func() bool {
		d := s.getDatabase(t, db.ID)
		return !d.Started && d.CPUCurrent == 0
	})
	if n, _ := s.metric(t, "sdblocal_instance_suspends_total", `database_id="`+db.ID+`"`); n < 1 {
		t.Errorf("sdblocal_instance_suspends_total = %v, want at least 1", n)
	}

	if got := s.mustPsql(t, db, "SELECT string_agg(name, ',' ORDER BY id) FROM items"); got != "apple,pear" {
		t.Fatalf("rows after wake = %q, want apple,pear", got)
	}
	if n, _ := s.metric(t, "sdblocal_instance_wakes_total", `database_id="`+db.ID+`"`); n < 2 {
		t.Errorf("sdblocal_instance_wakes_total = %v, want at least 2", n)
	}
	if d := s.getDatabase(t, db.ID); !d.Started {
		t.Errorf("after the wake the API reports started=false")
	}
}

// TestSessionSurvivesSuspend keeps one client connected while its instance
// suspends and wakes, and checks that an open transaction blocks the
// suspend.
func TestSessionSurvivesSuspend(t *testing.T) {
	s := startServer(t, "--idle-timeout", "500ms")
	db := s.createDatabase(t, "session", 0, 2)
	ctx := context.Background()

	conn, err := pgx.Connect(ctx, s.connString(db))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE TABLE t (x int); INSERT INTO t VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	pid := s.postmasterPID(t, db.ID)
	waitFor(t, 15*time.Second, "suspend with an idle client connected", func() bool { return !processAlive(pid) })

	var x int
	if err := conn.QueryRow(ctx, "SELECT x FROM t").Scan(&x); err != nil || x != 42 {
		t.Fatalf("query on the same connection after suspend: x=%d err=%v", x, err)
	}

	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "UPDATE t SET x = 43"); err != nil {
		t.Fatal(err)
	}
	pid = s.postmasterPID(t, db.ID)
	time.Sleep(2 * time.Second) // four idle timeouts with a transaction open
	if !processAlive(pid) {
		t.Fatal("instance suspended while a transaction was open")
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit after waiting: %v", err)
	}
	if err := conn.QueryRow(ctx, "SELECT x FROM t").Scan(&x); err != nil || x != 43 {
		t.Fatalf("committed value: x=%d err=%v", x, err)
	}
}

// TestPgbench runs pgbench's initialisation and a 10-second TPC-B-like
// load with 4 clients through the proxy.
func TestPgbench(t *testing.T) {
	s := startServer(t)
	db := s.createDatabase(t, "bench", 0, 4)

	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("pgbench", append(args, s.connString(db))...)
		cmd.Env = serverEnv()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("pgbench %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	run("-i", "-s", "1")
	out := run("-c", "4", "-j", "2", "-T", "10")
	t.Logf("pgbench:\n%s", out)

	failed := regexp.MustCompile(`number of failed transactions: (\d+)`).FindStringSubmatch(out)
	if failed == nil || failed[1] != "0" {
		t.Errorf("pgbench reported failed transactions: %v", failed)
	}
	processed := regexp.MustCompile(`number of transactions actually processed: (\d+)`).FindStringSubmatch(out)
	if processed == nil || processed[1] == "0" {
		t.Errorf("pgbench processed no transactions: %v", processed)
	}
}

// TestConcurrentWake connects 50 clients at once to a suspended database:
// all succeed and the instance starts exactly once.
func TestConcurrentWake(t *testing.T) {
	s := startServer(t)
	db := s.createDatabase(t, "burst", 0, 4)
	if pid := s.postmasterPID(t, db.ID); pid != 0 && processAlive(pid) {
		t.Fatalf("a new database with cpu_min 0 is running (pid %d)", pid)
	}

	const clients = 50
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	start := make(chan struct{})
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			conn, err := pgx.Connect(ctx, s.connString(db))
			if err != nil {
				errs <- fmt.Errorf("client %d: connect: %w", i, err)
				return
			}
			defer conn.Close(ctx)
			var got int
			if err := conn.QueryRow(ctx, "SELECT $1::int", i).Scan(&got); err != nil || got != i {
				errs <- fmt.Errorf("client %d: query returned %d, %v", i, got, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n, _ := s.metric(t, "sdblocal_instance_wakes_total", `database_id="`+db.ID+`"`); n != 1 {
		t.Errorf("sdblocal_instance_wakes_total = %v after a burst of %d clients, want 1", n, clients)
	}
}

// TestBackendIsNotSuperuser checks the role a principal's session runs as.
func TestBackendIsNotSuperuser(t *testing.T) {
	s := startServer(t)
	db := s.createDatabase(t, "roles", 0, 1)

	if got := s.mustPsql(t, db, "SELECT current_user"); got != "role_admin" {
		t.Errorf("current_user = %q, want role_admin", got)
	}
	if got := s.mustPsql(t, db, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"); got != "f" {
		t.Errorf("rolsuper = %q, want f", got)
	}
	for _, sql := range []string{
		"CREATE ROLE intruder SUPERUSER",
		"ALTER ROLE role_admin SUPERUSER",
		"CREATE TEMPORARY TABLE scratch (x int)",
		"CREATE DATABASE other",
	} {
		if out, err := s.psql(t, db, sql); err == nil {
			t.Errorf("%q succeeded for a principal:\n%s", sql, out)
		}
	}
	s.mustPsql(t, db, "CREATE TABLE allowed (x int)")
	s.mustPsql(t, db, "CREATE EXTENSION pgcrypto")
	if got := s.mustPsql(t, db, "SELECT encode(digest('abc', 'sha256'), 'hex')"); !strings.HasPrefix(got, "ba7816bf") {
		t.Errorf("pgcrypto digest = %q, want the SHA-256 of abc", got)
	}
	if out, err := s.psql(t, db, "CREATE EXTENSION adminpack"); err == nil {
		t.Errorf("an untrusted extension was created:\n%s", out)
	}
}

// TestDataSurvivesRestart stops sdblocal and starts it again on the same
// data directory.
func TestDataSurvivesRestart(t *testing.T) {
	dataDir := newDataDir(t)
	first := startServerIn(t, dataDir)
	db := first.createDatabase(t, "durable", 0, 2)
	first.mustPsql(t, db, "CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 1000)")
	first.stop()

	second := startServerIn(t, dataDir)
	if second.creds != first.creds {
		t.Errorf("credentials changed across a restart")
	}
	if got := second.mustPsql(t, db, "SELECT sum(x) FROM t"); got != "500500" {
		t.Errorf("sum after restart = %q, want 500500", got)
	}
}

// TestSecondServerOnSameDataDir must fail at once with a clear error.
func TestSecondServerOnSameDataDir(t *testing.T) {
	s := startServer(t)
	cmd := exec.Command(sdblocalBinary, "serve", "--data-dir", s.dataDir,
		"--api-addr", fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		"--pg-addr", fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	cmd.Env = serverEnv()
	out, err := runWithTimeout(cmd, 10*time.Second)
	if err == nil {
		t.Fatalf("second server on the same data directory started:\n%s", out)
	}
	if !strings.Contains(out, "in use by another process") {
		t.Errorf("error does not say the data directory is in use:\n%s", out)
	}
}

// TestStartupErrors checks the errors of `sdblocal serve` that a user can
// fix with a flag.
func TestStartupErrors(t *testing.T) {
	busy := startServer(t)
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"api port in use", []string{"--api-addr", strings.TrimPrefix(busy.apiURL, "http://")}, "--api-addr"},
		{"pg port in use", []string{"--pg-addr", fmt.Sprintf("127.0.0.1:%d", busy.pgPort)}, "--pg-addr"},
		{"malformed address", []string{"--pg-addr", "localhost"}, "expected host:port"},
		{"missing postgres tree", []string{"--pg-dir", "/nonexistent/pg14"}, "make postgres"},
		{"bad idle timeout", []string{"--idle-timeout", "-1s"}, "--idle-timeout"},
		{"unknown user", []string{"--user", "no-such-user-sdblocal"}, "does not exist"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "unknown user" && os.Geteuid() != 0 {
				t.Skip("--user applies only when started as root")
			}
			args := []string{"serve", "--data-dir", newDataDir(t),
				"--api-addr", fmt.Sprintf("127.0.0.1:%d", freePort(t)),
				"--pg-addr", fmt.Sprintf("127.0.0.1:%d", freePort(t))}
			cmd := exec.Command(sdblocalBinary, append(args, tc.args...)...)
			cmd.Env = serverEnv()
			out, err := runWithTimeout(cmd, 10*time.Second)
			if err == nil {
				t.Fatalf("serve started:\n%s", out)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("error does not mention %q:\n%s", tc.want, out)
			}
		})
	}
}

// TestEnvCommand checks that `sdblocal env` prepares psql and the SDK.
func TestEnvCommand(t *testing.T) {
	s := startServer(t)
	db := s.createDatabase(t, "envdb", 0, 1)

	out, err := exec.Command(sdblocalBinary, "env", "--data-dir", s.dataDir).CombinedOutput()
	if err != nil {
		t.Fatalf("sdblocal env: %v\n%s", err, out)
	}
	for _, name := range []string{"SCW_ACCESS_KEY", "SCW_SECRET_KEY", "SCW_DEFAULT_ORGANIZATION_ID", "SCW_DEFAULT_PROJECT_ID", "SCW_DEFAULT_REGION", "SCW_API_URL", "PGUSER", "PGPASSWORD"} {
		if !strings.Contains(string(out), "export "+name+"=") {
			t.Errorf("sdblocal env does not export %s", name)
		}
	}
	if info, err := os.Stat(filepath.Join(s.dataDir, "credentials.json")); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("credentials file mode: %v, %v; want 0600", info, err)
	}

	script := fmt.Sprintf(`eval "$(%s env --data-dir %s)" && psql -X -A -t -c 'SELECT 7' "dbname=%s options=-cdatabaseid=%s"`, sdblocalBinary, s.dataDir, db.Name, db.ID)
	shell := exec.Command("bash", "-c", script)
	shell.Env = serverEnv()
	got, err := shell.CombinedOutput()
	if err != nil || strings.TrimSpace(string(got)) != "7" {
		t.Errorf("psql with the env of sdblocal env: %v\n%s", err, got)
	}
}

// TestRoutingByName connects with a database name alone, as a client that
// can send neither SNI nor options would.
func TestRoutingByName(t *testing.T) {
	s := startServer(t)
	db := s.createDatabase(t, "byname", 0, 1)
	conn := fmt.Sprintf("postgresql://%s:%s@%s:%d/%s?sslmode=require", s.creds.PrincipalID, s.creds.SecretKey, s.pgHost, s.pgPort, db.Name)
	out, err := exec.Command("psql", "-X", "-A", "-t", "-c", "SELECT current_database()", conn).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "byname" {
		t.Errorf("psql by database name: %v\n%s", err, out)
	}
}

func runWithTimeout(cmd *exec.Cmd, timeout time.Duration) (string, error) {
	var out strings.Builder
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		<-done
		return out.String(), fmt.Errorf("still running after %s", timeout)
	}
}

// TestCPUMinKeepsRunning checks that cpu_min >= 1 starts the instance
// without a client and keeps it through idle periods, and that lowering it
// to 0 with PATCH lets it suspend.
func TestCPUMinKeepsRunning(t *testing.T) {
	s := startServer(t, "--idle-timeout", "300ms")
	db := s.createDatabase(t, "always-on", 1, 2)

	waitFor(t, 10*time.Second, "cpu_min 1 to start the instance", func() bool {
		d := s.getDatabase(t, db.ID)
		return d.Started && d.CPUCurrent == 1
	})
	pid := s.postmasterPID(t, db.ID)
	time.Sleep(1500 * time.Millisecond) // five idle timeouts
	if !processAlive(pid) {
		t.Fatal("instance with cpu_min 1 was suspended")
	}

	zero := uint32(0)
	if _, err := s.api.UpdateDatabase(&sdb.UpdateDatabaseRequest{DatabaseID: db.ID, CPUMin: &zero}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "suspend after cpu_min was lowered to 0", func() bool { return !processAlive(pid) })
	if d := s.getDatabase(t, db.ID); d.Started || d.CPUCurrent != 0 {
		t.Errorf("after suspend: started=%v cpu_current=%d", d.Started, d.CPUCurrent)
	}
}

// TestLeftoverPostmasterIsStopped starts an instance's postmaster by hand,
// as one left running by an sdblocal killed with SIGKILL, and checks that
// the next wake stops it and serves the data.
func TestLeftoverPostmasterIsStopped(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("starting the postmaster as the service user needs root")
	}
	dataDir := newDataDir(t)
	first := startServerIn(t, dataDir)
	db := first.createDatabase(t, "leftover", 0, 1)
	first.mustPsql(t, db, "CREATE TABLE t (x int); INSERT INTO t VALUES (7)")
	first.stop()

	serviceUser, err := user.Lookup("postgres")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(serviceUser.Uid)
	gid, _ := strconv.Atoi(serviceUser.Gid)
	instanceDir := filepath.Join(dataDir, "instances", db.ID)
	pgDir := os.Getenv("SDBLOCAL_PG_DIR")
	if pgDir == "" {
		pgDir = "/var/cache/sdblocal/postgres-14.23.0-beta.17"
	}
	leftover := exec.Command(filepath.Join(pgDir, "bin", "postgres"), "-D", filepath.Join(instanceDir, "data"),
		"-c", "listen_addresses=", "-c", "unix_socket_directories="+instanceDir)
	leftover.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, Setpgid: true}
	if err := leftover.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = leftover.Wait(); close(exited) }()
	t.Cleanup(func() { _ = leftover.Process.Kill() })
	waitFor(t, 10*time.Second, "the leftover postmaster to write its pid file", func() bool {
		return first.postmasterPID(t, db.ID) == leftover.Process.Pid
	})

	second := startServerIn(t, dataDir)
	if got := second.mustPsql(t, db, "SELECT x FROM t"); got != "7" {
		t.Errorf("row after waking past a leftover postmaster = %q, want 7", got)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Error("the leftover postmaster is still running")
	}
}
