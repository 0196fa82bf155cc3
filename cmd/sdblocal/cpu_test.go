package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	sdb "github.com/scaleway/scaleway-sdk-go/api/serverless_sqldb/v1alpha1"
)

// busySQL keeps one backend on a CPU for the given number of seconds of
// wall time, however much CPU a quota leaves it.
const busySQL = `DO $$
DECLARE
	stop timestamptz := clock_timestamp() + interval '%g seconds';
	n bigint := 0;
BEGIN
	WHILE clock_timestamp() < stop LOOP
		n := n + 1;
	END LOOP;
END $$`

// busyBackends opens n client connections and returns their backend PIDs
// and a function that runs busySQL on all of them at once for seconds and
// waits for the end.
func (s *testServer) busyBackends(t *testing.T, db *sdb.Database, n int) (pids []int, run func(seconds float64)) {
	t.Helper()
	ctx := context.Background()
	var conns []*pgx.Conn
	for range n {
		conn, err := pgx.Connect(ctx, s.connString(db))
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		t.Cleanup(func() { conn.Close(context.Background()) })
		var pid int
		if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
			t.Fatalf("pg_backend_pid: %v", err)
		}
		conns = append(conns, conn)
		pids = append(pids, pid)
	}
	run = func(seconds float64) {
		t.Helper()
		ctx, cancel := context.WithTimeout(ctx, time.Duration(seconds*float64(time.Second))+30*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		errs := make(chan error, len(conns))
		for _, conn := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := conn.Exec(ctx, fmt.Sprintf(busySQL, seconds)); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("busy loop: %v", err)
		}
	}
	return pids, run
}

// requireCPULimits fails unless the server enforces CPU limits. Only a
// test process that is not root may skip, because only root can set up
// cgroups.
func requireCPULimits(t *testing.T, s *testServer) {
	t.Helper()
	enforced, ok := s.metric(t, "sdblocal_cpu_limits_enforced")
	if ok && enforced == 1 {
		return
	}
	if os.Geteuid() != 0 {
		t.Skipf("CPU limits are not enforced: setting up cgroups needs root, and this test runs as uid %d", os.Geteuid())
	}
	t.Fatalf("running as root, but sdblocal_cpu_limits_enforced = %v (present %v): the cgroup could not be set up:\n%s", enforced, ok, s.logs)
}

// cgroupDir returns the directory of the cgroup holding pid in the v1
// hierarchy of controller, found through /proc/<pid>/cgroup and the mount
// table, or in the cgroup2 hierarchy when no v1 hierarchy has it.
func cgroupDir(t *testing.T, pid int, controller string) string {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatalf("read cgroups of %d: %v", pid, err)
	}
	var v1Path, v2Path string
	for line := range strings.SplitSeq(strings.TrimSpace(string(raw)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "" {
			v2Path = parts[2]
		} else if slices.Contains(strings.Split(parts[1], ","), controller) {
			v1Path = parts[2]
		}
	}
	mounts, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer mounts.Close()
	var v1Mount, v2Mount string
	scanner := bufio.NewScanner(mounts)
	for scanner.Scan() {
		fields := strings.Fields(scanner.Text())
		sep := slices.Index(fields, "-")
		if sep < 0 || len(fields) < sep+4 {
			continue
		}
		switch fields[sep+1] {
		case "cgroup":
			if slices.Contains(strings.Split(fields[sep+3], ","), controller) {
				v1Mount = fields[4]
			}
		case "cgroup2":
			v2Mount = fields[4]
		}
	}
	if v1Mount != "" && v1Path != "" {
		return filepath.Join(v1Mount, v1Path)
	}
	if v2Mount != "" && v2Path != "" {
		return filepath.Join(v2Mount, v2Path)
	}
	t.Fatalf("no cgroup with %s holds process %d:\n%s", controller, pid, raw)
	return ""
}

