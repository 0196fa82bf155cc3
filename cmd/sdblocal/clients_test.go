package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/lib/pq"
)

// TestClientMatrix runs one workload with each common client, in
// transaction mode, on one connection that stays open while the instance
// suspends and wakes. The workload has parameterised and prepared queries,
// a transaction, a pause longer than --idle-timeout, and the same queries
// again. Each subtest checks that the instance suspended during its pause.
func TestClientMatrix(t *testing.T) {
	s := startServer(t, "--idle-timeout", "500ms")
	db := s.createDatabase(t, "clients", 0, 2)
	ctx := context.Background()

	// pause is how long the clients sleep between their two halves: the
	// idle timeout, a tenth of it for the idle check, and margin.
	const pause = "1500"
	suspends := func() int { return strings.Count(s.logs.String(), `msg="instance suspended"`) }
	acrossSuspend := func(t *testing.T, run func()) {
		t.Helper()
		before := suspends()
		run()
		if suspends() == before {
			t.Error("the instance did not suspend during the client's pause")
		}
	}
	waitSuspended := func(t *testing.T) {
		t.Helper()
		waitFor(t, 10*time.Second, "the instance to suspend", func() bool { return s.postmasterPID(t, db.ID) == 0 })
	}

	t.Run("psql", func(t *testing.T) {
		script := `CREATE TABLE psql_items (n int);
BEGIN;
INSERT INTO psql_items VALUES (1), (2);
COMMIT;
SET TimeZone = 'Asia/Tokyo';
\! sleep 1.5
SELECT count(*) FROM psql_items;
SHOW TimeZone;
`
		acrossSuspend(t, func() {
			cmd := exec.Command("psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", s.connString(db))
			cmd.Env = append(serverEnv(), "PGCONNECT_TIMEOUT=30", "PGTZ=Europe/Paris")
			cmd.Stdin = strings.NewReader(script)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("psql: %v\n%s", err, out)
			}
			// SET outside a transaction does not survive the suspend;
			// the startup TimeZone (PGTZ) does.
			if got := strings.Fields(string(out)); strings.Join(got, " ") != "2 Europe/Paris" {
				t.Errorf("psql printed %q, want count 2 and the startup TimeZone Europe/Paris", got)
			}
		})
	})

	t.Run("pgbench", func(t *testing.T) {
		dir := t.TempDir()
		script := filepath.Join(dir, "script.sql")
		if err := os.WriteFile(script, []byte("\\set x random(1, 1000)\nSELECT :x::int + 1;\n\\sleep "+pause+" ms\nSELECT :x::int + 2;\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, mode := range []string{"simple", "extended", "prepared"} {
			t.Run(mode, func(t *testing.T) {
				acrossSuspend(t, func() {
					cmd := exec.Command("pgbench", "-n", "-M", mode, "-c", "2", "-t", "2", "-f", script, s.connString(db))
					cmd.Env = serverEnv()
					out, err := cmd.CombinedOutput()
					if err != nil {
						t.Fatalf("pgbench -M %s: %v\n%s", mode, err, out)
					}
					if m := regexp.MustCompile(`number of failed transactions: (\d+)`).FindStringSubmatch(string(out)); m == nil || m[1] != "0" {
						t.Errorf("pgbench -M %s reported failed transactions:\n%s", mode, out)
					}
				})
			})
		}
	})

	t.Run("pgx", func(t *testing.T) {
		conn, err := pgx.Connect(ctx, s.connString(db))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "CREATE TABLE pgx_items (n int)"); err != nil {
			t.Fatal(err)
		}
		workload := func(n int) {
			t.Helper()
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO pgx_items VALUES ($1)", n); err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			var count int
			if err := conn.QueryRow(ctx, "SELECT count(*) FROM pgx_items WHERE n <= $1", n).Scan(&count); err != nil || count != n {
				t.Errorf("count after %d inserts: %d, %v", n, count, err)
			}
		}
		acrossSuspend(t, func() {
			workload(1)
			if _, err := conn.Exec(ctx, "SET TimeZone = 'Asia/Tokyo'"); err != nil {
				t.Fatal(err)
			}
			waitSuspended(t)
			workload(2)
		})
		// The SET did not survive the suspend, and the client got a
		// ParameterStatus with the startup value.
		var tz string
		if err := conn.QueryRow(ctx, "SELECT current_setting('TimeZone')").Scan(&tz); err != nil || tz == "Asia/Tokyo" {
			t.Errorf("TimeZone after the suspend: %q, %v, want the startup value", tz, err)
		}
		if got := conn.PgConn().ParameterStatus("TimeZone"); got != tz {
			t.Errorf("ParameterStatus TimeZone = %q after the suspend, want %q", got, tz)
		}
	})

	t.Run("lib/pq", func(t *testing.T) {
		connector, err := pq.NewConnector(s.connString(db))
		if err != nil {
			t.Fatal(err)
		}
		sqlDB := sql.OpenDB(connector)
		defer sqlDB.Close()
		sqlDB.SetMaxOpenConns(1)
		if _, err := sqlDB.Exec("CREATE TABLE pq_items (n int, s text)"); err != nil {
			t.Fatal(err)
		}
		stmt, err := sqlDB.Prepare("SELECT count(*) FROM pq_items WHERE s = $1")
		if err != nil {
			t.Fatal(err)
		}
		defer stmt.Close()
		workload := func(n int) {
			t.Helper()
			if _, err := sqlDB.Exec("INSERT INTO pq_items VALUES ($1, $2)", n, "x"); err != nil {
				t.Fatal(err)
			}
			var count int
			if err := stmt.QueryRow("x").Scan(&count); err != nil || count != n {
				t.Errorf("prepared count after %d inserts: %d, %v", n, count, err)
			}
		}
		acrossSuspend(t, func() {
			workload(1)
			waitSuspended(t)
			workload(2)
		})
	})

	nodeDir := installNodeClients(t)
	runNode := func(t *testing.T, script string) {
		t.Helper()
		path := filepath.Join(nodeDir, strings.ReplaceAll(t.Name(), "/", "_")+".js")
		if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("node", path)
		cmd.Dir = nodeDir
		cmd.Env = append(serverEnv(), "PG_URL="+s.connString(db), "PAUSE_MS="+pause)
		out, err := runWithTimeout(cmd, 60*time.Second)
		if err != nil {
			t.Fatalf("node: %v\n%s", err, out)
		}
		if strings.TrimSpace(out) != "ok" {
			t.Errorf("node printed %q, want ok", out)
		}
	}

	t.Run("node-postgres", func(t *testing.T) {
		acrossSuspend(t, func() { runNode(t, nodePostgresWorkload) })
	})
	t.Run("postgres.js", func(t *testing.T) {
		acrossSuspend(t, func() { runNode(t, postgresJSWorkload) })
	})

	t.Run("psycopg2", func(t *testing.T) {
		python := "/usr/bin/python3"
		if out, err := exec.Command(python, "-c", "import psycopg2").CombinedOutput(); err != nil {
			t.Fatalf("%s cannot import psycopg2 (Debian python3-psycopg2, installed by make tools): %v\n%s", python, err, out)
		}
		acrossSuspend(t, func() {
			cmd := exec.Command(python, "-c", psycopg2Workload)
			cmd.Env = append(serverEnv(), "PG_URL="+s.connString(db), "PAUSE_MS="+pause)
			out, err := runWithTimeout(cmd, 60*time.Second)
			if err != nil {
				t.Fatalf("psycopg2: %v\n%s", err, out)
			}
			if strings.TrimSpace(out) != "ok" {
				t.Errorf("psycopg2 printed %q, want ok", out)
			}
		})
	})

	t.Run("JDBC", func(t *testing.T) {
		const jar = "/usr/share/java/postgresql.jar"
		if _, err := os.Stat(jar); err != nil {
			t.Fatalf("%s missing (Debian libpostgresql-jdbc-java, installed by make tools): %v", jar, err)
		}
		dir := t.TempDir()
		source := filepath.Join(dir, "Main.java")
		if err := os.WriteFile(source, []byte(jdbcWorkload), 0o644); err != nil {
			t.Fatal(err)
		}
		url := fmt.Sprintf("jdbc:postgresql://%s:%d/%s?sslmode=require&options=-c%%20databaseid%%3D%s", s.pgHost, s.pgPort, db.Name, db.ID)
		acrossSuspend(t, func() {
			cmd := exec.Command("java", "-cp", jar, source)
			cmd.Env = append(serverEnv(), "PG_URL="+url, "PG_USER="+s.creds.PrincipalID, "PG_PASSWORD="+s.creds.SecretKey, "PAUSE_MS="+pause)
			out, err := runWithTimeout(cmd, 90*time.Second)
			if err != nil {
				t.Fatalf("JDBC: %v\n%s", err, out)
			}
			if strings.TrimSpace(out) != "ok" {
				t.Errorf("JDBC printed %q, want ok", out)
			}
		})
	})
}

