package main

import (
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/lib/pq"
	sdb "github.com/scaleway/scaleway-sdk-go/api/serverless_sqldb/v1alpha1"
	"github.com/xdg-go/scram"

	"github.com/sdblocal/sdblocal/auth"
	"github.com/sdblocal/sdblocal/catalog"
)

// These tests log in through the proxy with real clients (psql, pgx,
// lib/pq and node-postgres) over TLS, SCRAM-SHA-256 and
// SCRAM-SHA-256-PLUS, route by TLS SNI and by the databaseid option, and
// check the limits on failed logins and connections.

// sniSuffix is the default --sni-suffix.
const sniSuffix = "pg.sdb.localhost"

// sniHost is the host name that routes to db by TLS SNI.
func sniHost(db *sdb.Database) string { return db.ID + "." + sniSuffix }

// libpqConnString returns a libpq key/value connection string to the
// proxy as user with password and database name dbName, followed by
// extra "key=value" settings. hostaddr makes any host name reach the
// proxy on loopback, so host can be a database host name for SNI.
func libpqConnString(s *testServer, user, password, dbName string, extra ...string) string {
	settings := []string{
		"host=" + s.pgHost,
		"hostaddr=127.0.0.1",
		fmt.Sprintf("port=%d", s.pgPort),
		"user=" + user,
		"password=" + password,
		"dbname=" + dbName,
		"connect_timeout=30",
	}
	// A later key replaces an earlier one, so extra may set host.
	return strings.Join(append(settings, extra...), " ")
}

// ownerConnString is libpqConnString for the owner's credentials.
func ownerConnString(s *testServer, db *sdb.Database, extra ...string) string {
	return libpqConnString(s, s.creds.PrincipalID, s.creds.SecretKey, db.Name, extra...)
}