// cgroupCPU returns the CPU time used so far by the processes of the
// cgroup in dir, from cpuacct.usage (v1) or cpu.stat (v2).
func cgroupCPU(t *testing.T, dir string) time.Duration {
	t.Helper()
	if raw, err := os.ReadFile(filepath.Join(dir, "cpuacct.usage")); err == nil {
		ns, err := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return time.Duration(ns)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		t.Fatalf("read CPU usage of cgroup %s: %v", dir, err)
	}
	for line := range strings.SplitSeq(string(raw), "\n") {
		if value, ok := strings.CutPrefix(line, "usage_usec "); ok {
			us, err := strconv.ParseInt(value, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return time.Duration(us) * time.Microsecond
		}
	}
	t.Fatalf("cgroup %s has no usage counter", dir)
	return 0
}

// cgroupQuota returns the CPU quota of the cgroup holding pid, in vCPUs,
// or -1 when it has none.
func cgroupQuota(t *testing.T, pid int) float64 {
	t.Helper()
	dir := cgroupDir(t, pid, "cpu")
	if raw, err := os.ReadFile(filepath.Join(dir, "cpu.cfs_quota_us")); err == nil {
		quota, err := strconv.ParseFloat(strings.TrimSpace(string(raw)), 64)
		if err != nil {
			t.Fatal(err)
		}
		if quota < 0 {
			return -1
		}
		period, err := os.ReadFile(filepath.Join(dir, "cpu.cfs_period_us"))
		if err != nil {
			t.Fatal(err)
		}
		p, _ := strconv.ParseFloat(strings.TrimSpace(string(period)), 64)
		return quota / p
	}
	raw, err := os.ReadFile(filepath.Join(dir, "cpu.max"))
	if err != nil {
		t.Fatalf("read CPU quota of cgroup %s: %v", dir, err)
	}
	quota, period, _ := strings.Cut(strings.TrimSpace(string(raw)), " ")
	if quota == "max" {
		return -1
	}
	q, _ := strconv.ParseFloat(quota, 64)
	p, _ := strconv.ParseFloat(period, 64)
	return q / p
}

// machineBusy returns the CPU time all CPUs spent outside idle and iowait
// since boot, from the first line of /proc/stat (in USER_HZ, 100 per
// second on Linux amd64 and arm64).
func machineBusy(t *testing.T) time.Duration {
	t.Helper()
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	fields := strings.Fields(line)
	var busy uint64
	for n, field := range fields[1:] {
		v, err := strconv.ParseUint(field, 10, 64)
		if err != nil {
			t.Fatalf("/proc/stat: %q", line)
		}
		if n != 3 && n != 4 && n < 8 { // idle, iowait; guest time is already in user
			busy += v
		}
	}
	return time.Duration(busy) * 10 * time.Millisecond
}

// cgroupThrottling returns the CFS periods in which the cgroup in dir had
// runnable tasks, and those in which its quota ran out.
func cgroupThrottling(t *testing.T, dir string) (periods, throttled int64) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(raw), "\n") {
		name, value, _ := strings.Cut(line, " ")
		n, _ := strconv.ParseInt(value, 10, 64)
		switch name {
		case "nr_periods":
			periods = n
		case "nr_throttled":
			throttled = n
		}
	}
	return periods, throttled
}

// cpuRates describe one measurement window.
type cpuRates struct {
	instance  float64 // CPU-seconds per second used by the instance's cgroup
	others    float64 // CPU-seconds per second used by every other process
	throttled float64 // fraction of the cgroup's CFS periods that ran out of quota
}

// measureCPURate measures the instance's cgroups (acctDir for the usage,
// cpuDir for the throttling) and the rest of the machine over window,
// starting after warmUp.
func measureCPURate(t *testing.T, acctDir, cpuDir string, warmUp, window time.Duration) cpuRates {
	t.Helper()
	time.Sleep(warmUp)
	before, machineBefore, start := cgroupCPU(t, acctDir), machineBusy(t), time.Now()
	periodsBefore, throttledBefore := cgroupThrottling(t, cpuDir)
	time.Sleep(window)
	used, machineUsed, elapsed := cgroupCPU(t, acctDir)-before, machineBusy(t)-machineBefore, time.Since(start).Seconds()
	periods, throttled := cgroupThrottling(t, cpuDir)
	rates := cpuRates{
		instance: used.Seconds() / elapsed,
		others:   max(machineUsed.Seconds()/elapsed-used.Seconds()/elapsed, 0),
	}
	if periods > periodsBefore {
		rates.throttled = float64(throttled-throttledBefore) / float64(periods-periodsBefore)
	}
	return rates
}

// usage reads the database's usage through the API's local extension.
func (s *testServer) usage(t *testing.T, id string) map[string]any {
	t.Helper()
	status, body := s.apiRequest(t, "GET", "/serverless-sqldb/v1alpha1/regions/fr-par/databases/"+id+"/usage", nil)
	if status != 200 {
		t.Fatalf("GET usage of %s: status %d, body %v", id, status, body)
	}
	return body
}

