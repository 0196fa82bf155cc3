package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Tools are the PostgreSQL client programs the service runs.
type Tools struct {
	PGDump    string
	PGRestore string
}

// clientPackage is the Debian package that provides pg_dump and
// pg_restore in a version that reads PostgreSQL 14 servers.
const clientPackage = "postgresql-client-15"

// minToolMajor is the oldest pg_dump that can dump the PostgreSQL 14
// instances: pg_dump refuses servers newer than itself.
const minToolMajor = 14

// FindTools resolves pg_dump and pg_restore, each from its given path or,
// when that is empty, from $PATH, and checks that each runs and is
// PostgreSQL 14 or newer.
func FindTools(pgDump, pgRestore string) (Tools, error) {
	var tools Tools
	var err error
	if tools.PGDump, err = findTool("pg_dump", pgDump); err != nil {
		return Tools{}, err
	}
	if tools.PGRestore, err = findTool("pg_restore", pgRestore); err != nil {
		return Tools{}, err
	}
	return tools, nil
}

func findTool(name, configured string) (string, error) {
	lookup := configured
	if lookup == "" {
		lookup = name
	}
	path, err := exec.LookPath(lookup)
	if err != nil {
		if configured == "" {
			return "", fmt.Errorf("%s not found in $PATH: install the Debian package %s (for example `apt-get install %s`, or `make tools`)", name, clientPackage, clientPackage)
		}
		return "", fmt.Errorf("%s %s is not an executable file: %w; install the Debian package %s or give the path of %s", name, configured, err, clientPackage, name)
	}
	major, err := toolMajorVersion(path)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", name, path, err)
	}
	if major < minToolMajor {
		return "", fmt.Errorf("%s %s is PostgreSQL %d, older than the PostgreSQL %d instances it must read: install the Debian package %s", name, path, major, minToolMajor, clientPackage)
	}
	return path, nil
}

// versionPattern matches the version line of the client tools, such as
// "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)".
var versionPattern = regexp.MustCompile(`\(PostgreSQL\) (\d+)`)

// toolMajorVersion runs path --version and returns the major version.
func toolMajorVersion(path string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, "--version")
	cmd.Env = toolEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("run --version: %w: %s", err, bytes.TrimSpace(out))
	}
	match := versionPattern.FindSubmatch(out)
	if match == nil {
		return 0, fmt.Errorf("unexpected --version output %q", bytes.TrimSpace(out))
	}
	return strconv.Atoi(string(match[1]))
}

// toolEnv is the environment of pg_dump and pg_restore: $PATH, which
// Debian's pg_wrapper needs, and a C locale, with none of the PG*
// variables of sdblocal's own environment, which could send the tools to
// another server or change their output.
func toolEnv() []string {
	env := []string{"LANG=C", "LC_ALL=C"}
	for _, name := range []string{"PATH", "HOME", "TMPDIR"} {
		if value, ok := os.LookupEnv(name); ok {
			env = append(env, name+"="+value)
		}
	}
	return env
}

// tailBuffer keeps the last max bytes written to it, for the stderr of a
// tool that may print a lot before it fails.
type tailBuffer struct {
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = t.buf[over:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	return strings.TrimSpace(string(t.buf))
}

// runTool runs a client tool and returns an error carrying the end of its
// stderr when it fails.
func runTool(cmd *exec.Cmd) error {
	stderr := &tailBuffer{max: 4096}
	cmd.Stderr = stderr
	cmd.Env = toolEnv()
	// The caller's exec.CommandContext kills the tool when its context
	// ends. WaitDelay then bounds the wait for its output pipes to close.
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if err == nil {
		return nil
	}
	name := cmd.Path[strings.LastIndex(cmd.Path, "/")+1:]
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) && stderr.String() != "" {
		return fmt.Errorf("%s failed (%v): %s", name, exitErr, stderr)
	}
	return fmt.Errorf("%s failed: %w", name, err)
}
