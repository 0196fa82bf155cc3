package autoscale

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestStalePostmasterIgnoresOtherProcesses(t *testing.T) {
	dir := t.TempDir()
	l := newLayout(dir, "db")
	if err := os.MkdirAll(l.data, 0o700); err != nil {
		t.Fatal(err)
	}

	// No pid file: nothing to do.
	if stopped, err := stopStalePostmaster(l, time.Second); stopped || err != nil {
		t.Errorf("no pid file: stopped=%v err=%v", stopped, err)
	}

	// A live process that is not a postgres on this data directory must
	// never be signalled.
	sleeper := exec.Command("sleep", "30")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer sleeper.Process.Kill()
	pidFile := filepath.Join(l.data, "postmaster.pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(sleeper.Process.Pid)+"\n"+l.data+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if stopped, err := stopStalePostmaster(l, time.Second); stopped || err != nil {
		t.Errorf("unrelated process: stopped=%v err=%v", stopped, err)
	}
	if sleeper.ProcessState != nil {
		t.Fatal("the unrelated process was stopped")
	}

	// A pid file naming a dead process is left to PostgreSQL.
	if err := os.WriteFile(pidFile, []byte("999999999\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if stopped, err := stopStalePostmaster(l, time.Second); stopped || err != nil {
		t.Errorf("dead pid: stopped=%v err=%v", stopped, err)
	}
}
