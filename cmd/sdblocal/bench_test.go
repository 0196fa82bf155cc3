package main

import (
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	sdb "github.com/scaleway/scaleway-sdk-go/api/serverless_sqldb/v1alpha1"
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
	// started turns true once a backend connection has succeeded, while
	// postmaster.pid appears before the instance accepts connections.
	waitFor(b, 10*time.Second, "cpu_min 1 to start the instance", func() bool { return s.getDatabase(b, db.ID).Started })
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

// pgbenchSeconds is how long each pgbench run of BenchmarkPoolComparison
// lasts: $SDBLOCAL_BENCH_SECONDS, 5 by default.
func pgbenchSeconds() string {
	if v := os.Getenv("SDBLOCAL_BENCH_SECONDS"); v != "" {
		return v
	}
	return "5"
}

// pgbenchResult is one pgbench run: transactions per second, and latency
// percentiles from its per-transaction log.
type pgbenchResult struct {
	tps      float64
	p50, p99 time.Duration
}

// runPgbench runs pgbench with args against connString, logging every
// transaction, and returns its figures.
func runPgbench(b *testing.B, connString string, args ...string) pgbenchResult {
	b.Helper()
	dir := b.TempDir()
	full := append([]string{"-n", "-l", "--log-prefix", filepath.Join(dir, "tx"), "-T", pgbenchSeconds()}, args...)
	cmd := exec.Command("pgbench", append(full, connString)...)
	cmd.Env = serverEnv()
	out, err := runWithTimeout(cmd, 5*time.Minute)
	if err != nil {
		b.Fatalf("pgbench %v: %v\n%s", args, err, out)
	}
	if m := regexp.MustCompile(`number of failed transactions: (\d+)`).FindStringSubmatch(out); m != nil && m[1] != "0" {
		b.Fatalf("pgbench %v reported failed transactions:\n%s", args, out)
	}
	m := regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`).FindStringSubmatch(out)
	if m == nil {
		b.Fatalf("pgbench %v printed no tps:\n%s", args, out)
	}
	var res pgbenchResult
	res.tps, _ = strconv.ParseFloat(m[1], 64)

	// Each log line is "client transaction latency_us script epoch us".
	logs, _ := filepath.Glob(filepath.Join(dir, "tx.*"))
	var latencies []int64
	for _, path := range logs {
		raw, err := os.ReadFile(path)
		if err != nil {
			b.Fatal(err)
		}
		for line := range strings.Lines(string(raw)) {
			fields := strings.Fields(line)
			if len(fields) < 3 {
				continue
			}
			if us, err := strconv.ParseInt(fields[2], 10, 64); err == nil {
				latencies = append(latencies, us)
			}
		}
	}
	if len(latencies) == 0 {
		b.Fatalf("pgbench %v logged no transactions", args)
	}
	slices.Sort(latencies)
	rank := func(q float64) time.Duration {
		i := int(math.Ceil(q*float64(len(latencies)))) - 1
		return time.Duration(latencies[max(i, 0)]) * time.Microsecond
	}
	res.p50, res.p99 = rank(0.50), rank(0.99)
	return res
}

// pgbouncer runs PgBouncer as the postgres user on a loopback port, in
// front of the instance socket in socketDir, with trust authentication for
// role_admin, and returns its port.
func pgbouncer(b *testing.B, socketDir, dbName, mode string, poolSize int) int {
	b.Helper()
	path, err := exec.LookPath("pgbouncer")
	if err != nil {
		b.Fatal("pgbouncer not found in PATH: install it (Debian: apt-get install pgbouncer; make bench does)")
	}
	pg, err := user.Lookup("postgres")
	if err != nil {
		b.Fatalf("PgBouncer runs as the postgres user: %v", err)
	}
	uid, _ := strconv.Atoi(pg.Uid)
	gid, _ := strconv.Atoi(pg.Gid)
	// Not b.TempDir, whose parent the postgres user cannot enter.
	dir, err := os.MkdirTemp("", "pgbouncer-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	port := freePort(b)
	ini := fmt.Sprintf(`[databases]
bench = host=%s port=5432 dbname=%s user=role_admin

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s/userlist.txt
pool_mode = %s
default_pool_size = %d
max_client_conn = 200
logfile = %s/pgbouncer.log
pidfile = %s/pgbouncer.pid
ignore_startup_parameters = extra_float_digits
`, socketDir, dbName, port, dir, mode, poolSize, dir, dir)
	for name, content := range map[string]string{"pgbouncer.ini": ini, "userlist.txt": `"role_admin" ""` + "\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(path, filepath.Join(dir, "pgbouncer.ini"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		b.Fatalf("start pgbouncer: %v", err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		_ = cmd.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			conn.Close()
			return port
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
			b.Fatalf("pgbouncer not listening after 10s:\n%s%s", logs.String(), log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// BenchmarkPoolComparison runs three pgbench workloads against each target
// in one run. The workloads are the select-only script (-S) with one
// client for latency and with 8 clients for throughput, and the read-write
// script without branch and teller updates (-N) with 8 clients. The
// targets are the instance's Unix socket, sdblocal in session and in
// transaction mode, and PgBouncer in session and in transaction mode on
// the same instance. sdblocal runs with --tls
// optional and every client without TLS, as PgBouncer's default, so the
// figures compare the poolers alone; a last row gives sdblocal in
// transaction mode with TLS. Transaction-mode pools have 10 backends,
// sdblocal's size at cpu_current 1, on both poolers.
//
// With SDBLOCAL_BENCH_REPORT set, the figures are also written there as a
// markdown table, which make bench appends to docs/benchmarks.md. Run it
// with -benchtime 1x: every iteration repeats all 18 pgbench runs.
func BenchmarkPoolComparison(b *testing.B) {
	txn := startServer(b, "--tls", "optional", "--pool-size", "10")
	session := startServer(b, "--tls", "optional", "--pool-mode", "session")
	txnDB := txn.createDatabase(b, "bench", 1, 1)
	sessionDB := session.createDatabase(b, "bench", 1, 1)
	plain := func(s *testServer, db *sdb.Database) string {
		return strings.Replace(s.connString(db), "sslmode=require", "sslmode=disable", 1)
	}

	for _, target := range []string{plain(txn, txnDB), plain(session, sessionDB)} {
		cmd := exec.Command("pgbench", "-i", "-s", "4", "-q", target)
		cmd.Env = serverEnv()
		if out, err := runWithTimeout(cmd, 5*time.Minute); err != nil {
			b.Fatalf("pgbench -i: %v\n%s", err, out)
		}
	}
	waitFor(b, 10*time.Second, "cpu_min 1 to start the instance", func() bool { return txn.getDatabase(b, txnDB.ID).Started })
	socketDir := filepath.Join(txn.dataDir, "instances", txnDB.ID)
	direct := fmt.Sprintf("host=%s port=5432 user=role_admin dbname=%s sslmode=disable", socketDir, txnDB.Name)
	bouncerSession := pgbouncer(b, socketDir, txnDB.Name, "session", 20)
	bouncerTxn := pgbouncer(b, socketDir, txnDB.Name, "transaction", 10)
	bouncer := func(port int) string {
		return fmt.Sprintf("host=127.0.0.1 port=%d user=role_admin dbname=bench sslmode=disable", port)
	}
	targets := []struct{ name, conn string }{
		{"direct (Unix socket)", direct},
		{"sdblocal session mode", plain(session, sessionDB)},
		{"sdblocal transaction mode", plain(txn, txnDB)},
		{"PgBouncer 1.18 session mode", bouncer(bouncerSession)},
		{"PgBouncer 1.18 transaction mode", bouncer(bouncerTxn)},
		{"sdblocal transaction mode, TLS", txn.connString(txnDB)},
	}
	workloads := []struct {
		name string
		args []string
	}{
		{"select-only, 1 client", []string{"-S", "-c", "1"}},
		{"select-only, 8 clients", []string{"-S", "-c", "8", "-j", "2"}},
		{"read-write, 8 clients", []string{"-N", "-c", "8", "-j", "2"}},
	}
	if only := os.Getenv("SDBLOCAL_BENCH_WORKLOADS"); only != "" {
		workloads = slices.DeleteFunc(workloads, func(w struct {
			name string
			args []string
		}) bool {
			return !strings.Contains(only, w.name)
		})
	}

	var report strings.Builder
	report.WriteString("| target | workload | TPS | p50 ms | p99 ms |\n|---|---|---|---|---|\n")
	for b.Loop() {
		report.Reset()
		report.WriteString("| target | workload | TPS | p50 ms | p99 ms |\n|---|---|---|---|---|\n")
		for _, w := range workloads {
			for _, target := range targets {
				res := runPgbench(b, target.conn, w.args...)
				fmt.Fprintf(&report, "| %s | %s | %.0f | %.3f | %.3f |\n", target.name, w.name, res.tps,
					float64(res.p50.Microseconds())/1000, float64(res.p99.Microseconds())/1000)
			}
		}
	}
	b.Logf("\n%s", report.String())
	if path := os.Getenv("SDBLOCAL_BENCH_REPORT"); path != "" {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		fmt.Fprintf(f, "\n## Pooling: sdblocal, PgBouncer and a direct connection\n\n")
		fmt.Fprintf(f, "`BenchmarkPoolComparison` (`cmd/sdblocal/bench_test.go`): pgbench -M simple, %s s per run, scale 4,\n", pgbenchSeconds())
		fmt.Fprintf(f, "on one machine with the instance; no TLS except in the last row. Percentiles are nearest-rank\n")
		fmt.Fprintf(f, "over every transaction of the run (pgbench -l).\n\n%s", report.String())
	}
}

// memoryFigures are the sdblocal process's memory metrics that
// BenchmarkIdleClientMemory compares.
type memoryFigures struct {
	heap, stack, rss float64
}

func readMemory(b *testing.B, s *testServer) memoryFigures {
	b.Helper()
	var m memoryFigures
	for name, dst := range map[string]*float64{
		"go_memstats_heap_inuse_bytes":  &m.heap,
		"go_memstats_stack_inuse_bytes": &m.stack,
		"process_resident_memory_bytes": &m.rss,
	} {
		v, ok := s.metric(b, name)
		if !ok {
			b.Fatalf("no %s on /metrics", name)
		}
		*dst = v
	}
	return m
}

// BenchmarkIdleClientMemory connects 5,000 clients in transaction mode
// over TLS with SCRAM, runs one query on each, lets the instance suspend,
// and reports the sdblocal process's memory growth per client: Go heap in
// use plus goroutine stacks, and resident set size. The server runs with
// GOGC=20, so that garbage from the logins weighs little in the heap
// figure. At the end every client queries again after the wake.
func BenchmarkIdleClientMemory(b *testing.B) {
	const clients = 5000
	b.Setenv("GOGC", "20")
	s := startServer(b, "--idle-timeout", "2s", "--max-clients", "6000", "--database-client-limit", "6000")
	db := s.createDatabase(b, "idle", 0, 1)
	ctx := context.Background()
	config, err := pgconn.ParseConfig(s.connString(db))
	if err != nil {
		b.Fatal(err)
	}

	for b.Loop() {
		warm, err := pgconn.ConnectConfig(ctx, config)
		if err != nil {
			b.Fatal(err)
		}
		warm.Close(ctx)
		time.Sleep(time.Second)
		before := readMemory(b, s)

		conns := make([]*pgconn.PgConn, clients)
		start := time.Now()
		forEachClient(b, clients, func(i int) error {
			conn, err := pgconn.ConnectConfig(ctx, config)
			if err != nil {
				return err
			}
			conns[i] = conn
			_, err = conn.Exec(ctx, "SELECT 1").ReadAll()
			return err
		})
		connected := time.Since(start)
		waitFor(b, 30*time.Second, "the instance to suspend with 5,000 idle clients", func() bool { return s.postmasterPID(b, db.ID) == 0 })
		time.Sleep(5 * time.Second)
		after := readMemory(b, s)

		perClient := func(a, b float64) float64 { return (a - b) / clients / 1024 }
		heapStack := perClient(after.heap+after.stack, before.heap+before.stack)
		rss := perClient(after.rss, before.rss)
		b.ReportMetric(heapStack, "heap+stack-KiB/client")
		b.ReportMetric(rss, "rss-KiB/client")
		b.Logf("%d clients connected in %s; per client: heap %.1f KiB, stacks %.1f KiB, RSS %.1f KiB",
			clients, connected.Round(time.Millisecond), perClient(after.heap, before.heap), perClient(after.stack, before.stack), rss)

		forEachClient(b, clients, func(i int) error {
			_, err := conns[i].Exec(ctx, "SELECT 1").ReadAll()
			return err
		})
		for _, conn := range conns {
			conn.Close(ctx)
		}

		if path := os.Getenv("SDBLOCAL_BENCH_REPORT"); path != "" {
			f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				b.Fatal(err)
			}
			fmt.Fprintf(f, "\n## Memory per idle client\n\n")
			fmt.Fprintf(f, "`BenchmarkIdleClientMemory` (`cmd/sdblocal/bench_test.go`): %d clients over TLS with SCRAM, one\n", clients)
			fmt.Fprintf(f, "query each, then idle while the instance is suspended; sdblocal runs with GOGC=20. Growth of\n")
			fmt.Fprintf(f, "the sdblocal process divided by the number of clients. Target: at most 16 KiB.\n\n")
			fmt.Fprintf(f, "| Go heap in use + stacks, KiB/client | RSS, KiB/client | connect time for all clients |\n|---|---|---|\n")
			fmt.Fprintf(f, "| %.1f | %.1f | %s |\n", heapStack, rss, connected.Round(time.Millisecond))
			f.Close()
		}
	}
}

// forEachClient runs fn for each client index, 32 at a time, and fails
// the benchmark with the first error.
func forEachClient(b *testing.B, clients int, fn func(i int) error) {
	b.Helper()
	var wg sync.WaitGroup
	var once sync.Once
	var firstErr error
	next := make(chan int)
	for range 32 {
		wg.Go(func() {
			for i := range next {
				if err := fn(i); err != nil {
					once.Do(func() { firstErr = fmt.Errorf("client %d: %w", i, err) })
				}
			}
		})
	}
	for i := range clients {
		next <- i
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
}