// TestCPUScalesUpAndDown runs two CPU-bound backends on a database with
// cpu_min 0 and cpu_max 2, with the rule's windows shortened: the
// allocation goes from 1 to 2 under load, back to 1 when the load stops,
// and the instance then suspends.
//
// The thresholds are lowered from 90 % and 70 % to 50 % and 30 %, so the
// test still scales when other processes share the machine's CPUs.
func TestCPUScalesUpAndDown(t *testing.T) {
	s := startServer(t, "--idle-timeout", "3s", "--scale-interval", "200ms", "--scale-window", "1s", "--scale-cooldown", "2s",
		"--scale-up-threshold", "0.5", "--scale-down-threshold", "0.3")
	db := s.createDatabase(t, "busy", 0, 2)
	_, run := s.busyBackends(t, db, 2)
	if d := s.getDatabase(t, db.ID); !d.Started || d.CPUCurrent != 1 {
		t.Fatalf("after connecting: started=%v cpu_current=%d, want true and 1", d.Started, d.CPUCurrent)
	}

	loadStart := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		run(8)
	}()
	waitFor(t, 7*time.Second, "cpu_current 2 under load", func() bool { return s.getDatabase(t, db.ID).CPUCurrent == 2 })
	t.Logf("scaled up %s after the load started", time.Since(loadStart).Round(10*time.Millisecond))
	if n, _ := s.metric(t, "sdblocal_instance_scaling_steps_total", `database_id="`+db.ID+`"`, `direction="up"`); n != 1 {
		t.Errorf("scaling steps up = %v, want 1", n)
	}
	if current, _ := s.metric(t, "sdblocal_database_cpu_current", `database_id="`+db.ID+`"`); current != 2 {
		t.Errorf("sdblocal_database_cpu_current = %v, want 2", current)
	}
	time.Sleep(3 * time.Second) // a cooldown later, still under load
	if d := s.getDatabase(t, db.ID); d.CPUCurrent != 2 {
		t.Errorf("cpu_current = %d while two backends stay busy, want 2 (cpu_max)", d.CPUCurrent)
	}

	<-done
	loadEnd := time.Now()
	waitFor(t, 10*time.Second, "cpu_current 1 after the load", func() bool { return s.getDatabase(t, db.ID).CPUCurrent == 1 })
	t.Logf("scaled down %s after the load ended", time.Since(loadEnd).Round(10*time.Millisecond))
	waitFor(t, 15*time.Second, "the suspend after the idle timeout", func() bool {
		d := s.getDatabase(t, db.ID)
		return !d.Started && d.CPUCurrent == 0
	})

	logs := s.logs.String()
	for _, want := range []string{"from=1 to=2", "from=2 to=1"} {
		if !strings.Contains(logs, `msg="instance scaled" database_id=`+db.ID+" "+want) {
			t.Errorf("no log line for the step %s", want)
		}
	}
}

