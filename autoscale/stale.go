package autoscale

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// stopStalePostmaster stops a postmaster still running on the data
// directory from an earlier sdblocal process (one killed with SIGKILL
// before its instances got their parent-death signal, say). PostgreSQL
// refuses to start while postmaster.pid names a live process, so without
// this the database could never wake again. A pid file whose process is
// gone, or is not a postgres on this data directory, is left to PostgreSQL,
// which removes stale lock files itself.
func stopStalePostmaster(l layout, timeout time.Duration) (stopped bool, err error) {
	raw, err := os.ReadFile(filepath.Join(l.data, "postmaster.pid"))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read postmaster.pid: %w", err)
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 {
		return false, nil
	}
	if !isPostmasterOf(pid, l.data) {
		return false, nil
	}

	// A fast shutdown, as for a suspend: the leftover instance checkpoints
	// and exits, and the next start needs no crash recovery.
	if err := syscall.Kill(pid, syscall.SIGINT); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return false, nil
		}
		return false, fmt.Errorf("stop leftover postmaster %d: %w", pid, err)
	}
	deadline := time.Now().Add(timeout)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			return true, fmt.Errorf("leftover postmaster %d did not stop within %s and was killed", pid, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true, nil
}

// isPostmasterOf reports whether pid runs bin/postgres with -D dataDir,
// read from /proc/<pid>/cmdline, so an unrelated process that reused the
// PID is never signalled.
func isPostmasterOf(pid int, dataDir string) bool {
	cmdline, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return false
	}
	args := bytes.Split(bytes.TrimRight(cmdline, "\x00"), []byte{0})
	if len(args) == 0 || filepath.Base(string(args[0])) != "postgres" {
		return false
	}
	for i := 0; i+1 < len(args); i++ {
		if string(args[i]) == "-D" && filepath.Clean(string(args[i+1])) == filepath.Clean(dataDir) {
			return true
		}
	}
	return false
}
