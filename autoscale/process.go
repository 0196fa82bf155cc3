package autoscale

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// layout names the files of one instance. The directory is private (0700)
// and holds the Unix socket, so its permissions are the access control.
type layout struct {
	dir  string // <data-dir>/instances/<database-id>
	data string // PGDATA
	run  string // embedded-postgres runtime files, present only while provisioning
	log  string // server log, appended to across wakes
	// cgroup is the instance's CPU cgroup, which every postmaster start
	// joins; nil when CPU limits are not enforced or for provisioning.
	cgroup *instanceCgroup
}

func newLayout(dataDir, databaseID string) layout {
	dir := filepath.Join(dataDir, "instances", databaseID)
	return layout{
		dir:  dir,
		data: filepath.Join(dir, "data"),
		run:  filepath.Join(dir, "run"),
		log:  filepath.Join(dir, "server.log"),
	}
}

// socketPort is the port number in the socket file name (.s.PGSQL.5432).
// Instances listen on no TCP port, so every instance can use the same one.
const socketPort = 5432

// maxSocketPath is the size of sun_path on Linux, terminating NUL included.
const maxSocketPath = 108

func (l layout) socketPath() string {
	return filepath.Join(l.dir, ".s.PGSQL."+strconv.Itoa(socketPort))
}

func (l layout) checkSocketPath() error {
	if n := len(l.socketPath()); n >= maxSocketPath {
		return fmt.Errorf("socket path %s is %d bytes, over the Unix limit of %d: choose a shorter --data-dir", l.socketPath(), n, maxSocketPath-1)
	}
	return nil
}

// postmaster is one running PostgreSQL server process.
type postmaster struct {
	cmd     *exec.Cmd
	pid     int
	exited  chan struct{} // closed when the process has been reaped
	exitErr error         // set before exited is closed
}

// startPostmaster execs bin/postgres directly and waits until it is ready.
// pg_ctl is avoided because it polls every 100 ms, five times the cost of a
// whole wake. Ready means postmaster.pid names this process with status
// "ready" and a backend connection as role succeeds, so no client ever sees
// SQLSTATE 57P03 (the database system is starting up).
func startPostmaster(ctx context.Context, pgDir string, l layout, dbName, role string) (*postmaster, error) {
	if _, err := stopStalePostmaster(l, 30*time.Second); err != nil {
		return nil, err
	}
	logFile, err := os.OpenFile(l.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open server log: %w", err)
	}
	defer logFile.Close()

	cmd := exec.Command(filepath.Join(pgDir, "bin", "postgres"),
		"-D", l.data,
		"-c", "listen_addresses=",
		"-c", "unix_socket_directories="+l.dir,
		"-c", "port="+strconv.Itoa(socketPort),
	)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C", "LC_ALL=C"}
	cmd.Dir = l.dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// Own process group, so a Ctrl-C in the terminal reaches sdblocal only
	// and sdblocal decides how each instance stops. Pdeathsig asks the
	// kernel for a fast shutdown if sdblocal dies without stopping it.
	// NOTE: Pdeathsig fires when the OS thread that forked exits, not the
	// process; Go keeps its threads unless a goroutine exits while locked
	// to one, which sdblocal never does.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGINT}
	spawned, err := l.cgroup.prepareSpawn(cmd.SysProcAttr)
	if err != nil {
		return nil, err
	}
	err = cmd.Start()
	spawned()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	p := &postmaster{cmd: cmd, pid: cmd.Process.Pid, exited: make(chan struct{})}
	go func() {
		p.exitErr = cmd.Wait()
		// A postmaster that exits cleanly has ended its children first.
		// One that was killed leaves its backends running. A backend in a
		// long query keeps its client waiting, and every backend holds the
		// shared memory segment, so no new postmaster can start on the
		// data directory until they exit. PostgreSQL calls setsid() in
		// every child, so they are found by their working directory and
		// not by process group.
		if p.exitErr != nil {
			if killed, err := stopOrphanedBackends(l.data, orphanStopTimeout); err != nil {
				p.exitErr = fmt.Errorf("%w; %v", p.exitErr, err)
			} else if killed {
				p.exitErr = fmt.Errorf("%w; killed the backends it left running", p.exitErr)
			}
		}
		close(p.exited)
	}()
	if err := l.cgroup.placeStarted(p.pid); err != nil {
		p.kill()
		return nil, err
	}

	if err := p.waitReady(ctx, l, dbName, role); err != nil {
		p.kill()
		return nil, fmt.Errorf("%w%s", err, logTail(l.log))
	}
	if err := l.cgroup.adoptProcessGroup(p.pid); err != nil {
		p.kill()
		return nil, err
	}
	return p, nil
}

