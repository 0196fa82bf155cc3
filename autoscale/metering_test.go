package autoscale

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestMeterProvisionedVCPUSeconds(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	var mt meter
	mt.since, mt.allocSince = t0, t0

	// Suspended for 10 s, 1 vCPU for 20 s, 2 vCPUs for 5 s, suspended for 100 s.
	mt.allocate(at(10), 0)
	mt.allocate(at(30), 1)
	mt.allocate(at(35), 2)
	if got := mt.usage(at(135), 0).ProvisionedVCPUSeconds; got != 30 {
		t.Errorf("after suspend: %v vCPU-seconds, want 30", got)
	}
	if got := mt.usage(at(500), 0).ProvisionedVCPUSeconds; got != 30 {
		t.Errorf("a suspended instance added vCPU-seconds: %v, want 30", got)
	}

	// Running again at 3 vCPUs since 135 s: the open segment counts up to now.
	mt.allocate(at(135), 0)
	if got := mt.usage(at(137), 3).ProvisionedVCPUSeconds; got != 36 {
		t.Errorf("while running: %v vCPU-seconds, want 36", got)
	}
}

func TestMeterStorageByteSeconds(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var mt meter
	mt.since, mt.allocSince = t0, t0

	if got := mt.usage(t0.Add(time.Second), 0); got.StorageByteSeconds != 0 || got.StorageBytes != 0 {
		t.Errorf("before any sample: %+v, want zeros", got)
	}
	// The first sample also covers the time since metering started.
	mt.recordStorage(t0.Add(2*time.Second), 1000)
	mt.recordStorage(t0.Add(12*time.Second), 3000)
	got := mt.usage(t0.Add(13*time.Second), 0)
	if want := 1000.0*2 + 1000*10 + 3000*1; got.StorageByteSeconds != want {
		t.Errorf("storage = %v byte-seconds, want %v", got.StorageByteSeconds, want)
	}
	if got.StorageBytes != 3000 {
		t.Errorf("storage bytes = %d, want 3000", got.StorageBytes)
	}
}

func TestCPUMeterAdd(t *testing.T) {
	var c cpuMeter
	c.add("postmaster 10", 2*time.Second) // a new postmaster counts in full
	c.add("postmaster 10", 3*time.Second)
	c.add("postmaster 10", 2900*time.Millisecond) // a /proc dip is skipped
	c.add("postmaster 10", 3500*time.Millisecond)
	c.add("postmaster 20", time.Second) // the next wake
	if c.total != 4500*time.Millisecond {
		t.Errorf("total = %v, want 4.5s", c.total)
	}

	// A cgroup baseline from an earlier run is not counted.
	cg := cpuMeter{source: cgroupSource, last: time.Hour}
	cg.add(cgroupSource, time.Hour+time.Second)
	if cg.total != time.Second {
		t.Errorf("cgroup total = %v, want 1s", cg.total)
	}
}

func TestParseProcStat(t *testing.T) {
	// The command name may hold spaces and parentheses.
	raw := []byte("4242 (post (ma) ster) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 12 3 20 0 1 0 123 0 0\n")
	st, err := parseProcStat(raw)
	if err != nil {
		t.Fatal(err)
	}
	want := procStat{pgrp: 4242, utime: 250, stime: 75, cutime: 12, cstime: 3}
	if st != want {
		t.Errorf("parsed %+v, want %+v", st, want)
	}
	if _, err := parseProcStat([]byte("4242 (short) S 1 2")); err == nil {
		t.Error("a truncated stat line was accepted")
	}
}

func TestDirSize(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "base", "1"), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, size := range map[string]int{"PG_VERSION": 3, "base/1/1259": 8192, "base/1/1259_fsm": 24576} {
		if err := os.WriteFile(filepath.Join(dir, name), make([]byte, size), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	got, err := dirSize(dir)
	if err != nil || got != 3+8192+24576 {
		t.Errorf("dirSize = %d, %v; want %d", got, err, 3+8192+24576)
	}
	if _, err := dirSize(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing directory has a size")
	}
}

// TestProcessGroupFallback measures a process group without a cgroup: a
// leader whose busy child it reaps, read from /proc while it runs and from
// the leader's wait status once it exits.
func TestProcessGroupFallback(t *testing.T) {
	cmd := exec.Command("timeout", "0.5", "sh", "-c", "while :; do :; done")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot run timeout(1): %v", err)
	}
	p := &postmaster{cmd: cmd, pid: cmd.Process.Pid, exited: make(chan struct{})}
	go func() {
		p.exitErr = cmd.Wait()
		close(p.exited)
	}()
	i := &Instance{proc: p}

	time.Sleep(300 * time.Millisecond)
	i.sampleProcessGroupLocked(func() map[int]time.Duration {
		groups, err := processGroupCPU()
		if err != nil {
			t.Fatal(err)
		}
		return groups
	})
	running := i.meter.cpu.total
	if running < 100*time.Millisecond {
		t.Errorf("CPU time while running = %v, want at least 100ms of a busy loop", running)
	}

	<-p.exited
	i.proc = nil
	i.sampleProcessGroupLocked(func() map[int]time.Duration { t.Fatal("read /proc for an exited group"); return nil })
	final := i.meter.cpu.total
	if final < running || math.Abs(final.Seconds()-0.5) > 0.2 {
		t.Errorf("CPU time after exit = %v (running sample %v), want about 0.5s", final, running)
	}
	i.sampleProcessGroupLocked(nil)
	if i.meter.cpu.total != final {
		t.Errorf("the exited postmaster was counted twice: %v then %v", final, i.meter.cpu.total)
	}
}

func TestSampleStorageInterval(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "PG_VERSION"), []byte("14\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	i := &Instance{layout: layout{data: dir}}
	i.meter.since = t0

	// The first round samples at once, whatever the interval.
	i.sampleStorage(t0.Add(time.Second), time.Minute)
	if i.meter.storageBytes != 3 {
		t.Fatalf("size after the first round = %d, want 3", i.meter.storageBytes)
	}

	if err := os.WriteFile(filepath.Join(dir, "big"), make([]byte, 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	i.sampleStorage(t0.Add(30*time.Second), time.Minute)
	if i.meter.storageBytes != 3 {
		t.Errorf("size sampled again before the interval: %d", i.meter.storageBytes)
	}
	i.sampleStorage(t0.Add(61*time.Second), time.Minute)
	if i.meter.storageBytes != 1003 {
		t.Errorf("size after the interval = %d, want 1003", i.meter.storageBytes)
	}
	if want := 3.0 * 61; i.meter.byteSeconds != want {
		t.Errorf("byte-seconds = %v, want %v", i.meter.byteSeconds, want)
	}
}
