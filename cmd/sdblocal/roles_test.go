package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	sdb "github.com/scaleway/scaleway-sdk-go/api/serverless_sqldb/v1alpha1"

	"github.com/sdblocal/sdblocal/auth"
	"github.com/sdblocal/sdblocal/autoscale"
	"github.com/sdblocal/sdblocal/catalog"
)

// These tests log in as principals holding one or two permission sets and
// check, statement by statement through psql, what PostgreSQL lets each
// permission set's role do.

// testPrincipal is an IAM application added to the catalog with one API key.
type testPrincipal struct {
	name   string
	id     string
	secret string
}

// addPrincipal writes a principal, its API key and one policy per entry of
// sets to the catalog of a stopped server. Each policy has one rule that
// grants its permission sets on the default project.
func addPrincipal(t *testing.T, dataDir string, creds auth.Credentials, name string, sets ...[]auth.PermissionSet) testPrincipal {
	t.Helper()
	p := testPrincipal{name: name, id: uuid.NewString(), secret: auth.NewSecretKey()}
	accessKey, err := auth.NewAccessKey()
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := auth.NewVerifier(p.secret)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	editCatalog(t, dataDir, func(tx *catalog.Tx) error {
		if err := tx.PutPrincipal(catalog.Principal{
			ID: p.id, OrganizationID: creds.OrganizationID, Kind: catalog.PrincipalApplication,
			Name: name, CreatedAt: now,
		}); err != nil {
			return err
		}
		if err := tx.PutAPIKey(catalog.APIKey{
			AccessKey: accessKey, PrincipalID: p.id, OrganizationID: creds.OrganizationID,
			DefaultProjectID: creds.ProjectID, Description: name,
			TokenHash: auth.TokenHash(p.secret), Verifier: verifier, CreatedAt: now,
		}); err != nil {
			return err
		}
		for i, policySets := range sets {
			names := make([]string, len(policySets))
			for j, set := range policySets {
				names[j] = string(set)
			}
			if err := tx.PutPolicy(catalog.Policy{
				ID: uuid.NewString(), Name: fmt.Sprintf("%s policy %d", name, i+1), OrganizationID: creds.OrganizationID,
				PrincipalID: p.id, CreatedAt: now,
				Rules: []catalog.Rule{{PermissionSetNames: names, ProjectIDs: []string{creds.ProjectID}}},
			}); err != nil {
				return err
			}
		}
		return nil
	})
	return p
}

// psqlAs runs sql in one psql session as the principal, with verbose
// errors so the output contains the SQLSTATE ("ERROR:  42501: ...").
func psqlAs(s *testServer, p testPrincipal, db *sdb.Database, sql string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=verbose",
		"-c", sql, psqlURL(s, p.id, p.secret, db.Name, db.ID))
	cmd.Env = append(serverEnv(), "PGCONNECT_TIMEOUT=30")
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// sqlCheck is one statement and its expected outcome: the output want when
// code is empty, otherwise an error with SQLSTATE code and message.
type sqlCheck struct {
	sql     string
	want    string
	code    string
	message string
}

func allowed(sql, want string) sqlCheck { return sqlCheck{sql: sql, want: want} }

func rejected(sql, code, message string) sqlCheck {
	return sqlCheck{sql: sql, code: code, message: message}
}