// TestCPUQuotaCapsUsage runs two CPU-bound backends under a 1-vCPU and
// then a 2-vCPU allocation, and measures the CPU time of the instance's
// cgroup itself.
func TestCPUQuotaCapsUsage(t *testing.T) {
	s := startServer(t, "--scale-interval", "200ms")
	requireCPULimits(t, s)
	db := s.createDatabase(t, "capped", 1, 1)
	waitFor(t, 10*time.Second, "cpu_min 1 to start the instance", func() bool { return s.getDatabase(t, db.ID).Started })

	postmaster := s.postmasterPID(t, db.ID)
	backends, run := s.busyBackends(t, db, 2)
	acctDir, cpuDir := cgroupDir(t, postmaster, "cpuacct"), cgroupDir(t, postmaster, "cpu")
	for _, dir := range []string{acctDir, cpuDir} {
		if want := filepath.Join("sdblocal", db.ID); !strings.HasSuffix(dir, want) {
			t.Fatalf("postmaster %d is in cgroup %s, want one ending in %s", postmaster, dir, want)
		}
	}
	for _, pid := range backends {
		if got := cgroupDir(t, pid, "cpu"); !strings.HasSuffix(got, filepath.Join("sdblocal", db.ID)) {
			t.Errorf("backend %d is in cgroup %s, want the instance's", pid, got)
		}
	}
	if quota := cgroupQuota(t, postmaster); quota != 1 {
		t.Errorf("quota = %v vCPUs, want 1", quota)
	}

	cpus := float64(runtime.NumCPU())
	measure := func(seconds float64) cpuRates {
		done := make(chan struct{})
		go func() {
			defer close(done)
			run(seconds)
		}()
		rates := measureCPURate(t, acctDir, cpuDir, time.Second, time.Duration(seconds-2)*time.Second)
		<-done
		return rates
	}
	// Other tests may share the machine's CPUs, so a lower bound is want,
	// or else what the other processes left, less a margin.
	room := func(rates cpuRates) float64 { return cpus - rates.others }
	expectAtLeast := func(what string, rates cpuRates, want float64) {
		t.Helper()
		if floor := min(want, room(rates)-0.2); rates.instance < floor {
			t.Errorf("%s used %.2f CPU-seconds per second, want at least %.2f (other processes used %.2f of %.0f CPUs)", what, rates.instance, floor, rates.others, cpus)
		}
	}

	oneCPU := measure(5)
	t.Logf("two busy backends under 1 vCPU: %.2f CPU-seconds per second, %.0f%% of periods throttled (rest of the machine %.2f)", oneCPU.instance, oneCPU.throttled*100, oneCPU.others)
	if oneCPU.instance > 1.2 {
		t.Errorf("two busy backends under 1 vCPU used %.2f CPU-seconds per second, want at most 1.2", oneCPU.instance)
	}
	expectAtLeast("two busy backends under 1 vCPU", oneCPU, 0.8)
	switch {
	case room(oneCPU) < 1.5:
		t.Logf("throttling under 1 vCPU not checked: other processes left only %.2f CPUs", room(oneCPU))
	case oneCPU.throttled < 0.5:
		t.Errorf("%.0f%% of periods throttled under 1 vCPU with two busy backends, want most of them", oneCPU.throttled*100)
	}

	two := uint32(2)
	updated, err := s.api.UpdateDatabase(&sdb.UpdateDatabaseRequest{DatabaseID: db.ID, CPUMin: &two, CPUMax: &two})
	if err != nil {
		t.Fatal(err)
	}
	if updated.CPUCurrent != 2 {
		t.Errorf("PATCH cpu_min 2 returned cpu_current %d, want 2 at once", updated.CPUCurrent)
	}
	if quota := cgroupQuota(t, postmaster); quota != 2 {
		t.Errorf("quota after PATCH = %v vCPUs, want 2", quota)
	}
	twoCPU := measure(5)
	t.Logf("two busy backends under 2 vCPUs: %.2f CPU-seconds per second, %.0f%% of periods throttled (rest of the machine %.2f)", twoCPU.instance, twoCPU.throttled*100, twoCPU.others)
	expectAtLeast("two busy backends under 2 vCPUs", twoCPU, 1.6)
	// The instance's background processes push the demand slightly past
	// two CPUs, so some periods run out: 10 % in one run on an idle 2-vCPU
	// host, against all of them under 1 vCPU.
	if twoCPU.throttled > 0.5 {
		t.Errorf("%.0f%% of periods throttled under 2 vCPUs with two busy backends, want a minority", twoCPU.throttled*100)
	}

	// The meter reads the same cgroup, so it counted at least the two
	// measured windows.
	cpuSeconds, _ := s.metric(t, "sdblocal_database_cpu_seconds_total", `database_id="`+db.ID+`"`)
	if measured := (oneCPU.instance + twoCPU.instance) * 3; cpuSeconds < measured {
		t.Errorf("sdblocal_database_cpu_seconds_total = %.2f, want at least the %.2f measured in the two windows", cpuSeconds, measured)
	}
}