// runPsqlEnv runs one psql command like runPsql, with env added to the
// environment.
func runPsqlEnv(env []string, connString, sql string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql, connString)
	cmd.Env = append(append(serverEnv(), "PGCONNECT_TIMEOUT=30"), env...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// expectPsql runs sql and checks that psql prints want.
func expectPsql(t *testing.T, connString, sql, want string) {
	t.Helper()
	out, err := runPsql(connString, sql)
	if err != nil {
		t.Fatalf("psql %q: %v\n%s", sql, err, out)
	}
	if out != want {
		t.Errorf("psql %q printed %q, want %q", sql, out, want)
	}
}

// expectPsqlError runs sql, checks that psql fails, and that its output
// contains want.
func expectPsqlError(t *testing.T, env []string, connString, want string) {
	t.Helper()
	out, err := runPsqlEnv(env, connString, "SELECT 1")
	if err == nil {
		t.Fatalf("psql succeeded, want an error containing %q:\n%s", want, out)
	}
	if !strings.Contains(out, want) {
		t.Errorf("psql output %q does not contain %q", out, want)
	}
}

// expectNoSecretsInLogs checks that the server's output, written at log
// level debug, contains neither the owner's secret key nor any of the
// extra strings.
func expectNoSecretsInLogs(t *testing.T, s *testServer, extra ...string) {
	t.Helper()
	logs := s.logs.String()
	if strings.Contains(logs, s.creds.SecretKey) {
		t.Error("the server's output contains the owner's secret key")
	}
	for _, secret := range extra {
		if secret != "" && strings.Contains(logs, secret) {
			t.Errorf("the server's output contains %q", secret)
		}
	}
}

// pgxConnect connects with pgx to a connection string made by
// libpqConnString. pgx has no hostaddr setting, so its resolver is replaced
// by one that resolves every host name to loopback, while SNI keeps the
// name.
func pgxConnect(ctx context.Context, connString string) (*pgx.Conn, error) {
	config, err := pgx.ParseConfig(connString)
	if err != nil {
		return nil, err
	}
	delete(config.RuntimeParams, "hostaddr")
	config.LookupFunc = func(context.Context, string) ([]string, error) { return []string{"127.0.0.1"}, nil }
	return pgx.ConnectConfig(ctx, config)
}

// metricValue returns the metric's value, 0 when it has no sample yet.
func metricValue(t *testing.T, s *testServer, name string, labels ...string) float64 {
	t.Helper()
	v, _ := s.metric(t, name, labels...)
	return v
}

func TestWireAuthPsql(t *testing.T) {
	s := startServer(t)
	db := s.createDatabase(t, "psqlauth", 0, 1)
	caFile := filepath.Join(s.dataDir, "tls", "ca.crt")
	byOption := "options=-cdatabaseid=" + db.ID

	t.Run("sslmode require", func(t *testing.T) {
		expectPsql(t, ownerConnString(s, db, "sslmode=require", byOption), "SELECT current_database()", db.Name)
	})
	t.Run("verify-full", func(t *testing.T) {
		expectPsql(t, ownerConnString(s, db, "host=localhost", "sslmode=verify-full", "sslrootcert="+caFile, byOption),
			"SELECT current_database()", db.Name)
	})
	t.Run("channel binding required", func(t *testing.T) {
		expectPsql(t, ownerConnString(s, db, "sslmode=require", "channel_binding=require", byOption),
			"SELECT current_database()", db.Name)
	})
	t.Run("SNI", func(t *testing.T) {
		expectPsql(t, ownerConnString(s, db, "host="+sniHost(db), "sslmode=require"), "SELECT current_database()", db.Name)
	})
	t.Run("SNI verify-full and channel binding", func(t *testing.T) {
		expectPsql(t, ownerConnString(s, db, "host="+sniHost(db), "sslmode=verify-full", "sslrootcert="+caFile, "channel_binding=require"),
			"SELECT current_database()", db.Name)
	})
	t.Run("SNI and option agree", func(t *testing.T) {
		expectPsql(t, ownerConnString(s, db, "host="+sniHost(db), "sslmode=require", byOption), "SELECT 1", "1")
	})
	t.Run("SNI and option differ", func(t *testing.T) {
		other := uuid.NewString()
		want := fmt.Sprintf("FATAL:  database ID %s in the TLS server name %q differs from database ID %s in option databaseid", db.ID, sniHost(db), other)
		expectPsqlError(t, nil, ownerConnString(s, db, "host="+sniHost(db), "sslmode=require", "options=-cdatabaseid="+other), want)
	})
	t.Run("SNI not a database ID", func(t *testing.T) {
		expectPsqlError(t, nil, ownerConnString(s, db, "host=shop."+sniSuffix, "sslmode=require"),
			fmt.Sprintf(`FATAL:  invalid TLS server name "shop.%s": "shop" is not a database ID (a UUID)`, sniSuffix))
	})
	t.Run("without TLS", func(t *testing.T) {
		expectPsqlError(t, nil, ownerConnString(s, db, "sslmode=disable", byOption), "FATAL:  connection without TLS rejected: this server requires TLS")
	})
	t.Run("client_encoding", func(t *testing.T) {
		expectPsqlError(t, []string{"PGCLIENTENCODING=SQL_ASCII"}, ownerConnString(s, db, "sslmode=require", byOption),
			`FATAL:  invalid value for parameter "client_encoding": "SQL_ASCII"`)
		expectPsqlError(t, nil, ownerConnString(s, db, "sslmode=require", "options='-cdatabaseid="+db.ID+" -c client_encoding=LATIN1'"),
			`FATAL:  invalid value for parameter "client_encoding": "LATIN1"`)
		out, err := runPsqlEnv([]string{"PGCLIENTENCODING=utf-8"}, ownerConnString(s, db, "sslmode=require", byOption), "SHOW client_encoding")
		if err != nil || out != "UTF8" {
			t.Errorf("PGCLIENTENCODING=utf-8: %v, output %q, want UTF8", err, out)
		}
	})
	t.Run("wrong secret key", func(t *testing.T) {
		wrong := auth.NewSecretKey()
		expectPsqlError(t, nil, libpqConnString(s, s.creds.PrincipalID, wrong, db.Name, "sslmode=require", "channel_binding=require", byOption),
			fmt.Sprintf("FATAL:  password authentication failed for user %q", s.creds.PrincipalID))
		expectNoSecretsInLogs(t, s, wrong)
	})

	if n := metricValue(t, s, "sdblocal_proxy_routed_connections_total", `method="sni"`); n != 3 {
		t.Errorf(`sdblocal_proxy_routed_connections_total{method="sni"} = %v, want 3`, n)
	}
	if n := metricValue(t, s, "sdblocal_proxy_routed_connections_total", `method="option"`); n < 4 {
		t.Errorf(`sdblocal_proxy_routed_connections_total{method="option"} = %v, want at least 4`, n)
	}
	expectNoSecretsInLogs(t, s)
}

func TestWireAuthGoDrivers(t *testing.T) {
	s := startServer(t)
	db := s.createDatabase(t, "drivers", 0, 1)
	byOption := "options=-cdatabaseid=" + db.ID

	pgxQuery := func(t *testing.T, connString string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgxConnect(ctx, connString)
		if err != nil {
			t.Fatalf("pgx connect: %v", err)
		}
		defer conn.Close(ctx)
		var name string
		if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&name); err != nil {
			t.Fatalf("pgx query: %v", err)
		}
		if name != db.Name {
			t.Errorf("current_database() = %q, want %q", name, db.Name)
		}
	}
	t.Run("pgx", func(t *testing.T) {
		pgxQuery(t, ownerConnString(s, db, "sslmode=require", byOption))
	})
	t.Run("pgx channel binding required", func(t *testing.T) {
		pgxQuery(t, ownerConnString(s, db, "sslmode=require", "channel_binding=require", byOption))
	})
	t.Run("pgx SNI verify-full", func(t *testing.T) {
		pgxQuery(t, ownerConnString(s, db, "host="+sniHost(db), "sslmode=verify-full",
			"sslrootcert="+filepath.Join(s.dataDir, "tls", "ca.crt"), "channel_binding=require"))
	})
	t.Run("pgx direct TLS", func(t *testing.T) {
		pgxQuery(t, ownerConnString(s, db, "host="+sniHost(db), "sslmode=require", "sslnegotiation=direct", "channel_binding=require"))
	})
	t.Run("pgx wrong secret key", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := pgxConnect(ctx, libpqConnString(s, s.creds.PrincipalID, auth.NewSecretKey(), db.Name, "sslmode=require", byOption))
		pgErr, ok := errors.AsType[*pgconn.PgError](err)
		if !ok {
			t.Fatalf("pgx with a wrong secret key: %v, want a PostgreSQL error", err)
		}
		if pgErr.Code != "28P01" {
			t.Errorf("SQLSTATE = %s (%s), want 28P01", pgErr.Code, pgErr.Message)
		}
	})

	// lib/pq has SCRAM but no channel binding, and sends SNI for host
	// names; its dialer here reaches the proxy whatever the host name.
	libpqQuery := func(t *testing.T, connString string) (string, error) {
		t.Helper()
		connector, err := pq.NewConnector(connString)
		if err != nil {
			t.Fatal(err)
		}
		connector.Dialer(loopbackDialer{port: s.pgPort})
		sqlDB := sql.OpenDB(connector)
		defer sqlDB.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var name string
		err = sqlDB.QueryRowContext(ctx, "SELECT current_database()").Scan(&name)
		return name, err
	}
	libpqURL := func(host, query string) string {
		return fmt.Sprintf("postgres://%s:%s@%s:%d/%s?%s", s.creds.PrincipalID, s.creds.SecretKey, host, s.pgPort, db.Name, query)
	}
	t.Run("lib/pq", func(t *testing.T) {
		name, err := libpqQuery(t, libpqURL("127.0.0.1", "sslmode=require&options=-cdatabaseid%3D"+db.ID))
		if err != nil || name != db.Name {
			t.Errorf("lib/pq by option: %q, %v", name, err)
		}
	})
	t.Run("lib/pq SNI", func(t *testing.T) {
		name, err := libpqQuery(t, libpqURL(sniHost(db), "sslmode=require"))
		if err != nil || name != db.Name {
			t.Errorf("lib/pq by SNI: %q, %v", name, err)
		}
	})

	if n := metricValue(t, s, "sdblocal_proxy_routed_connections_total", `method="sni"`); n != 3 {
		t.Errorf(`sdblocal_proxy_routed_connections_total{method="sni"} = %v, want 3`, n)
	}
	expectNoSecretsInLogs(t, s)
}