// orphanStopTimeout bounds the wait for backends left by a dead postmaster
// to exit after SIGKILL.
const orphanStopTimeout = 10 * time.Second

// probeInterval is how often the start-up probe rereads postmaster.pid. A
// wake takes about 16 ms to "ready" on a warm page cache, so 1 ms polls add
// little latency and negligible CPU.
const probeInterval = time.Millisecond

func (p *postmaster) waitReady(ctx context.Context, l layout, dbName, role string) error {
	pidFile := filepath.Join(l.data, "postmaster.pid")
	ticker := time.NewTicker(probeInterval)
	defer ticker.Stop()
	for !postmasterReady(pidFile, p.pid) {
		select {
		case <-p.exited:
			return fmt.Errorf("postgres exited during start-up: %v", p.exitErr)
		case <-ctx.Done():
			return fmt.Errorf("postgres did not become ready: %w", ctx.Err())
		case <-ticker.C:
		}
	}
	// The postmaster reports ready before the first backend has rebuilt its
	// relation cache; one real connection proves clients will succeed.
	for {
		conn, err := connectSocket(ctx, l, dbName, role)
		if err == nil {
			conn.Close(ctx)
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("postgres exited during start-up: %v", p.exitErr)
		case <-ctx.Done():
			return fmt.Errorf("first connection as %s failed: %w", role, err)
		case <-ticker.C:
		}
	}
}

// postmasterReady reports whether postmaster.pid names pid on line 1 and
// the status "ready" on line 8, as PostgreSQL writes it (PM_STATUS_READY).
func postmasterReady(pidFile string, pid int) bool {
	raw, err := os.ReadFile(pidFile)
	if err != nil {
		return false
	}
	lines := strings.Split(string(raw), "\n")
	if len(lines) < 8 {
		return false
	}
	return strings.TrimSpace(lines[0]) == strconv.Itoa(pid) && strings.TrimSpace(lines[7]) == "ready"
}

// connectSocket opens a backend connection over the instance's Unix socket.
func connectSocket(ctx context.Context, l layout, dbName, role string) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig("sslmode=disable")
	if err != nil {
		return nil, err
	}
	cfg.Host = l.dir
	cfg.Port = socketPort
	cfg.User = role
	cfg.Database = dbName
	cfg.ConnectTimeout = 10 * time.Second
	return pgconn.ConnectConfig(ctx, cfg)
}

// stop asks for a fast shutdown (SIGINT: abort transactions, checkpoint,
// exit) and waits for the process to exit. SIGQUIT is never used because it
// skips the checkpoint and forces crash recovery on the next wake. After
// timeout the process is killed.
func (p *postmaster) stop(timeout time.Duration) error {
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal postgres %d: %w", p.pid, err)
	}
	select {
	case <-p.exited:
		return nil
	case <-time.After(timeout):
		p.kill()
		return fmt.Errorf("postgres %d did not shut down within %s and was killed", p.pid, timeout)
	}
}

// kill ends the postmaster at once and reaps it, which also kills the
// backends it leaves.
func (p *postmaster) kill() {
	_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	<-p.exited
}

// logTail returns the last lines of the server log, to explain a failed start.
func logTail(path string) string {
	raw, err := os.ReadFile(path)
	if err != nil || len(raw) == 0 {
		return ""
	}
	const keep = 2048
	if len(raw) > keep {
		raw = raw[len(raw)-keep:]
	}
	raw = bytes.TrimSpace(raw)
	return "; server log ends with: " + string(raw)
}
