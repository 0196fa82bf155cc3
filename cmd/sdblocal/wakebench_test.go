package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	sdb "github.com/scaleway/scaleway-sdk-go/api/serverless_sqldb/v1alpha1"

	"github.com/sdblocal/sdblocal/autoscale"
)

// BenchmarkWakeLatency compares a wake through sdblocal with a bare start
// of the same PostgreSQL instance. Each iteration runs two cycles, one
// after the other, so both see the same machine:
//
//   - bare: exec bin/postgres on a copy of the database's data directory,
//     with the settings sdblocal uses, poll postmaster.pid every 1 ms until
//     it reports ready, connect over the Unix socket and run SELECT 1. The
//     fast shutdown afterwards is not timed.
//   - wake: with the instance suspended, send SELECT 1 on a client
//     connection to the proxy that stayed open across the suspend, so the
//     time covers the wake, the backend connection and the query but no
//     TLS handshake or login.
//
// Only the wake is in ns/op. The custom metrics are the nearest-rank
// 50th and 99th percentiles of both, in milliseconds, and their ratios.
// With 50 iterations the 99th percentile is the slowest cycle. ready-*
// are the same percentiles of the instance's share of each wake, which
// sdblocal logs, so that the rest is the proxy's part.
func BenchmarkWakeLatency(b *testing.B) {
	s := startServer(b, "--idle-timeout", "50ms")
	db := s.createDatabase(b, "wakebench", 0, 1)
	ctx := context.Background()

	connectCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	client, err := pgconn.Connect(connectCtx, s.connString(db))
	cancel()
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close(ctx)
	waitSuspended := func() {
		deadline := time.Now().Add(10 * time.Second)
		for s.postmasterPID(b, db.ID) != 0 {
			if time.Now().After(deadline) {
				b.Fatal("instance did not suspend within 10s")
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	waitSuspended()
	bare := newBareInstance(b, s, db)

	var wakes, bares []time.Duration
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		waitSuspended()
		bares = append(bares, bare.startAndQuery(b))
		b.StartTimer()

		queryCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		started := time.Now()
		_, err := client.Exec(queryCtx, "SELECT 1").ReadAll()
		wakes = append(wakes, time.Since(started))
		cancel()
		if err != nil {
			b.Fatalf("first query after a suspend: %v", err)
		}
	}
	b.StopTimer()

	wakeP50, wakeP99 := percentile(wakes, 50), percentile(wakes, 99)
	bareP50, bareP99 := percentile(bares, 50), percentile(bares, 99)
	b.ReportMetric(milliseconds(wakeP50), "wake-p50-ms")
	b.ReportMetric(milliseconds(wakeP99), "wake-p99-ms")
	b.ReportMetric(milliseconds(bareP50), "bare-p50-ms")
	b.ReportMetric(milliseconds(bareP99), "bare-p99-ms")
	b.ReportMetric(float64(wakeP50)/float64(bareP50), "p50-ratio")
	b.ReportMetric(float64(wakeP99)/float64(bareP99), "p99-ratio")

	// The instance's own share of a wake, from the wake request to the
	// first backend connection that succeeded, as sdblocal logs it. The
	// log also holds the wake before the copy was made, so the last
	// b.N entries are the timed ones.
	var ready []time.Duration
	for _, m := range wokePattern.FindAllStringSubmatch(s.logs.String(), -1) {
		d, err := time.ParseDuration(m[1])
		if err != nil {
			b.Fatalf("duration %q in the wake log line: %v", m[1], err)
		}
		ready = append(ready, d)
	}
	if len(ready) < len(wakes) {
		b.Fatalf("%d \"instance woke\" log lines for %d timed wakes", len(ready), len(wakes))
	}
	ready = ready[len(ready)-len(wakes):]
	b.ReportMetric(milliseconds(percentile(ready, 50)), "ready-p50-ms")
	b.ReportMetric(milliseconds(percentile(ready, 99)), "ready-p99-ms")
}

// wokePattern matches the duration of a wake in the text log.
var wokePattern = regexp.MustCompile(`msg="instance woke" .*duration=(\S+)`)

// percentile returns the nearest-rank p-th percentile of samples.
func percentile(samples []time.Duration, p float64) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	sorted := slices.Clone(samples)
	slices.Sort(sorted)
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[max(rank, 1)-1]
}

func milliseconds(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// bareInstance is a copy of a suspended database's instance that the
// benchmark starts without sdblocal.
type bareInstance struct {
	pgDir   string
	dir     string // socket directory, parent of data
	data    string
	dbName  string
	sysProc func() *syscall.SysProcAttr
}

// newBareInstance copies the data directory of db, which must be
// suspended, into a new temporary directory. As root the copy keeps the
// service user's ownership and PostgreSQL runs as that user, because it
// refuses to run as root.
func newBareInstance(b *testing.B, s *testServer, db *sdb.Database) *bareInstance {
	b.Helper()
	dir := newDataDir(b)
	bare := &bareInstance{
		pgDir:  autoscale.ResolvePGDir(""),
		dir:    dir,
		data:   filepath.Join(dir, "data"),
		dbName: db.Name,
		sysProc: func() *syscall.SysProcAttr {
			return &syscall.SysProcAttr{Setpgid: true}
		},
	}
	source := filepath.Join(s.dataDir, "instances", db.ID, "data")
	if out, err := exec.Command("cp", "-a", source, bare.data).CombinedOutput(); err != nil {
		b.Fatalf("copy %s: %v\n%s", source, err, out)
	}
	if os.Geteuid() == 0 {
		user, err := autoscale.LookupServiceUser("postgres")
		if err != nil {
			b.Fatal(err)
		}
		if err := os.Chown(dir, user.UID, user.GID); err != nil {
			b.Fatal(err)
		}
		bare.sysProc = func() *syscall.SysProcAttr {
			return &syscall.SysProcAttr{Setpgid: true, Credential: &syscall.Credential{Uid: uint32(user.UID), Gid: uint32(user.GID), Groups: []uint32{}}}
		}
	}
	return bare
}

// startAndQuery starts PostgreSQL on the copy, runs SELECT 1 on a new
// connection and returns the time that took. It then stops the server
// with a fast shutdown, untimed.
func (bare *bareInstance) startAndQuery(b *testing.B) time.Duration {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	started := time.Now()
	cmd := exec.Command(filepath.Join(bare.pgDir, "bin", "postgres"),
		"-D", bare.data,
		"-c", "listen_addresses=",
		"-c", "unix_socket_directories="+bare.dir,
		"-c", "port=5432",
	)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C", "LC_ALL=C"}
	cmd.SysProcAttr = bare.sysProc()
	output := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = output, output
	if err := cmd.Start(); err != nil {
		b.Fatalf("start postgres: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	}()

	pidFile := filepath.Join(bare.data, "postmaster.pid")
	for !bareReady(pidFile, cmd.Process.Pid) {
		select {
		case <-exited:
			b.Fatalf("postgres exited during start-up:\n%s", output)
		case <-ctx.Done():
			b.Fatalf("postgres not ready after 30s:\n%s", output)
		case <-time.After(time.Millisecond):
		}
	}
	conn, err := pgconn.Connect(ctx, fmt.Sprintf("host=%s port=5432 user=%s dbname=%s sslmode=disable", bare.dir, autoscale.RoleAdmin, bare.dbName))
	if err != nil {
		b.Fatalf("connect to the bare instance: %v\n%s", err, output)
	}
	if _, err := conn.Exec(ctx, "SELECT 1").ReadAll(); err != nil {
		b.Fatalf("SELECT 1 on the bare instance: %v", err)
	}
	elapsed := time.Since(started)
	conn.Close(ctx)
	return elapsed
}

// bareReady reports whether postmaster.pid names pid with status ready,
// the probe sdblocal uses.
func bareReady(pidFile string, pid int) bool {
	raw, err := os.ReadFile(pidFile)
	if err != nil {
		return false
	}
	lines := strings.Split(string(raw), "\n")
	return len(lines) >= 8 && strings.TrimSpace(lines[0]) == strconv.Itoa(pid) && strings.TrimSpace(lines[7]) == "ready"
}