// loopbackDialer dials the proxy on 127.0.0.1 whatever address lib/pq
// requests, as hostaddr does for libpq.
type loopbackDialer struct{ port int }

func (d loopbackDialer) addr() string { return fmt.Sprintf("127.0.0.1:%d", d.port) }

func (d loopbackDialer) Dial(network, address string) (net.Conn, error) {
	return net.DialTimeout("tcp", d.addr(), 10*time.Second)
}

func (d loopbackDialer) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", d.addr(), timeout)
}

func (d loopbackDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	var dialer net.Dialer
	return dialer.DialContext(ctx, "tcp", d.addr())
}

// nodeScript connects with node-postgres using the settings in the
// environment and prints the result of SELECT current_database(). The TLS
// options are given as an object, not as sslmode in a URL, because
// node-postgres treats sslmode=require as verify-full.
const nodeScript = `
const fs = require('fs');
const { Client } = require('pg');
const env = process.env;
const ssl = env.PG_CA
  ? { ca: fs.readFileSync(env.PG_CA), servername: env.PG_SERVERNAME, rejectUnauthorized: true }
  : { rejectUnauthorized: false };
const client = new Client({
  host: '127.0.0.1', port: Number(env.PG_PORT), user: env.PG_USER, password: env.PG_PASSWORD,
  database: env.PG_DATABASE, options: env.PG_OPTIONS || undefined, ssl,
  enableChannelBinding: env.PG_CHANNEL_BINDING === '1',
  connectionTimeoutMillis: 30000,
});
client.connect()
  .then(() => client.query('SELECT current_database() AS name'))
  .then((res) => { console.log(res.rows[0].name); return client.end(); })
  .catch((err) => { console.error('node-postgres error:', err.message); process.exit(1); });
`

func TestWireAuthNodePostgres(t *testing.T) {
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Fatal("npm not found in PATH: this test installs node-postgres with npm; install Node.js and npm (Debian: apt-get install nodejs npm)")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node not found in PATH: install Node.js (Debian: apt-get install nodejs)")
	}
	dir := t.TempDir()
	installCtx, cancelInstall := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancelInstall()
	install := exec.CommandContext(installCtx, npm, "install", "--no-audit", "--no-fund", "--no-save", "--prefix", dir, "pg@8")
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("npm install pg@8: %v\n%s", err, out)
	}
	script := filepath.Join(dir, "connect.js")
	if err := os.WriteFile(script, []byte(nodeScript), 0o644); err != nil {
		t.Fatal(err)
	}

	s := startServer(t)
	db := s.createDatabase(t, "nodepg", 0, 1)
	run := func(t *testing.T, env ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, node, script)
		cmd.Dir = dir
		cmd.Env = append(serverEnv(),
			fmt.Sprintf("PG_PORT=%d", s.pgPort), "PG_USER="+s.creds.PrincipalID, "PG_PASSWORD="+s.creds.SecretKey,
			"PG_DATABASE="+db.Name)
		cmd.Env = append(cmd.Env, env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("node-postgres: %v\n%s", err, out)
		}
		if got := strings.TrimSpace(string(out)); got != db.Name {
			t.Errorf("node-postgres printed %q, want %q", got, db.Name)
		}
	}
	t.Run("option", func(t *testing.T) {
		run(t, "PG_OPTIONS=-c databaseid="+db.ID)
	})
	t.Run("SNI verified with channel binding", func(t *testing.T) {
		run(t, "PG_CA="+filepath.Join(s.dataDir, "tls", "ca.crt"), "PG_SERVERNAME="+sniHost(db), "PG_CHANNEL_BINDING=1")
		// node-postgres ignores options it does not know, so the log
		// shows whether the installed version bound the channel.
		if !strings.Contains(s.logs.String(), "method=scram-sha-256-plus") {
			t.Error("node-postgres with enableChannelBinding did not log in with SCRAM-SHA-256-PLUS")
		}
	})
	if n := metricValue(t, s, "sdblocal_proxy_routed_connections_total", `method="sni"`); n != 1 {
		t.Errorf(`sdblocal_proxy_routed_connections_total{method="sni"} = %v, want 1`, n)
	}
	expectNoSecretsInLogs(t, s)
}

