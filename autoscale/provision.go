package autoscale

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	embeddedpostgres "github.com/fergusstrange/embedded-postgres"
	"github.com/jackc/pgx/v5"
)

// MaxConnections is each instance's max_connections. The proxy opens at most
// 90 backends to an instance, which leaves PostgreSQL's 3 superuser-reserved
// slots and 7 for sdblocal's own connections.
const MaxConnections = 100

// sdblocalConfFile is the configuration file sdblocal owns in the data
// directory.
const sdblocalConfFile = "sdblocal.conf"

// instanceConf is the configuration every wake runs with, written to
// sdblocal.conf and included from postgresql.conf. The memory settings keep
// an idle instance small and its wake fast (shared memory set-up scales with
// shared_buffers); fsync, full_page_writes and synchronous_commit keep their
// safe defaults. max_prepared_transactions = 0 makes PREPARE TRANSACTION
// fail with "prepared transactions are disabled", as in the real service.
const instanceConf = `# Written by sdblocal at provisioning; rewritten when sdblocal changes it.
listen_addresses = ''
port = 5432
unix_socket_permissions = 0700
max_connections = %d
max_prepared_transactions = 0
shared_buffers = 32MB
huge_pages = off
max_worker_processes = 4
max_parallel_workers = 2
max_logical_replication_workers = 0
max_wal_senders = 2
logging_collector = off
log_line_prefix = '%%m [%%p] %%q%%u@%%d '
`

// hbaConf lets local connections in without a password: the socket lives in
// a 0700 directory owned by the service user, so only sdblocal reaches it.
const hbaConf = `# Written by sdblocal. Only the Unix socket in the instance's private
# directory accepts connections; its permissions are the access control.
local all all trust
`

// provision creates a new instance for database dbName in l: initdb and the
// first start through embedded-postgres on a temporary loopback port with a
// random superuser password, the bootstrap SQL, a stop, and the rewrite of
// the configuration to Unix-socket-only. Any earlier partial attempt in
// l.dir is removed first.
func provision(ctx context.Context, pgDir string, l layout, dbName string, startTimeout time.Duration) error {
	if err := os.RemoveAll(l.dir); err != nil {
		return fmt.Errorf("remove earlier attempt: %w", err)
	}
	if err := os.MkdirAll(l.dir, 0o700); err != nil {
		return fmt.Errorf("create instance directory: %w", err)
	}
	if err := l.checkSocketPath(); err != nil {
		return err
	}
	port, err := freeLoopbackPort()
	if err != nil {
		return err
	}
	password, err := randomPassword()
	if err != nil {
		return err
	}
	logFile, err := os.OpenFile(filepath.Join(l.dir, "provision.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("open provision log: %w", err)
	}
	defer logFile.Close()

	// The safe layout for embedded-postgres v1.34: Version set (otherwise
	// it defaults to another major and re-runs initdb on every start),
	// RuntimePath and DataPath separate siblings (it empties RuntimePath on
	// every Start), binaries outside both, and a download URL that cannot
	// be reached so it never fetches anything.
	pg := embeddedpostgres.NewDatabase(embeddedpostgres.DefaultConfig().
		Version(embeddedpostgres.V14).
		Port(uint32(port)).
		Database(dbName).
		Username(superuser).
		Password(password).
		BinariesPath(pgDir).
		RuntimePath(l.run).
		DataPath(l.data).
		CachePath(filepath.Join(l.run, "cache")).
		BinaryRepositoryURL("http://127.0.0.1:1/none").
		Locale("C").
		Encoding("UTF8").
		StartTimeout(startTimeout).
		StartParameters(map[string]string{
			"listen_addresses":        "127.0.0.1",
			"unix_socket_directories": l.dir,
		}).
		Logger(logFile))
	if err := pg.Start(); err != nil {
		return fmt.Errorf("initialise instance: %w%s", err, logTail(logFile.Name()))
	}
	bootErr := bootstrap(ctx, port, password, dbName)
	if err := pg.Stop(); err != nil && bootErr == nil {
		bootErr = fmt.Errorf("stop after initialisation: %w", err)
	}
	if bootErr != nil {
		return bootErr
	}

	if err := writeInstanceConfig(l); err != nil {
		return err
	}
	if err := writeBootstrapVersion(l, latestBootstrapVersion()); err != nil {
		return err
	}
	if err := os.RemoveAll(l.run); err != nil {
		return fmt.Errorf("remove provisioning files: %w", err)
	}
	return nil
}

// bootstrap runs every bootstrap step (roles.go) as the superuser on the
// new instance.
func bootstrap(ctx context.Context, port int, password, dbName string) error {
	connString := fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s dbname=%s sslmode=disable", port, superuser, password, dbName)
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		return fmt.Errorf("connect for bootstrap: %w", err)
	}
	defer conn.Close(ctx)
	return applyBootstrapSteps(ctx, conn, dbName, 0, nil)
}

// instanceConfText is the content of sdblocal.conf.
func instanceConfText() string {
	return fmt.Sprintf(instanceConf, MaxConnections)
}

func writeInstanceConfig(l layout) error {
	if err := os.WriteFile(filepath.Join(l.data, sdblocalConfFile), []byte(instanceConfText()), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", sdblocalConfFile, err)
	}
	mainConf := filepath.Join(l.data, "postgresql.conf")
	raw, err := os.ReadFile(mainConf)
	if err != nil {
		return fmt.Errorf("read postgresql.conf: %w", err)
	}
	const include = "include 'sdblocal.conf'"
	if !strings.Contains(string(raw), include) {
		raw = append(raw, []byte("\n# Settings managed by sdblocal; they override the ones above.\n"+include+"\n")...)
		if err := os.WriteFile(mainConf, raw, 0o600); err != nil {
			return fmt.Errorf("write postgresql.conf: %w", err)
		}
	}
	if err := os.WriteFile(filepath.Join(l.data, "pg_hba.conf"), []byte(hbaConf), 0o600); err != nil {
		return fmt.Errorf("write pg_hba.conf: %w", err)
	}
	return nil
}

// freeLoopbackPort returns a TCP port that was free on 127.0.0.1 a moment
// ago. Another process may take it before provisioning binds it; the start
// then fails and the database goes to status error.
func freeLoopbackPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free loopback port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func randomPassword() (string, error) {
	buf := make([]byte, 24)
	if _, err := rand.Read(buf); err != nil {
		return "", fmt.Errorf("generate password: %w", err)
	}
	return hex.EncodeToString(buf), nil
}
