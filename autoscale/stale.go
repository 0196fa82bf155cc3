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
		return stopOrphanedBackends(l.data, timeout)
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

// stopOrphanedBackends kills the processes a dead postmaster left on
// dataDir. A postmaster killed with SIGKILL leaves its backends running
// until they next check for its death, which a long query does not do,
// and PostgreSQL refuses to start while they hold the old shared memory
// segment ("pre-existing shared memory block is still in use"). They are
// found by executable name and working directory, because every
// PostgreSQL process runs in its data directory. Killing them loses no
// committed transaction: the next start replays the WAL.
func stopOrphanedBackends(dataDir string, timeout time.Duration) (bool, error) {
	dataDir = filepath.Clean(dataDir)
	return killProcesses(func() []int {
		return findProcesses(func(exe, cwd string, _ []string) bool {
			return exe == "postgres" && cwd == dataDir
		})
	}, timeout)
}

// stopProvisioningLeftovers kills the initdb, pg_ctl and postgres
// processes that still work in the instance directory l.dir after the
// sdblocal that provisioned it was killed. Nothing stops them otherwise:
// embedded-postgres starts them without a parent-death signal, and
// pg_ctl detaches the postmaster. Left running, they write into the
// directory that provisioning again removes and recreates, and make it
// fail.
func stopProvisioningLeftovers(l layout, timeout time.Duration) (bool, error) {
	dir := filepath.Clean(l.dir)
	inside := func(path string) bool {
		return path == dir || strings.Contains(path, dir+"/")
	}
	return killProcesses(func() []int {
		return findProcesses(func(exe, cwd string, args []string) bool {
			if exe != "postgres" && exe != "initdb" && exe != "pg_ctl" {
				return false
			}
			if inside(cwd) {
				return true
			}
			for _, arg := range args {
				if inside(arg) {
					return true
				}
			}
			return false
		})
	}, timeout)
}

// killProcesses sends SIGKILL to the processes find returns and waits up
// to timeout until find returns none. It reports whether there were any.
func killProcesses(find func() []int, timeout time.Duration) (bool, error) {
	pids := find()
	if len(pids) == 0 {
		return false, nil
	}
	deadline := time.Now().Add(timeout)
	for {
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(5 * time.Millisecond)
		left := find()
		if len(left) == 0 {
			return true, nil
		}
		if time.Now().After(deadline) {
			return true, fmt.Errorf("processes %v did not exit within %s of SIGKILL", left, timeout)
		}
		pids = left
	}
}

// findProcesses returns the PIDs of the processes for which match holds,
// given the base name of their executable, their working directory and
// their arguments, all read from /proc. Processes whose /proc entries
// cannot be read, such as those of other users, are never returned, and
// neither is this process.
func findProcesses(match func(exe, cwd string, args []string) bool) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, entry := range entries {
		pid, err := strconv.Atoi(entry.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		dir := filepath.Join("/proc", entry.Name())
		exe, err := os.Readlink(filepath.Join(dir, "exe"))
		if err != nil {
			continue
		}
		cwd, err := os.Readlink(filepath.Join(dir, "cwd"))
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline"))
		if err != nil {
			continue
		}
		var args []string
		for _, arg := range bytes.Split(bytes.TrimRight(cmdline, "\x00"), []byte{0}) {
			args = append(args, string(arg))
		}
		if match(filepath.Base(strings.TrimSuffix(exe, " (deleted)")), filepath.Clean(cwd), args) {
			pids = append(pids, pid)
		}
	}
	return pids
}
