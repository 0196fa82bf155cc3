package autoscale

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// startFakeBackend runs a copy of sleep named postgres with its working
// directory in dir, as a backend left by a dead postmaster would run.
func startFakeBackend(t *testing.T, binDir, dir string) *exec.Cmd {
	t.Helper()
	return startFakeProgram(t, binDir, "postgres", dir, "")
}

// startFakeProgram runs a copy of sleep under name, in dir. argv0, when
// not empty, replaces the program name in its command line, which sleep
// ignores, so that a test can put a path there.
func startFakeProgram(t *testing.T, binDir, name, dir, argv0 string) *exec.Cmd {
	t.Helper()
	fake := filepath.Join(binDir, name)
	if _, err := os.Stat(fake); err != nil {
		sleep, err := exec.LookPath("sleep")
		if err != nil {
			t.Skipf("no sleep command to stand in for a backend: %v", err)
		}
		src, err := os.Open(sleep)
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		dst, err := os.OpenFile(fake, os.O_CREATE|os.O_WRONLY, 0o755)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(dst, src); err != nil {
			t.Fatal(err)
		}
		if err := dst.Close(); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(fake, "60")
	if argv0 != "" {
		cmd.Args[0] = argv0
	}
	cmd.Dir = dir
	// Its own session, as PostgreSQL puts every child of the postmaster.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	return cmd
}

func TestStalePostmasterKillsOrphanedBackends(t *testing.T) {
	dir := t.TempDir()
	l := newLayout(dir, "db")
	other := newLayout(dir, "other")
	for _, d := range []string{l.data, other.data} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	binDir := t.TempDir()
	orphan := startFakeBackend(t, binDir, l.data)
	bystander := startFakeBackend(t, binDir, other.data)
	// The pid file of a postmaster that is gone.
	if err := os.WriteFile(filepath.Join(l.data, "postmaster.pid"), []byte("999999999\n"+l.data+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	stopped, err := stopStalePostmaster(l, 5*time.Second)
	if err != nil || !stopped {
		t.Fatalf("stopStalePostmaster: stopped=%v err=%v, want the orphan stopped", stopped, err)
	}
	if processRunning(orphan.Process.Pid) {
		t.Errorf("the orphaned backend %d on the data directory still runs", orphan.Process.Pid)
	}
	if !processRunning(bystander.Process.Pid) {
		t.Errorf("the process %d on another data directory was stopped", bystander.Process.Pid)
	}

	// Nothing left: a second call does nothing.
	if stopped, err := stopStalePostmaster(l, time.Second); stopped || err != nil {
		t.Errorf("second call: stopped=%v err=%v, want nothing to do", stopped, err)
	}
}

// processRunning reports whether pid exists and is not a zombie.
func processRunning(pid int) bool {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	for i := len(stat) - 1; i >= 0; i-- {
		if stat[i] == ')' {
			return i+2 < len(stat) && stat[i+2] != 'Z'
		}
	}
	return false
}

func TestProvisioningLeftoversStopped(t *testing.T) {
	dir := t.TempDir()
	l := newLayout(dir, "db")
	other := newLayout(dir, "other")
	for _, d := range []string{l.data, other.data} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	binDir := t.TempDir()
	// initdb runs in sdblocal's working directory and names the data
	// directory in its arguments; the postmaster pg_ctl started runs in
	// the data directory.
	initdb := startFakeProgram(t, binDir, "initdb", binDir, "initdb -D "+l.data)
	postmaster := startFakeProgram(t, binDir, "postgres", l.data, "")
	bystanders := []*exec.Cmd{
		startFakeProgram(t, binDir, "initdb", binDir, "initdb -D "+other.data),
		startFakeProgram(t, binDir, "postgres", other.data, ""),
		startFakeProgram(t, binDir, "sleep", l.dir, ""),
	}

	stopped, err := stopProvisioningLeftovers(l, 5*time.Second)
	if err != nil || !stopped {
		t.Fatalf("stopProvisioningLeftovers: stopped=%v err=%v, want the leftovers stopped", stopped, err)
	}
	for _, leftover := range []*exec.Cmd{initdb, postmaster} {
		if processRunning(leftover.Process.Pid) {
			t.Errorf("leftover %s (pid %d) still runs", leftover.Args[0], leftover.Process.Pid)
		}
	}
	for _, bystander := range bystanders {
		if !processRunning(bystander.Process.Pid) {
			t.Errorf("%s (pid %d), which is not a PostgreSQL program of this instance, was stopped", bystander.Args[0], bystander.Process.Pid)
		}
	}
}