// installNodeClients installs node-postgres and postgres.js with npm into
// a temporary directory and returns it.
func installNodeClients(t *testing.T) string {
	t.Helper()
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Fatal("npm not found in PATH: this test installs node-postgres and postgres.js with npm; install Node.js and npm (Debian: apt-get install nodejs npm)")
	}
	dir := t.TempDir()
	cmd := exec.Command(npm, "install", "--no-audit", "--no-fund", "--no-save", "--prefix", dir, "pg@8", "postgres@3")
	out, err := runWithTimeout(cmd, 5*time.Minute)
	if err != nil {
		t.Fatalf("npm install pg@8 postgres@3: %v\n%s", err, out)
	}
	return dir
}

// nodePostgresWorkload uses unnamed statements (a query with values) and a
// named one, in a transaction and out of one, before and after a pause.
const nodePostgresWorkload = `
const { Client } = require('pg');
const url = new URL(process.env.PG_URL);
const client = new Client({
  host: url.hostname, port: Number(url.port), user: decodeURIComponent(url.username),
  password: decodeURIComponent(url.password), database: url.pathname.slice(1),
  options: url.searchParams.get('options'), ssl: { rejectUnauthorized: false },
});
const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
async function workload(n) {
  await client.query('BEGIN');
  await client.query('INSERT INTO node_items VALUES ($1)', [n]);
  await client.query('COMMIT');
  const res = await client.query({ name: 'count-items', text: 'SELECT count(*)::int AS c FROM node_items WHERE n <= $1', values: [n] });
  if (res.rows[0].c !== n) throw new Error('count ' + res.rows[0].c + ', want ' + n);
}
(async () => {
  await client.connect();
  await client.query('CREATE TABLE node_items (n int)');
  await workload(1);
  await pause(Number(process.env.PAUSE_MS));
  await workload(2);
  await client.end();
  console.log('ok');
})().catch((err) => { console.error('node-postgres error:', err.message); process.exit(1); });
`

