package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	sdb "github.com/scaleway/scaleway-sdk-go/api/serverless_sqldb/v1alpha1"
	"github.com/scaleway/scaleway-sdk-go/scw"

	"github.com/sdblocal/sdblocal/auth"
)

// These tests run the real sdblocal binary, built once in TestMain, against
// the real PostgreSQL 14 tree and the Debian client tools. `make test`
// installs both first.

var sdblocalBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sdblocal-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// The binary drops privileges after exec, so only root needs to run it,
	// but the directory must be traversable if tests run it as another user.
	_ = os.Chmod(dir, 0o755)
	sdblocalBinary = filepath.Join(dir, "sdblocal")
	build := exec.Command("go", "build", "-o", sdblocalBinary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build sdblocal:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// testServer is one running `sdblocal serve` with its own data directory
// and loopback ports.
type testServer struct {
	t       testing.TB
	dataDir string
	apiURL  string
	pgHost  string
	pgPort  int
	creds   auth.Credentials
	cmd     *exec.Cmd
	logs    *syncBuffer
	exited  chan struct{}
	api     *sdb.API
}

// syncBuffer collects the server's output for failure messages.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// newDataDir returns a short temporary directory: instance sockets live
// below it and a Unix socket path is limited to 107 bytes.
func newDataDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sdbt-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// startServer runs sdblocal serve on a fresh data directory and waits for
// /healthz. extra flags are appended to the command line.
func startServer(t testing.TB, extra ...string) *testServer {
	t.Helper()
	return startServerIn(t, newDataDir(t), extra...)
}

func startServerIn(t testing.TB, dataDir string, extra ...string) *testServer {
	t.Helper()
	apiPort, pgPort := freePort(t), freePort(t)
	s := &testServer{
		t:       t,
		dataDir: dataDir,
		apiURL:  fmt.Sprintf("http://127.0.0.1:%d", apiPort),
		pgHost:  "127.0.0.1",
		pgPort:  pgPort,
		logs:    &syncBuffer{},
		exited:  make(chan struct{}),
	}
	args := append([]string{"serve",
		"--data-dir", dataDir,
		"--api-addr", fmt.Sprintf("127.0.0.1:%d", apiPort),
		"--pg-addr", fmt.Sprintf("127.0.0.1:%d", pgPort),
		"--log-level", "debug",
	}, extra...)
	s.cmd = exec.Command(sdblocalBinary, args...)
	s.cmd.Env = serverEnv()
	s.cmd.Stdout = s.logs
	s.cmd.Stderr = s.logs
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start sdblocal: %v", err)
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(s.stop)

	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.apiURL + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-s.exited:
			t.Fatalf("sdblocal exited before it was ready:\n%s", s.logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("sdblocal not ready after 30s:\n%s", s.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}

	creds, err := auth.ReadCredentials(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	s.creds = creds
	client, err := scw.NewClient(
		scw.WithAPIURL(s.apiURL),
		scw.WithAuth(creds.AccessKey, creds.SecretKey),
		scw.WithDefaultRegion(scw.RegionFrPar),
		scw.WithDefaultProjectID(creds.ProjectID),
		scw.WithDefaultOrganizationID(creds.OrganizationID),
	)
	if err != nil {
		t.Fatal(err)
	}
	s.api = sdb.NewAPI(client)
	return s
}

// serverEnv is the test process's environment without the SCW_ and
// SDBLOCAL_ variables a developer's shell may carry.
func serverEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "SCW_") || (strings.HasPrefix(kv, "SDBLOCAL_") && !strings.HasPrefix(kv, "SDBLOCAL_PG_DIR=")) {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// stop ends the server with SIGTERM and waits for it.
func (s *testServer) stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
		if code := s.cmd.ProcessState.ExitCode(); code != 0 {
			s.t.Errorf("sdblocal exited with status %d after SIGTERM, want 0", code)
		}
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
		s.t.Errorf("sdblocal did not stop within 30s of SIGTERM")
	}
	if s.t.Failed() {
		s.t.Logf("sdblocal output:\n%s", s.logs)
	}
}

// createDatabase creates a database through the Scaleway SDK and waits
// until it is ready.
func (s *testServer) createDatabase(t testing.TB, name string, cpuMin, cpuMax uint32) *sdb.Database {
	t.Helper()
	db, err := s.api.CreateDatabase(&sdb.CreateDatabaseRequest{
		ProjectID: s.creds.ProjectID, Name: name, CPUMin: cpuMin, CPUMax: cpuMax,
	})
	if err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		got, err := s.api.GetDatabase(&sdb.GetDatabaseRequest{DatabaseID: db.ID})
		if err != nil {
			t.Fatalf("get database %s: %v", db.ID, err)
		}
		if got.Status == sdb.DatabaseStatusReady {
			return got
		}
		if got.Status != sdb.DatabaseStatusCreating {
			t.Fatalf("database %s has status %s:\n%s", db.ID, got.Status, s.logs)
		}
		if time.Now().After(deadline) {
			t.Fatalf("database %s not ready after 60s:\n%s", db.ID, s.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *testServer) getDatabase(t testing.TB, id string) *sdb.Database {
	t.Helper()
	db, err := s.api.GetDatabase(&sdb.GetDatabaseRequest{DatabaseID: id})
	if err != nil {
		t.Fatalf("get database %s: %v", id, err)
	}
	return db
}

// connString is a libpq URL for the database with the owner's credentials,
// routed by the databaseid option as in the endpoint the API returns.
func (s *testServer) connString(db *sdb.Database) string {
	return fmt.Sprintf("postgresql://%s:%s@%s:%d/%s?sslmode=require&options=databaseid%%3D%s",
		s.creds.PrincipalID, s.creds.SecretKey, s.pgHost, s.pgPort, db.Name, db.ID)
}

// psql runs one psql command with ON_ERROR_STOP and returns its unaligned,
// tuples-only output.
func (s *testServer) psql(t testing.TB, db *sdb.Database, sql string) (string, error) {
	t.Helper()
	cmd := exec.Command("psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql, s.connString(db))
	cmd.Env = append(serverEnv(), "PGCONNECT_TIMEOUT=30")
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func (s *testServer) mustPsql(t testing.TB, db *sdb.Database, sql string) string {
	t.Helper()
	out, err := s.psql(t, db, sql)
	if err != nil {
		t.Fatalf("psql %q: %v\n%s", sql, err, out)
	}
	return out
}

// postmasterPID returns the PID in the instance's postmaster.pid, or 0
// when the file is absent (the instance is suspended).
func (s *testServer) postmasterPID(t testing.TB, databaseID string) int {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(s.dataDir, "instances", databaseID, "data", "postmaster.pid"))
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("postmaster.pid starts with %q", line)
	}
	return pid
}

// processAlive reports whether a process with pid exists.
func processAlive(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

// metric returns the value of the first sample of name whose labels
// contain every labels fragment (for example `database_id="..."`), and
// false when there is none.
func (s *testServer) metric(t testing.TB, name string, labels ...string) (float64, bool) {
	t.Helper()
	resp, err := http.Get(s.apiURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	scanner := bufio.NewScanner(resp.Body)
	scanner.Buffer(make([]byte, 1<<20), 1<<20)
	for scanner.Scan() {
		line := scanner.Text()
		if strings.HasPrefix(line, "#") || !strings.HasPrefix(line, name) {
			continue
		}
		series, value, ok := strings.Cut(line, " ")
		if !ok || (series != name && !strings.HasPrefix(series, name+"{")) {
			continue
		}
		matches := true
		for _, l := range labels {
			if !strings.Contains(series, l) {
				matches = false
			}
		}
		if !matches {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		return v, true
	}
	return 0, false
}

// waitFor polls cond every 20 ms until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// apiRequest sends a raw HTTP request with the owner's token and returns
// the status and body.
func (s *testServer) apiRequest(t testing.TB, method, path string, body io.Reader) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, s.apiURL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Auth-Token", s.creds.SecretKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}