func TestWireAuthStrictRouting(t *testing.T) {
	s := startServer(t, "--routing", "strict")
	db := s.createDatabase(t, "strict", 0, 1)
	const noHostname = "Database hostname wasn't sent to server"

	t.Run("SNI", func(t *testing.T) {
		expectPsql(t, ownerConnString(s, db, "host="+sniHost(db), "sslmode=require"), "SELECT current_database()", db.Name)
	})
	t.Run("option", func(t *testing.T) {
		expectPsql(t, ownerConnString(s, db, "sslmode=require", "options=-cdatabaseid="+db.ID), "SELECT current_database()", db.Name)
	})
	t.Run("psql by name", func(t *testing.T) {
		expectPsqlError(t, nil, ownerConnString(s, db, "sslmode=require"), "FATAL:  "+noHostname)
	})
	t.Run("psql localhost", func(t *testing.T) {
		// libpq sends SNI "localhost", which names no database.
		expectPsqlError(t, nil, ownerConnString(s, db, "host=localhost", "sslmode=require"), "FATAL:  "+noHostname)
	})
	t.Run("lib/pq without SNI", func(t *testing.T) {
		sqlDB, err := sql.Open("postgres", fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/%s?sslmode=require",
			s.creds.PrincipalID, s.creds.SecretKey, s.pgPort, db.Name))
		if err != nil {
			t.Fatal(err)
		}
		defer sqlDB.Close()
		err = sqlDB.Ping()
		if err == nil || err.Error() != "pq: "+noHostname {
			t.Errorf("lib/pq error %v, want %q, as the real service's documentation shows it", err, "pq: "+noHostname)
		}
	})
	t.Run("before the password", func(t *testing.T) {
		c := dialWireTLS(t, s)
		c.write(wireStartupPacket(wireProtocol30, "user", s.creds.PrincipalID, "database", db.Name))
		got := c.expectFatal("28000", noHostname, false)
		if !strings.Contains(got.Hint, "<database-id>."+sniSuffix) {
			t.Errorf("hint %q does not name the host name form", got.Hint)
		}
	})
	expectNoSecretsInLogs(t, s)
}

// expectNoTLS checks with psql's \conninfo that the connection logs in
// without TLS.
func expectNoTLS(t *testing.T, connString string) {
	t.Helper()
	out, err := runPsql(connString, `\conninfo`)
	if err != nil {
		t.Fatalf("psql \\conninfo: %v\n%s", err, out)
	}
	if !strings.Contains(out, "You are connected") || strings.Contains(out, "SSL connection") {
		t.Errorf("psql \\conninfo printed %q, want a connection without SSL", out)
	}
}