// runChecks runs each check in its own psql session, as a subtest named
// after the statement.
func runChecks(t *testing.T, s *testServer, p testPrincipal, db *sdb.Database, checks []sqlCheck) {
	t.Helper()
	for _, c := range checks {
		t.Run(c.sql, func(t *testing.T) {
			out, err := psqlAs(s, p, db, c.sql)
			if c.code == "" {
				if err != nil {
					t.Fatalf("failed for %s: %v\n%s", p.name, err, out)
				}
				if out != c.want {
					t.Errorf("output = %q, want %q", out, c.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("succeeded for %s, want SQLSTATE %s:\n%s", p.name, c.code, out)
			}
			want := "ERROR:  " + c.code + ": " + c.message
			if !strings.Contains(out, want) {
				t.Errorf("output %q does not contain %q", out, want)
			}
		})
	}
}

// commonChecks are what every principal's role may and may not do,
// whatever its permission set: the service's rejections and the role's
// attributes.
func commonChecks(role, dbName string) []sqlCheck {
	tempDenied := fmt.Sprintf("permission denied to create temporary tables in database %q", dbName)
	return []sqlCheck{
		allowed("SELECT current_user, session_user", role+"|"+role),
		allowed("SELECT rolsuper, rolreplication, rolcreatedb, rolcreaterole, rolbypassrls, rolinherit FROM pg_roles WHERE rolname = current_user", "f|f|f|f|f|f"),
		allowed("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()", "sdb_owner"),
		allowed("SELECT pg_has_role(current_user, 'sdb_owner', 'MEMBER')", "f"),
		rejected("CREATE TEMP TABLE scratch (x int)", "42501", tempDenied),
		rejected("CREATE TEMPORARY VIEW scratch AS SELECT 1", "42501", tempDenied),
		rejected("BEGIN; PREPARE TRANSACTION 'p1'", "55000", "prepared transactions are disabled"),
		rejected("CREATE ROLE intruder", "42501", "permission denied to create role"),
		rejected("CREATE DATABASE other", "42501", "permission denied to create database"),
		rejected("GRANT SELECT ON items TO PUBLIC", "42501", "permission denied to run GRANT"),
		rejected("REVOKE SELECT ON items FROM "+autoscale.RoleReadOnly, "42501", "permission denied to run REVOKE"),
		rejected("ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC", "42501", "permission denied to run ALTER DEFAULT PRIVILEGES"),
		rejected("SECURITY LABEL ON TABLE items IS 'secret'", "42501", "permission denied to run SECURITY LABEL"),
		rejected("CREATE SUBSCRIPTION sub CONNECTION 'dbname="+dbName+"' PUBLICATION pub", "42501", "permission denied to create subscription"),
		rejected("REFRESH MATERIALIZED VIEW CONCURRENTLY totals", "55000", `cannot refresh materialized view "totals" concurrently`),
		rejected("ALTER ROLE "+role+" SUPERUSER", "42501", "must be superuser to alter superuser roles or change superuser attribute"),
		rejected("ALTER ROLE "+role+" REPLICATION", "42501", "must be superuser to alter replication roles or change replication attribute"),
		rejected("ALTER ROLE "+role+" INHERIT", "42501", "permission denied"),
		rejected("ALTER EVENT TRIGGER sdblocal_reject_command DISABLE", "42501", "must be owner of event trigger sdblocal_reject_command"),
		rejected("SET session_replication_role = replica", "42501", `permission denied to set parameter "session_replication_role"`),
	}
}

// adminChecks are the FullAccess and ReadWrite permission sets: data and
// table structure. table must be unique to the principal.
func adminChecks(table string) []sqlCheck {
	return []sqlCheck{
		allowed("CREATE TABLE "+table+" (id serial PRIMARY KEY, v int)", ""),
		allowed("INSERT INTO "+table+" (v) VALUES (1), (2)", ""),
		allowed("SELECT sum(v) FROM "+table, "3"),
		allowed("UPDATE "+table+" SET v = v + 10 WHERE v = 1", ""),
		allowed("DELETE FROM "+table+" WHERE v = 2", ""),
		allowed("SELECT v FROM "+table, "11"),
		allowed("ALTER TABLE "+table+" ADD COLUMN note text", ""),
		allowed("CREATE INDEX "+table+"_v ON "+table+" (v)", ""),
		allowed("DROP INDEX "+table+"_v", ""),
		allowed("TRUNCATE "+table, ""),
		allowed("DROP TABLE "+table, ""),
		allowed("REFRESH MATERIALIZED VIEW totals", ""),
		// The event trigger reads CONCURRENTLY from the query text, so it
		// must not reject a plain REFRESH sent along with that text.
		allowed("REFRESH MATERIALIZED VIEW totals; SELECT 'REFRESH MATERIALIZED VIEW CONCURRENTLY totals'", "REFRESH MATERIALIZED VIEW CONCURRENTLY totals"),
		rejected(`REFRESH MATERIALIZED VIEW CONCURRENTLY public."totals"`, "55000", `cannot refresh materialized view "totals" concurrently`),
		// Text the trigger does not parse falls through to PostgreSQL,
		// which rejects the refresh because it needs a temporary table.
		rejected("REFRESH MATERIALIZED VIEW /* now */ CONCURRENTLY totals", "42501", "permission denied to create temporary tables in database"),
		allowed("SELECT count(*) FROM docs", "2"),
		rejected("GRANT role_admin TO role_readwrite", "0LP01", `role "role_admin" is a member of role "role_readwrite"`),
		rejected("GRANT role_admin TO role_readonly", "0LP01", `role "role_admin" is a member of role "role_readonly"`),
	}
}

// structureRejections are the table-structure statements rejected for the
// DataReadWrite and ReadOnly roles.
var structureRejections = []sqlCheck{
	rejected("CREATE TABLE mine (x int)", "42501", "permission denied for schema public"),
	rejected("ALTER TABLE items ADD COLUMN note text", "42501", "must be owner of table items"),
	rejected("CREATE INDEX ON items (v)", "42501", "must be owner of table items"),
	rejected("DROP TABLE items", "42501", "must be owner of table items"),
	rejected("TRUNCATE items", "42501", "permission denied for table items"),
	rejected("REFRESH MATERIALIZED VIEW totals", "42501", "must be owner of materialized view totals"),
	rejected("SET ROLE role_admin", "42501", `permission denied to set role "role_admin"`),
}

// readWriteChecks are the DataReadWrite permission set: the four data
// statements on role_admin's tables, filtered by the row-level security
// policy for role_readwrite. keeper must be unique to the principal.
func readWriteChecks(keeper string) []sqlCheck {
	return append([]sqlCheck{
		allowed("INSERT INTO items (keeper, v) VALUES ('"+keeper+"', 5)", ""),
		allowed("SELECT v FROM items WHERE keeper = '"+keeper+"'", "5"),
		allowed("UPDATE items SET v = 6 WHERE keeper = '"+keeper+"'", ""),
		allowed("SELECT v FROM items WHERE keeper = '"+keeper+"'", "6"),
		allowed("DELETE FROM items WHERE keeper = '"+keeper+"'", ""),
		allowed("SELECT count(*) FROM items WHERE keeper = '"+keeper+"'", "0"),
		allowed("SELECT keeper, body FROM docs ORDER BY id", "role_readwrite|mine"),
		rejected("INSERT INTO docs (keeper, body) VALUES ('role_admin', 'forged')", "42501", `new row violates row-level security policy for table "docs"`),
		rejected("GRANT role_readwrite TO role_readonly", "0LP01", `role "role_readwrite" is a member of role "role_readonly"`),
	}, structureRejections...)
}

// readOnlyChecks are the ReadOnly permission set: SELECT only. docs has
// row-level security and no policy for role_readonly, so it shows no row.
func readOnlyChecks() []sqlCheck {
	return append([]sqlCheck{
		allowed("SELECT count(*) FROM items WHERE keeper IN ('role_admin', 'role_readwrite')", "2"),
		allowed("SELECT count(*) FROM docs", "0"),
		allowed("SELECT last_value > 0 FROM items_id_seq", "t"),
		rejected("SELECT nextval('items_id_seq')", "42501", "permission denied for sequence items_id_seq"),
		rejected("INSERT INTO items (keeper, v) VALUES ('reader', 1)", "42501", "permission denied for table items"),
		rejected("UPDATE items SET v = 0", "42501", "permission denied for table items"),
		rejected("DELETE FROM items", "42501", "permission denied for table items"),
		rejected("SET ROLE role_readwrite", "42501", `permission denied to set role "role_readwrite"`),
	}, structureRejections...)
}

// pgDumpAs runs pg_dump as the principal and returns its output.
func pgDumpAs(s *testServer, p testPrincipal, db *sdb.Database, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args = append(args, "--dbname", psqlURL(s, p.id, p.secret, db.Name, db.ID))
	cmd := exec.CommandContext(ctx, "pg_dump", args...)
	cmd.Env = append(serverEnv(), "PGCONNECT_TIMEOUT=30")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// fixtureSQL is run by the organization owner (role_admin) before the
// other principals exist: a table, a materialized view with the unique
// index CONCURRENTLY needs, and a table whose row-level security policy
// shows role_readwrite only its own rows.
const fixtureSQL = `CREATE TABLE items (id serial PRIMARY KEY, keeper text NOT NULL, v int);
INSERT INTO items (keeper, v) VALUES ('role_readwrite', 1), ('role_admin', 2);
CREATE MATERIALIZED VIEW totals AS SELECT 1 AS k, sum(v) AS total FROM items;
CREATE UNIQUE INDEX ON totals (k);
CREATE TABLE docs (id serial PRIMARY KEY, keeper text NOT NULL, body text);
INSERT INTO docs (keeper, body) VALUES ('role_readwrite', 'mine'), ('role_admin', 'theirs');
ALTER TABLE docs ENABLE ROW LEVEL SECURITY;
CREATE POLICY keeper_only ON docs TO role_readwrite USING (keeper = current_user)`

func TestPermissionSetRoles(t *testing.T) {
	first := startServer(t)
	db := first.createDatabase(t, "perms", 0, 1)
	first.mustPsql(t, db, fixtureSQL)
	dataDir, creds := first.dataDir, first.creds
	first.stop()

	fullAccess := addPrincipal(t, dataDir, creds, "full-access", []auth.PermissionSet{auth.FullAccess})
	readWrite := addPrincipal(t, dataDir, creds, "read-write", []auth.PermissionSet{auth.ReadWrite})
	dataReadWrite := addPrincipal(t, dataDir, creds, "data-read-write", []auth.PermissionSet{auth.DataReadWrite})
	readOnly := addPrincipal(t, dataDir, creds, "read-only", []auth.PermissionSet{auth.ReadOnly})
	// Two policies, so the sets are merged across policies.
	readOnlyAndData := addPrincipal(t, dataDir, creds, "read-only-and-data",
		[]auth.PermissionSet{auth.ReadOnly}, []auth.PermissionSet{auth.DataReadWrite})
	// One rule with both sets, the weaker first.
	readOnlyAndFull := addPrincipal(t, dataDir, creds, "read-only-and-full",
		[]auth.PermissionSet{auth.ReadOnly, auth.FullAccess})

	s := startServerIn(t, dataDir)
	cases := []struct {
		principal testPrincipal
		role      string
		checks    []sqlCheck
	}{
		{fullAccess, autoscale.RoleAdmin, adminChecks("by_full_access")},
		{readWrite, autoscale.RoleAdmin, adminChecks("by_read_write")},
		{dataReadWrite, autoscale.RoleReadWrite, readWriteChecks("data-read-write")},
		{readOnly, autoscale.RoleReadOnly, readOnlyChecks()},
		{readOnlyAndData, autoscale.RoleReadWrite, readWriteChecks("read-only-and-data")},
		{readOnlyAndFull, autoscale.RoleAdmin, adminChecks("by_read_only_and_full")},
	}
	for _, tc := range cases {
		t.Run(tc.principal.name, func(t *testing.T) {
			runChecks(t, s, tc.principal, db, commonChecks(tc.role, db.Name))
			runChecks(t, s, tc.principal, db, tc.checks)
		})
	}

	// pg_dump reads each sequence's state, so it needs SELECT on sequences.
	for _, p := range []testPrincipal{dataReadWrite, readOnly} {
		t.Run(p.name+"/pg_dump", func(t *testing.T) {
			out, err := pgDumpAs(s, p, db, "--table=items")
			if err != nil {
				t.Fatalf("pg_dump: %v\n%s", err, out)
			}
			if !strings.Contains(out, "COPY public.items ") {
				t.Errorf("dump has no data for items:\n%s", out)
			}
		})
	}
	// The event trigger and its function are members of the plpgsql
	// extension, so a principal's dump, restored elsewhere, does not try
	// to create them.
	t.Run("pg_dump skips sdblocal objects", func(t *testing.T) {
		owner := testPrincipal{name: "owner", id: s.creds.PrincipalID, secret: s.creds.SecretKey}
		out, err := pgDumpAs(s, owner, db, "--schema-only")
		if err != nil {
			t.Fatalf("pg_dump: %v\n%s", err, out)
		}
		if strings.Contains(out, "sdblocal") {
			t.Errorf("schema dump mentions sdblocal:\n%s", out)
		}
		if !strings.Contains(out, "CREATE POLICY keeper_only") {
			t.Errorf("schema dump has no CREATE POLICY keeper_only:\n%s", out)
		}
	})

	// The owner's session also runs as role_admin and sees every row of
	// docs, which the policy for role_readwrite does not filter.
	if got := s.mustPsql(t, db, "SELECT current_user, count(*) FROM docs GROUP BY current_user"); got != "role_admin|2" {
		t.Errorf("owner: current_user and rows of docs = %q, want role_admin|2", got)
	}
}

// downgradeSQL turns a current instance back into one provisioned before
// role_readwrite, role_readonly and the event trigger existed: bootstrap
// version 1. Single-user mode runs one statement per line.
const downgradeSQL = `ALTER EXTENSION plpgsql DROP EVENT TRIGGER sdblocal_reject_command
ALTER EXTENSION plpgsql DROP FUNCTION sdblocal.reject_command()
ALTER EXTENSION plpgsql DROP SCHEMA sdblocal
DROP EVENT TRIGGER sdblocal_reject_command
DROP SCHEMA sdblocal CASCADE
DROP OWNED BY role_readwrite, role_readonly
DROP ROLE role_readwrite
DROP ROLE role_readonly
ALTER ROLE role_admin INHERIT
`

// oldInstanceConf is sdblocal.conf as sdblocal wrote it before it set
// max_prepared_transactions, plus a nonzero value for it, so the test can
// tell whether the wake's rewrite took effect.
const oldInstanceConf = `# Written by sdblocal at provisioning; rewritten on upgrades.
listen_addresses = ''
port = 5432
unix_socket_permissions = 0700
max_connections = 100
shared_buffers = 32MB
huge_pages = off
max_worker_processes = 4
max_parallel_workers = 2
max_logical_replication_workers = 0
max_wal_senders = 2
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
max_prepared_transactions = 2
`

// runSingleUser runs sql through `postgres --single` on a stopped
// instance's data directory, as the user that owns it.
func runSingleUser(t *testing.T, dataDir, dbName, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(autoscale.ResolvePGDir(""), "bin", "postgres"),
		"--single", "-D", dataDir, "-c", "exit_on_error=on", dbName)
	cmd.Stdin = strings.NewReader(sql)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C", "LC_ALL=C"}
	cmd.Dir = dataDir
	if os.Geteuid() == 0 {
		// PostgreSQL does not run as root, and sdblocal's default --user
		// owns the instance files.
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("postgres --single: %v\n%s", err, out)
	}
}

func TestWakeUpgradesOldInstance(t *testing.T) {
	first := startServer(t)
	db := first.createDatabase(t, "legacy", 0, 1)
	first.mustPsql(t, db, "CREATE TABLE before_upgrade (id serial PRIMARY KEY, v int); INSERT INTO before_upgrade (v) VALUES (1), (2)")
	dataDir, creds := first.dataDir, first.creds
	first.stop()

	instanceData := filepath.Join(dataDir, "instances", db.ID, "data")
	runSingleUser(t, instanceData, db.Name, downgradeSQL)
	if err := os.Remove(filepath.Join(instanceData, "sdblocal-bootstrap-version")); err != nil {
		t.Fatal(err)
	}
	confPath := filepath.Join(instanceData, "sdblocal.conf")
	info, err := os.Stat(confPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(confPath, []byte(oldInstanceConf), info.Mode()); err != nil {
		t.Fatal(err)
	}
	dataReadWrite := addPrincipal(t, dataDir, creds, "data-read-write", []auth.PermissionSet{auth.DataReadWrite})
	readOnly := addPrincipal(t, dataDir, creds, "read-only", []auth.PermissionSet{auth.ReadOnly})

	s := startServerIn(t, dataDir)
	// The first client wakes the instance, and the wake upgrades it before
	// the client's backend connects.
	runChecks(t, s, dataReadWrite, db, []sqlCheck{
		allowed("SELECT current_user", autoscale.RoleReadWrite),
		allowed("SELECT sum(v) FROM before_upgrade", "3"),
		allowed("INSERT INTO before_upgrade (v) VALUES (3)", ""),
		allowed("SELECT rolinherit FROM pg_roles WHERE rolname = 'role_admin'", "f"),
		allowed("SHOW max_prepared_transactions", "0"),
		rejected("BEGIN; PREPARE TRANSACTION 'p1'", "55000", "prepared transactions are disabled"),
		rejected("GRANT SELECT ON before_upgrade TO PUBLIC", "42501", "permission denied to run GRANT"),
	})
	runChecks(t, s, readOnly, db, []sqlCheck{
		allowed("SELECT current_user", autoscale.RoleReadOnly),
		allowed("SELECT sum(v) FROM before_upgrade", "6"),
		rejected("DELETE FROM before_upgrade", "42501", "permission denied for table before_upgrade"),
	})
	// Default privileges reach tables role_admin creates after the upgrade.
	s.mustPsql(t, db, "CREATE TABLE after_upgrade (id serial PRIMARY KEY, v int)")
	runChecks(t, s, dataReadWrite, db, []sqlCheck{
		allowed("INSERT INTO after_upgrade (v) VALUES (7)", ""),
		allowed("SELECT v FROM after_upgrade", "7"),
	})

	raw, err := os.ReadFile(filepath.Join(instanceData, "sdblocal-bootstrap-version"))
	if err != nil {
		t.Fatalf("bootstrap version after the wake: %v", err)
	}
	version := strings.TrimSpace(string(raw))
	if n, err := strconv.Atoi(version); err != nil || n < 2 {
		t.Errorf("bootstrap version after the wake = %q, want a number above 1", version)
	}
	wantLog := "from_version=1 to_version=" + version
	if !strings.Contains(s.logs.String(), wantLog) {
		t.Errorf("server log has no upgrade line with %q", wantLog)
	}
	conf, err := os.ReadFile(confPath)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(conf), "max_prepared_transactions = 2") {
		t.Errorf("sdblocal.conf was not rewritten:\n%s", conf)
	}
}