// TestCPULimitsFollowPatch changes cpu_min and cpu_max of a running
// database and expects cpu_current, and the quota where it is enforced,
// to follow at once.
func TestCPULimitsFollowPatch(t *testing.T) {
	s := startServer(t, "--idle-timeout", "1s")
	db := s.createDatabase(t, "patched", 0, 4)
	enforced, _ := s.metric(t, "sdblocal_cpu_limits_enforced")
	if enforced != 1 && os.Geteuid() == 0 {
		t.Fatalf("running as root, but CPU limits are not enforced:\n%s", s.logs)
	}

	// A client session keeps the instance awake between the changes.
	conn, err := pgx.Connect(context.Background(), s.connString(db))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	postmaster := s.postmasterPID(t, db.ID)

	steps := []struct {
		name           string
		cpuMin, cpuMax uint32
		want           uint32
	}{
		{"raising cpu_min above cpu_current", 3, 4, 3},
		{"lowering cpu_max below cpu_current", 2, 2, 2},
		{"lowering both", 0, 1, 1},
		{"raising cpu_max alone", 0, 4, 1},
	}
	for _, step := range steps {
		updated, err := s.api.UpdateDatabase(&sdb.UpdateDatabaseRequest{DatabaseID: db.ID, CPUMin: &step.cpuMin, CPUMax: &step.cpuMax})
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if updated.CPUCurrent != step.want {
			t.Errorf("%s: PATCH returned cpu_current %d, want %d", step.name, updated.CPUCurrent, step.want)
		}
		if enforced == 1 {
			if quota := cgroupQuota(t, postmaster); quota != float64(step.want) {
				t.Errorf("%s: quota %v vCPUs, want %d", step.name, quota, step.want)
			}
		}
	}
	if !strings.Contains(s.logs.String(), "from=1 to=3") {
		t.Errorf("no log line for the step from 1 to 3 vCPUs")
	}

	if err := tx.Rollback(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the suspend after cpu_min 0", func() bool { return !processAlive(postmaster) })
	if d := s.getDatabase(t, db.ID); d.Started || d.CPUCurrent != 0 {
		t.Errorf("after the suspend: started=%v cpu_current=%d, want false and 0", d.Started, d.CPUCurrent)
	}
}

// TestUsageMetering checks the usage counters: vCPU-seconds only while
// the instance runs, storage byte-seconds all the time.
func TestUsageMetering(t *testing.T) {
	s := startServer(t, "--idle-timeout", "700ms", "--scale-interval", "100ms", "--storage-sample-interval", "200ms")
	db := s.createDatabase(t, "metered", 0, 2)

	wokeAt := time.Now()
	s.mustPsql(t, db, "SELECT 1")
	pid := s.postmasterPID(t, db.ID)
	waitFor(t, 15*time.Second, "the suspend", func() bool { return !processAlive(pid) })
	ranFor := time.Since(wokeAt).Seconds()
	waitFor(t, 5*time.Second, "the API to report the suspend", func() bool { return !s.getDatabase(t, db.ID).Started })

	first := s.usage(t, db.ID)
	time.Sleep(1500 * time.Millisecond)
	second := s.usage(t, db.ID)

	provisioned := first["provisioned_vcpu_seconds"].(float64)
	if provisioned < 0.5 || provisioned > ranFor {
		t.Errorf("provisioned_vcpu_seconds = %.3f after one run of at most %.3f s at 1 vCPU, want between 0.5 and that", provisioned, ranFor)
	}
	if later := second["provisioned_vcpu_seconds"].(float64); later != provisioned {
		t.Errorf("provisioned_vcpu_seconds grew from %.3f to %.3f while suspended", provisioned, later)
	}
	if cpu := second["cpu_seconds"].(float64); cpu <= 0 || cpu > ranFor*2 {
		t.Errorf("cpu_seconds = %.3f, want more than 0 and less than two CPUs for %.3f s", cpu, ranFor)
	}
	storageBytes := second["storage_bytes"].(float64)
	if storageBytes < 1<<20 {
		t.Errorf("storage_bytes = %.0f, want the size of a data directory (over 1 MiB)", storageBytes)
	}
	grown := second["storage_byte_seconds"].(float64) - first["storage_byte_seconds"].(float64)
	if grown < storageBytes*1.0 || grown > storageBytes*2.5 {
		t.Errorf("storage_byte_seconds grew by %.0f in 1.5 s at %.0f bytes, want about %.0f", grown, storageBytes, storageBytes*1.5)
	}
	if since, err := time.Parse(time.RFC3339Nano, second["since"].(string)); err != nil || since.After(wokeAt) {
		t.Errorf("since = %v (%v), want before the first wake at %v", second["since"], err, wokeAt)
	}

	metric, ok := s.metric(t, "sdblocal_database_provisioned_vcpu_seconds_total", `database_id="`+db.ID+`"`)
	if !ok || metric != provisioned {
		t.Errorf("sdblocal_database_provisioned_vcpu_seconds_total = %v (present %v), want %v", metric, ok, provisioned)
	}
	if _, ok := s.metric(t, "sdblocal_database_storage_byte_seconds_total", `database_id="`+db.ID+`"`); !ok {
		t.Error("sdblocal_database_storage_byte_seconds_total is missing")
	}
}