func TestWireAuthTLSModes(t *testing.T) {
	t.Run("optional", func(t *testing.T) {
		s := startServer(t, "--tls", "optional")
		db := s.createDatabase(t, "optional", 0, 1)
		byOption := "options=-cdatabaseid=" + db.ID
		expectNoTLS(t, ownerConnString(s, db, "sslmode=disable", byOption))
		expectPsql(t, ownerConnString(s, db, "sslmode=require", "channel_binding=require", byOption), "SELECT 1", "1")

		// Without TLS the proxy offers SCRAM-SHA-256 only.
		c := dialWire(t, s)
		c.login("user", s.creds.PrincipalID, "database", db.Name, "options", "-c databaseid="+db.ID)
		sasl := c.authRequest.(*pgproto3.AuthenticationSASL)
		if fmt.Sprint(sasl.AuthMechanisms) != "[SCRAM-SHA-256]" {
			t.Errorf("mechanisms without TLS = %q, want [SCRAM-SHA-256]", sasl.AuthMechanisms)
		}
		expectNoSecretsInLogs(t, s)
	})
	t.Run("optional cleartext", func(t *testing.T) {
		s := startServer(t, "--tls", "optional", "--password-auth", "cleartext")
		db := s.createDatabase(t, "cleartext", 0, 1)
		byOption := "options=-cdatabaseid=" + db.ID
		expectPsql(t, ownerConnString(s, db, "sslmode=require", byOption), "SELECT 1", "1")
		// The secret key goes in clear text only inside TLS; a client
		// without TLS still gets SCRAM.
		expectPsql(t, ownerConnString(s, db, "sslmode=disable", byOption), "SELECT 1", "1")
		expectPsqlError(t, nil, ownerConnString(s, db, "sslmode=require", "channel_binding=require", byOption), "channel binding required")
		for _, tc := range []struct {
			name string
			tls  bool
			want string
		}{{"TLS", true, "*pgproto3.AuthenticationCleartextPassword"}, {"plain text", false, "*pgproto3.AuthenticationSASL"}} {
			c := dialWire(t, s)
			if tc.tls {
				c.startTLS(&tls.Config{InsecureSkipVerify: true})
			}
			c.login("user", s.creds.PrincipalID, "database", db.Name)
			if got := fmt.Sprintf("%T", c.authRequest); got != tc.want {
				t.Errorf("%s: authentication request %s, want %s", tc.name, got, tc.want)
			}
		}
		wrong := auth.NewSecretKey()
		expectPsqlError(t, nil, libpqConnString(s, s.creds.PrincipalID, wrong, db.Name, "sslmode=require", byOption), "password authentication failed")
		expectNoSecretsInLogs(t, s, wrong)
	})
	t.Run("off", func(t *testing.T) {
		s := startServer(t, "--tls", "off")
		db := s.createDatabase(t, "tlsoff", 0, 1)
		byOption := "options=-cdatabaseid=" + db.ID
		expectNoTLS(t, ownerConnString(s, db, "sslmode=prefer", byOption))
		expectPsqlError(t, nil, ownerConnString(s, db, "sslmode=require", byOption), "server does not support SSL")
		if _, err := os.Stat(filepath.Join(s.dataDir, "tls")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("--tls off created %s/tls (error %v)", s.dataDir, err)
		}

		// A direct TLS client is closed without a reply.
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.pgPort), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tls.Client(conn, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"postgresql"}}).Handshake(); err == nil {
			t.Error("direct TLS handshake succeeded with --tls off")
		}
	})
	t.Run("invalid flags", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"--tls", "sometimes"}, `invalid --tls "sometimes": expected required, optional or off`},
			{[]string{"--tls-cert", "/nonexistent.crt"}, "--tls-cert and --tls-key must be given together"},
			{[]string{"--tls", "off", "--tls-cert", "a.crt", "--tls-key", "a.key"}, "not used with --tls off"},
			{[]string{"--routing", "loose"}, `invalid --routing "loose": expected relaxed or strict`},
			{[]string{"--password-auth", "md5"}, `invalid --password-auth "md5": expected scram or cleartext`},
			{[]string{"--sni-suffix", "*.example"}, "invalid --sni-suffix"},
			{[]string{"--max-clients", "0"}, "invalid --max-clients 0: must be positive"},
		} {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			cmd := exec.CommandContext(ctx, sdblocalBinary, append([]string{"serve", "--data-dir", newDataDir(t), "--api-addr", "127.0.0.1:0", "--pg-addr", "127.0.0.1:0"}, tc.args...)...)
			cmd.Env = serverEnv()
			out, err := cmd.CombinedOutput()
			cancel()
			if err == nil {
				t.Errorf("serve %v succeeded", tc.args)
				continue
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("serve %v printed %q, want it to contain %q", tc.args, out, tc.want)
			}
		}
	})
}

// TestWireAuthUserCertificate serves a certificate given with --tls-cert
// and --tls-key: one generated beforehand in another directory.
func TestWireAuthUserCertificate(t *testing.T) {
	first := startServer(t)
	certDir := filepath.Join(first.dataDir, "tls")
	first.stop()

	s := startServer(t, "--tls-cert", filepath.Join(certDir, "server.crt"), "--tls-key", filepath.Join(certDir, "server.key"))
	db := s.createDatabase(t, "usercert", 0, 1)
	expectPsql(t, ownerConnString(s, db, "host="+sniHost(db), "sslmode=verify-full", "sslrootcert="+filepath.Join(certDir, "ca.crt"), "channel_binding=require"),
		"SELECT current_database()", db.Name)
	if _, err := os.Stat(filepath.Join(s.dataDir, "tls")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("with --tls-cert the server still created %s/tls (error %v)", s.dataDir, err)
	}
	if !strings.Contains(s.logs.String(), "certificate "+filepath.Join(certDir, "server.crt")) {
		t.Error("the welcome text does not name the certificate given with --tls-cert")
	}
}