// postgresJSWorkload pipelines named prepared statements on one
// connection, before and after a pause.
const postgresJSWorkload = `
const postgres = require('postgres');
const sql = postgres(process.env.PG_URL, { max: 1, ssl: { rejectUnauthorized: false }, prepare: true });
const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
async function workload(round) {
  const results = await Promise.all([1, 2, 3, 4, 5].map((i) => sql` + "`SELECT ${i}::int * ${round}::int AS v`" + `));
  results.forEach((rows, i) => { if (rows[0].v !== (i + 1) * round) throw new Error('pipelined result ' + rows[0].v); });
  await sql.begin(async (tx) => { await tx` + "`INSERT INTO js_items VALUES (${round})`" + `; });
  const [{ c }] = await sql` + "`SELECT count(*)::int AS c FROM js_items`" + `;
  if (c !== round) throw new Error('count ' + c + ', want ' + round);
}
(async () => {
  await sql` + "`CREATE TABLE js_items (n int)`" + `;
  await workload(1);
  await pause(Number(process.env.PAUSE_MS));
  await workload(2);
  await sql.end();
  console.log('ok');
})().catch((err) => { console.error('postgres.js error:', err.message); process.exit(1); });
`

// psycopg2Workload uses psycopg2's client-side parameters and its implicit
// transactions, before and after a pause.
const psycopg2Workload = `
import os, time, psycopg2
conn = psycopg2.connect(os.environ["PG_URL"])
cur = conn.cursor()
cur.execute("CREATE TABLE py_items (n int, s text)")
conn.commit()
def workload(n):
    cur.execute("INSERT INTO py_items VALUES (%s, %s)", (n, "it's"))
    conn.commit()
    cur.execute("SELECT count(*) FROM py_items WHERE s = %s", ("it's",))
    count = cur.fetchone()[0]
    conn.commit()
    assert count == n, (count, n)
workload(1)
time.sleep(int(os.environ["PAUSE_MS"]) / 1000)
workload(2)
conn.close()
print("ok")
`

// jdbcWorkload runs a PreparedStatement more often than pgjdbc's
// prepareThreshold (5), so that it becomes a named server-side statement,
// before and after a pause.
const jdbcWorkload = `
import java.sql.*;

public class Main {
    static void workload(Connection conn, int round) throws SQLException {
        conn.setAutoCommit(false);
        try (PreparedStatement insert = conn.prepareStatement("INSERT INTO jdbc_items VALUES (?)")) {
            insert.setInt(1, round);
            insert.executeUpdate();
        }
        conn.commit();
        conn.setAutoCommit(true);
        try (PreparedStatement select = conn.prepareStatement("SELECT ? + count(*) FROM jdbc_items")) {
            for (int i = 0; i < 8; i++) {
                select.setInt(1, i);
                try (ResultSet rs = select.executeQuery()) {
                    rs.next();
                    if (rs.getLong(1) != i + round) throw new SQLException("got " + rs.getLong(1) + ", want " + (i + round));
                }
            }
        }
    }

    public static void main(String[] args) throws Exception {
        String url = System.getenv("PG_URL");
        try (Connection conn = DriverManager.getConnection(url, System.getenv("PG_USER"), System.getenv("PG_PASSWORD"))) {
            try (Statement st = conn.createStatement()) {
                st.execute("CREATE TABLE jdbc_items (n int)");
            }
            workload(conn, 1);
            Thread.sleep(Long.parseLong(System.getenv("PAUSE_MS")));
            workload(conn, 2);
        }
        System.out.println("ok");
    }
}
`