// TestWireAuthRenewsOldCertificate starts on a data directory whose
// server certificate covers another --sni-suffix, and checks that the
// server replaces it with one from the same CA.
func TestWireAuthRenewsOldCertificate(t *testing.T) {
	first := startServer(t, "--sni-suffix", "db.example.test")
	dataDir := first.dataDir
	first.stop()
	caBefore, err := os.ReadFile(filepath.Join(dataDir, "tls", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}

	s := startServerIn(t, dataDir)
	db := s.createDatabase(t, "renewed", 0, 1)
	caFile := filepath.Join(dataDir, "tls", "ca.crt")
	expectPsql(t, ownerConnString(s, db, "host="+sniHost(db), "sslmode=verify-full", "sslrootcert="+caFile), "SELECT current_database()", db.Name)
	caAfter, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	if string(caBefore) != string(caAfter) {
		t.Error("renewing the server certificate replaced the CA")
	}
	if !strings.Contains(s.logs.String(), "replaced the generated server certificate") {
		t.Error("the renewal is not logged")
	}
}

func TestWireAuthDirectTLS(t *testing.T) {
	s := startServer(t)
	db := s.createDatabase(t, "direct", 0, 1)
	dial := func(t *testing.T, protos []string) (*tls.Conn, error) {
		t.Helper()
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.pgPort), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		_ = conn.SetDeadline(time.Now().Add(wireIOTimeout))
		tlsConn := tls.Client(conn, &tls.Config{InsecureSkipVerify: true, ServerName: sniHost(db), NextProtos: protos})
		return tlsConn, tlsConn.Handshake()
	}

	t.Run("with ALPN", func(t *testing.T) {
		tlsConn, err := dial(t, []string{"postgresql"})
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		c := &wireClient{t: t, conn: tlsConn, fe: pgproto3.NewFrontend(tlsConn, tlsConn)}
		c.login("user", s.creds.PrincipalID, "database", db.Name)
		c.sendPassword(s.creds.SecretKey)
		if msg := c.receive(); fmt.Sprintf("%T", msg) != "*pgproto3.AuthenticationOk" {
			t.Fatalf("after the password got %T %+v, want AuthenticationOk", msg, msg)
		}
	})
	t.Run("without ALPN", func(t *testing.T) {
		tlsConn, err := dial(t, nil)
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		// PostgreSQL 17 closes such a connection without a message.
		var reply []byte
		_, err = tlsConn.Write(wireStartupPacket(wireProtocol30, "user", s.creds.PrincipalID))
		if err == nil {
			reply, err = io.ReadAll(tlsConn)
		}
		if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
			t.Fatal("connection still open; want it closed")
		}
		if len(reply) > 0 {
			t.Errorf("got %q, want the connection closed without a reply", reply)
		}
	})
	t.Run("other ALPN", func(t *testing.T) {
		if _, err := dial(t, []string{"h2"}); err == nil {
			t.Error("handshake with ALPN h2 succeeded")
		}
	})
}

// TestWireAuthSCRAMErrors sends SCRAM exchanges that break the protocol
// and checks PostgreSQL's errors for them.
func TestWireAuthSCRAMErrors(t *testing.T) {
	s := startServer(t)
	db := s.createDatabase(t, "scramerr", 0, 1)
	params := []string{"user", s.creds.PrincipalID, "database", db.Name, "options", "-c databaseid=" + db.ID}

	// start opens a TLS connection and reads the SASL request.
	start := func(t *testing.T, user string) *wireClient {
		t.Helper()
		c := dialWireTLS(t, s)
		p := append([]string{}, params...)
		p[1] = user
		c.login(p...)
		sasl, ok := c.authRequest.(*pgproto3.AuthenticationSASL)
		if !ok {
			t.Fatalf("authentication request %T, want AuthenticationSASL", c.authRequest)
		}
		if fmt.Sprint(sasl.AuthMechanisms) != "[SCRAM-SHA-256-PLUS SCRAM-SHA-256]" {
			t.Errorf("mechanisms over TLS = %q, want [SCRAM-SHA-256-PLUS SCRAM-SHA-256]", sasl.AuthMechanisms)
		}
		return c
	}
	send := func(c *wireClient, msg pgproto3.FrontendMessage) {
		c.t.Helper()
		c.fe.Send(msg)
		if err := c.fe.Flush(); err != nil {
			c.t.Fatal(err)
		}
	}

	t.Run("unknown mechanism", func(t *testing.T) {
		c := start(t, s.creds.PrincipalID)
		send(c, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-1", Data: []byte("n,,n=,r=abc")})
		c.expectFatal("08P01", "client selected an invalid SASL authentication mechanism", false)
	})
	t.Run("PLUS without binding", func(t *testing.T) {
		c := start(t, s.creds.PrincipalID)
		send(c, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256-PLUS", Data: []byte("n,,n=,r=abc")})
		got := c.expectFatal("08P01", "malformed SCRAM message", false)
		if !strings.Contains(got.Detail, "does not include channel binding data") {
			t.Errorf("detail %q", got.Detail)
		}
	})
	t.Run("downgrade flag", func(t *testing.T) {
		c := start(t, s.creds.PrincipalID)
		send(c, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("y,,n=,r=abc")})
		c.expectFatal("08P01", "SCRAM channel binding negotiation error", false)
	})
	t.Run("garbage client-first", func(t *testing.T) {
		c := start(t, s.creds.PrincipalID)
		send(c, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("n,,garbage")})
		c.expectFatal("08P01", "malformed SCRAM message", false)
	})
	t.Run("password message instead", func(t *testing.T) {
		c := start(t, s.creds.PrincipalID)
		send(c, &pgproto3.Query{String: "SELECT 1"})
		c.expectFatal("08P01", "expected SASL response, got message type 'Q'", false)
	})
	t.Run("binding of another certificate", func(t *testing.T) {
		c := start(t, s.creds.PrincipalID)
		client, err := scram.SHA256.NewClient("", s.creds.SecretKey, "")
		if err != nil {
			t.Fatal(err)
		}
		conv := client.NewConversationWithChannelBinding(scram.ChannelBinding{Type: scram.ChannelBindingTLSServerEndpoint, Data: make([]byte, 32)})
		clientFirst, _ := conv.Step("")
		send(c, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256-PLUS", Data: []byte(clientFirst)})
		cont, ok := c.receive().(*pgproto3.AuthenticationSASLContinue)
		if !ok {
			t.Fatal("no AuthenticationSASLContinue")
		}
		clientFinal, _ := conv.Step(string(cont.Data))
		send(c, &pgproto3.SASLResponse{Data: []byte(clientFinal)})
		c.expectFatal("08P01", "SCRAM channel binding check failed", false)
	})

	// A wrong secret key and an unknown principal look the same until the
	// error: a 16-byte salt and 4096 iterations.
	var proofs []string
	for _, tc := range []struct{ name, user, secret string }{
		{"wrong secret key", s.creds.PrincipalID, auth.NewSecretKey()},
		{"unknown principal", uuid.NewString(), s.creds.SecretKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := start(t, tc.user)
			client, err := scram.SHA256.NewClient("", tc.secret, "")
			if err != nil {
				t.Fatal(err)
			}
			conv := client.NewConversation()
			clientFirst, _ := conv.Step("")
			send(c, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte(clientFirst)})
			cont, ok := c.receive().(*pgproto3.AuthenticationSASLContinue)
			if !ok {
				t.Fatal("no AuthenticationSASLContinue")
			}
			if salt := scramField(string(cont.Data), "s"); len(salt) != 24 {
				t.Errorf("salt %q is not 16 bytes in base64", salt)
			}
			if iterations := scramField(string(cont.Data), "i"); iterations != "4096" {
				t.Errorf("iterations %q, want 4096", iterations)
			}
			clientFinal, _ := conv.Step(string(cont.Data))
			proofs = append(proofs, scramField(clientFinal, "p"))
			send(c, &pgproto3.SASLResponse{Data: []byte(clientFinal)})
			c.expectFatal("28P01", fmt.Sprintf("password authentication failed for user %q", tc.user), false)
		})
	}
	if n := metricValue(t, s, "sdblocal_proxy_failed_logins_total"); n != 2 {
		t.Errorf("sdblocal_proxy_failed_logins_total = %v, want 2", n)
	}

	// A successful exchange, so its proof can be looked for in the logs.
	c := start(t, s.creds.PrincipalID)
	c.sendPassword(s.creds.SecretKey)
	if msg := c.receive(); fmt.Sprintf("%T", msg) != "*pgproto3.AuthenticationOk" {
		t.Fatalf("after the password got %T %+v, want AuthenticationOk", msg, msg)
	}
	proofs = append(proofs, scramField(c.scramClientFinal, "p"))
	expectNoSecretsInLogs(t, s, proofs...)
}

// scramField returns the value of attribute name in a SCRAM message.
func scramField(msg, name string) string {
	for _, field := range strings.Split(msg, ",") {
		if value, ok := strings.CutPrefix(field, name+"="); ok {
			return value
		}
	}
	return ""
}

// TestWireAuthFailedLoginBackoff runs 20 logins with wrong secret keys at
// once and checks that they are counted and delayed while a client with
// the right key connects at once.
func TestWireAuthFailedLoginBackoff(t *testing.T) {
	s := startServer(t)
	db := s.createDatabase(t, "backoff", 0, 1)
	byOption := "options=-cdatabaseid=" + db.ID
	// The first query wakes the instance, which is not what is timed.
	expectPsql(t, ownerConnString(s, db, "sslmode=require", byOption), "SELECT 1", "1")

	const attempts = 20
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, attempts)
	wrongKeys := make([]string, attempts)
	for i := range attempts {
		wrongKeys[i] = auth.NewSecretKey()
		wg.Go(func() {
			_, err := pgxConnect(ctx, libpqConnString(s, s.creds.PrincipalID, wrongKeys[i], db.Name, "sslmode=require", byOption))
			errs <- err
		})
	}
	waitFor(t, 30*time.Second, "failed logins to be counted", func() bool {
		return metricValue(t, s, "sdblocal_proxy_failed_logins_total") >= 5
	})

	started := time.Now()
	conn, err := pgxConnect(ctx, ownerConnString(s, db, "sslmode=require", byOption))
	if err != nil {
		t.Fatalf("right secret key during the failed logins: %v", err)
	}
	var one int
	err = conn.QueryRow(ctx, "SELECT 1").Scan(&one)
	elapsed := time.Since(started)
	conn.Close(ctx)
	if err != nil || one != 1 {
		t.Fatalf("SELECT 1 during the failed logins: %d, %v", one, err)
	}
	// Failures wait up to 5s each; a correct login must not.
	if elapsed > 4*time.Second {
		t.Errorf("right secret key took %s to connect and query during the failed logins, want well under the 5s back-off cap", elapsed)
	}

	wg.Wait()
	close(errs)
	for err := range errs {
		pgErr, ok := errors.AsType[*pgconn.PgError](err)
		if !ok || pgErr.Code != "28P01" {
			t.Errorf("wrong secret key: %v, want SQLSTATE 28P01", err)
		}
	}
	if n := metricValue(t, s, "sdblocal_proxy_failed_logins_total"); n != attempts {
		t.Errorf("sdblocal_proxy_failed_logins_total = %v, want %d", n, attempts)
	}
	if n := metricValue(t, s, "sdblocal_proxy_login_backoff_seconds_total"); n < 1 {
		t.Errorf("sdblocal_proxy_login_backoff_seconds_total = %v, want at least 1", n)
	}
	expectNoSecretsInLogs(t, s, wrongKeys...)
}

// TestWireAuthPlainTextCancel interrupts psql during a query while TLS is
// required: psql 15 sends its CancelRequest without TLS.
func TestWireAuthPlainTextCancel(t *testing.T) {
	s := startServer(t)
	db := s.createDatabase(t, "ctrlc", 0, 1)
	connString := ownerConnString(s, db, "sslmode=require", "options=-cdatabaseid="+db.ID)
	expectPsql(t, connString, "SELECT 1", "1")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "psql", "-X", "-c", "select pg_sleep(30)", connString)
	cmd.Env = serverEnv()
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the query to run", func() bool {
		running, err := runPsql(connString, "SELECT count(*) FROM pg_stat_activity WHERE query = 'select pg_sleep(30)'")
		return err == nil && running == "1"
	})
	time.Sleep(time.Second)
	signalled := time.Now()
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	elapsed := time.Since(signalled)
	if err == nil {
		t.Errorf("psql exited 0 after SIGINT:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "canceling statement due to user request") {
		t.Errorf("psql output %q does not report the cancel", out.String())
	}
	if elapsed > 10*time.Second {
		t.Errorf("psql exited %s after SIGINT, want within 10s", elapsed)
	}
	if n := metricValue(t, s, "sdblocal_proxy_cancel_requests_total", `outcome="forwarded"`); n != 1 {
		t.Errorf(`sdblocal_proxy_cancel_requests_total{outcome="forwarded"} = %v, want 1`, n)
	}
}

func TestWireAuthMaxClients(t *testing.T) {
	s := startServer(t, "--max-clients", "3")
	db := s.createDatabase(t, "maxclients", 0, 1)
	connString := ownerConnString(s, db, "sslmode=require", "options=-cdatabaseid="+db.ID)

	// Three connections that send nothing hold every slot.
	var held []net.Conn
	for range 3 {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.pgPort), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, conn)
	}
	expectPsqlError(t, nil, connString, "FATAL:  sorry, too many clients already")
	c := dialWireTLS(t, s)
	c.write(wireStartupPacket(wireProtocol30, "user", s.creds.PrincipalID))
	got := c.expectFatal("53300", "sorry, too many clients already", false)
	if !strings.Contains(got.Hint, "--max-clients") {
		t.Errorf("hint %q does not name --max-clients", got.Hint)
	}

	for _, conn := range held {
		conn.Close()
	}
	waitFor(t, 10*time.Second, "a free client slot", func() bool {
		_, err := runPsql(connString, "SELECT 1")
		return err == nil
	})
	if n := metricValue(t, s, "sdblocal_proxy_rejected_connections_total", `reason="53300"`); n < 2 {
		t.Errorf(`sdblocal_proxy_rejected_connections_total{reason="53300"} = %v, want at least 2`, n)
	}
}

// TestWireAuthSeveralKeys gives the owner a second key with the shared
// salt and an expired third key, and logs in with each.
func TestWireAuthSeveralKeys(t *testing.T) {
	first := startServer(t)
	db := first.createDatabase(t, "keys", 0, 1)
	dataDir, creds := first.dataDir, first.creds
	first.stop()

	addKey := func(tx *catalog.Tx, secret string, createdAt time.Time, expiresAt *time.Time) error {
		existing, err := tx.APIKeysOfPrincipal(creds.PrincipalID)
		if err != nil {
			return err
		}
		verifier, err := auth.NewPrincipalVerifier(secret, existing, time.Now())
		if err != nil {
			return err
		}
		accessKey, err := auth.NewAccessKey()
		if err != nil {
			return err
		}
		return tx.PutAPIKey(catalog.APIKey{
			AccessKey: accessKey, PrincipalID: creds.PrincipalID, OrganizationID: creds.OrganizationID,
			DefaultProjectID: creds.ProjectID, TokenHash: auth.TokenHash(secret), Verifier: verifier,
			CreatedAt: createdAt, ExpiresAt: expiresAt,
		})
	}
	second, expired := auth.NewSecretKey(), auth.NewSecretKey()
	past := time.Now().Add(-time.Hour)
	editCatalog(t, dataDir, func(tx *catalog.Tx) error {
		if err := addKey(tx, second, time.Now(), nil); err != nil {
			return err
		}
		return addKey(tx, expired, time.Now().Add(-2*time.Hour), &past)
	})

	s := startServerIn(t, dataDir)
	for _, tc := range []struct {
		name   string
		secret string
		ok     bool
	}{{"first key", creds.SecretKey, true}, {"second key", second, true}, {"expired key", expired, false}} {
		t.Run(tc.name, func(t *testing.T) {
			connString := libpqConnString(s, creds.PrincipalID, tc.secret, db.Name, "sslmode=require", "channel_binding=require", "options=-cdatabaseid="+db.ID)
			if tc.ok {
				expectPsql(t, connString, "SELECT 1", "1")
				return
			}
			expectPsqlError(t, nil, connString, fmt.Sprintf("password authentication failed for user %q", creds.PrincipalID))
		})
	}
	expectNoSecretsInLogs(t, s, second, expired)
}
