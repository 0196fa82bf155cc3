package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	sdb "github.com/scaleway/scaleway-sdk-go/api/serverless_sqldb/v1alpha1"
	"github.com/scaleway/scaleway-sdk-go/scw"

	"github.com/sdblocal/sdblocal/autoscale"
	"github.com/sdblocal/sdblocal/catalog"
)

// backupContentSQL fills a database with the kinds of objects a backup must
// carry: common column types, an enum, a sequence, an identity column, a
// foreign key, a view, a materialized view, a plpgsql function, a comment,
// a second schema and pgcrypto.
const backupContentSQL = `
CREATE EXTENSION pgcrypto;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE SEQUENCE ticket_seq START 100;
CREATE TABLE items (
  id bigserial PRIMARY KEY, name text NOT NULL, price numeric(10,2), tags text[], meta jsonb,
  created timestamptz DEFAULT '2024-01-01', m mood, uid uuid DEFAULT gen_random_uuid(), digest bytea);
CREATE TABLE orders (
  id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, item_id bigint REFERENCES items(id),
  qty int CHECK (qty > 0), ticket int DEFAULT nextval('ticket_seq'));
INSERT INTO items (name, price, tags, meta, m, digest)
  SELECT 'item' || g, g * 1.5, ARRAY['a', 'b' || g], jsonb_build_object('g', g), 'ok', digest('x' || g, 'sha256')
  FROM generate_series(1, 200) g;
INSERT INTO orders (item_id, qty) SELECT g, g FROM generate_series(1, 50) g;
CREATE VIEW expensive AS SELECT name, price FROM items WHERE price > 100;
CREATE MATERIALIZED VIEW totals AS SELECT item_id, sum(qty) AS total FROM orders GROUP BY item_id;
CREATE FUNCTION double_it(x int) RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN x * 2; END $$;
COMMENT ON TABLE items IS 'the items';
CREATE SCHEMA extra;
CREATE TABLE extra.notes (id int, body text);
INSERT INTO extra.notes VALUES (1, 'hello');
`

// backupChangeSQL changes every kind of object that backupContentSQL made.
const backupChangeSQL = `
UPDATE items SET price = 0 WHERE id <= 10;
DELETE FROM orders WHERE id > 40;
DROP VIEW expensive;
CREATE TABLE added (x int);
INSERT INTO added VALUES (1);
SELECT nextval('ticket_seq');
DROP FUNCTION double_it(int);
DELETE FROM extra.notes;
`

// backupSnapshotQueries describe a database's contents; equal results mean
// equal contents for the objects of backupContentSQL.
var backupSnapshotQueries = []string{
	"SELECT count(*), sum(price), string_agg(name || array_to_string(tags, ',') || meta::text || m::text || encode(digest, 'hex'), ';' ORDER BY id) FROM items",
	"SELECT count(*), sum(qty), sum(ticket), max(id) FROM orders",
	"SELECT count(*), sum(price) FROM expensive",
	"SELECT count(*), sum(total) FROM totals",
	"SELECT double_it(21)",
	"SELECT last_value, is_called FROM ticket_seq",
	"SELECT last_value FROM items_id_seq",
	"SELECT obj_description('items'::regclass)",
	"SELECT count(*) FROM extra.notes",
	"SELECT string_agg(table_schema || '.' || table_name, ',' ORDER BY table_schema, table_name) FROM information_schema.tables WHERE table_schema IN ('public', 'extra')",
	"SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension",
	"SELECT encode(digest('abc', 'sha256'), 'hex')",
}

// snapshot runs backupSnapshotQueries on the database as its owner.
func (s *testServer) snapshot(t *testing.T, db *sdb.Database) []string {
	t.Helper()
	out := make([]string, len(backupSnapshotQueries))
	for i, q := range backupSnapshotQueries {
		out[i] = s.mustPsql(t, db, q)
	}
	return out
}

func requireSameSnapshot(t *testing.T, what string, got, want []string) {
	t.Helper()
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("%s: %s\n got  %q\n want %q", what, backupSnapshotQueries[i], got[i], want[i])
		}
	}
}

// takeBackup starts a backup through POST /backups and waits for its end
// with the SDK.
func (s *testServer) takeBackup(t *testing.T, databaseID string) *sdb.DatabaseBackup {
	t.Helper()
	status, body := s.apiRequest(t, http.MethodPost, "/serverless-sqldb/v1alpha1/regions/fr-par/backups", strings.NewReader(`{"database_id":"`+databaseID+`"}`))
	if status != http.StatusOK {
		t.Fatalf("POST /backups: status %d, body %v", status, body)
	}
	if body["status"] != "unknown_status" {
		t.Errorf("POST /backups returned status %v, want unknown_status", body["status"])
	}
	id, _ := body["id"].(string)
	return s.waitBackup(t, id)
}

func (s *testServer) waitBackup(t *testing.T, id string) *sdb.DatabaseBackup {
	t.Helper()
	b, err := s.api.WaitForDatabaseBackup(&sdb.WaitForDatabaseBackupRequest{
		BackupID: id, Timeout: scw.TimeDurationPtr(60 * time.Second), RetryInterval: scw.TimeDurationPtr(100 * time.Millisecond),
	})
	if err != nil {
		t.Fatalf("WaitForDatabaseBackup %s: %v\n%s", id, err, s.logs)
	}
	return b
}

func (s *testServer) waitDatabaseReady(t *testing.T, id string) *sdb.Database {
	t.Helper()
	db, err := s.api.WaitForDatabase(&sdb.WaitForDatabaseRequest{
		DatabaseID: id, Timeout: scw.TimeDurationPtr(90 * time.Second), RetryInterval: scw.TimeDurationPtr(100 * time.Millisecond),
	})
	if err != nil {
		t.Fatalf("WaitForDatabase %s: %v\n%s", id, err, s.logs)
	}
	if db.Status != sdb.DatabaseStatusReady {
		t.Fatalf("database %s has status %s, want ready\n%s", id, db.Status, s.logs)
	}
	return db
}

func (s *testServer) backupFile(databaseID, backupID string) string {
	return filepath.Join(s.dataDir, "backups", databaseID, backupID+".pg_dump")
}

func TestBackupRestoreExport(t *testing.T) {
	s := startServer(t, "--backup-interval", "0", "--backup-export-lifetime", "3s")
	db := s.createDatabase(t, "shop", 0, 2)
	s.mustPsql(t, db, backupContentSQL)
	want := s.snapshot(t, db)

	b := s.takeBackup(t, db.ID)
	if b.Status != sdb.DatabaseBackupStatusReady {
		t.Fatalf("backup status %s, want ready\n%s", b.Status, s.logs)
	}
	file := s.backupFile(db.ID, b.ID)
	info, err := os.Stat(file)
	if err != nil {
		t.Fatalf("backup file: %v", err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("backup file mode %s, want 0600", info.Mode().Perm())
	}
	if b.Size == nil || uint64(*b.Size) != uint64(info.Size()) {
		t.Errorf("backup size %v, want the file's %d bytes", b.Size, info.Size())
	}
	if b.DbSize == nil || *b.DbSize < 1<<20 {
		t.Errorf("backup db_size %v, want pg_database_size, over 1 MiB", b.DbSize)
	}
	if b.CreatedAt == nil || b.ExpiresAt == nil || !b.ExpiresAt.Equal(b.CreatedAt.Add(168*time.Hour)) {
		t.Errorf("backup created_at %v, expires_at %v; want expiry 168h after creation", b.CreatedAt, b.ExpiresAt)
	}
	if b.ProjectID != s.creds.ProjectID || b.OrganizationID != s.creds.OrganizationID || b.Region != scw.RegionFrPar {
		t.Errorf("backup scope %s %s %s, want the database's", b.ProjectID, b.OrganizationID, b.Region)
	}
	toc, err := exec.Command("pg_restore", "-l", file).CombinedOutput()
	if err != nil {
		t.Fatalf("pg_restore -l: %v\n%s", err, toc)
	}
	for _, absent := range []string{"sdblocal", "EVENT TRIGGER", " ACL ", "DEFAULT ACL"} {
		if strings.Contains(string(toc), absent) {
			t.Errorf("backup archive lists %q:\n%s", absent, toc)
		}
	}

	// A session open during the restore ends with a FATAL naming it.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	session, err := pgx.Connect(ctx, s.connString(db))
	if err != nil {
		t.Fatal(err)
	}
	defer session.Close(context.Background())

	s.mustPsql(t, db, backupChangeSQL)
	if s.mustPsql(t, db, backupSnapshotQueries[0]) == want[0] || s.mustPsql(t, db, backupSnapshotQueries[1]) == want[1] {
		t.Fatalf("the change left items and orders as they were")
	}

	restoring, err := s.api.RestoreDatabaseFromBackup(&sdb.RestoreDatabaseFromBackupRequest{DatabaseID: db.ID, BackupID: b.ID})
	if err != nil {
		t.Fatalf("RestoreDatabaseFromBackup: %v", err)
	}
	if restoring.Status != sdb.DatabaseStatusRestoring {
		t.Errorf("restore returned status %s, want restoring", restoring.Status)
	}
	s.waitDatabaseReady(t, db.ID)
	requireSameSnapshot(t, "after the restore in place", s.snapshot(t, db), want)

	_, err = session.Exec(ctx, "SELECT 1")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "57P01" || pgErr.Severity != "FATAL" ||
		pgErr.Message != "terminating connection because database "+db.ID+" is being restored" {
		t.Errorf("session open during the restore got %v, want FATAL 57P01 terminating connection because database %s is being restored", err, db.ID)
	}

	t.Run("restored objects are role_admin's", func(t *testing.T) {
		checks := map[string]string{
			"SELECT string_agg(DISTINCT tableowner, ',') FROM pg_tables WHERE schemaname IN ('public', 'extra')":                              "role_admin",
			"SELECT string_agg(DISTINCT pg_get_userbyid(relowner), ',') FROM pg_class WHERE relname IN ('totals', 'expensive', 'ticket_seq')": "role_admin",
			"SELECT has_table_privilege('role_readonly', 'items', 'SELECT')":                                                                  "t",
			"SELECT has_table_privilege('role_readwrite', 'orders', 'INSERT')":                                                                "t",
			"SELECT has_table_privilege('role_readonly', 'orders', 'INSERT')":                                                                 "f",
			"SELECT has_sequence_privilege('role_readwrite', 'ticket_seq', 'USAGE')":                                                          "t",
			"SELECT count(*) FROM pg_event_trigger WHERE evtname = 'sdblocal_reject_command'":                                                 "1",
			"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()":                                              "sdb_owner",
			"SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database WHERE datname LIKE 'sdblocal%'":                                "",
		}
		for query, want := range checks {
			if got := s.mustPsql(t, db, query); got != want {
				t.Errorf("%s = %q, want %q", query, got, want)
			}
		}
		if out, err := s.psql(t, db, "GRANT SELECT ON items TO role_readonly"); err == nil || !strings.Contains(out, "permission denied to run GRANT") {
			t.Errorf("GRANT after the restore: %v\n%s", err, out)
		}
	})

	restored, err := s.api.GetDatabaseBackup(&sdb.GetDatabaseBackupRequest{BackupID: b.ID})
	if err != nil || restored.Status != sdb.DatabaseBackupStatusReady {
		t.Errorf("backup after the restore: %v, %v; want status ready again", restored, err)
	}

	t.Run("create from backup", func(t *testing.T) {
		created, err := s.api.CreateDatabase(&sdb.CreateDatabaseRequest{
			ProjectID: s.creds.ProjectID, Name: "shop-copy", CPUMin: 0, CPUMax: 1, FromBackupID: &b.ID,
		})
		if err != nil {
			t.Fatalf("CreateDatabase from backup: %v", err)
		}
		copyDB := s.waitDatabaseReady(t, created.ID)
		requireSameSnapshot(t, "database created from the backup", s.snapshot(t, copyDB), want)
		if got := s.mustPsql(t, copyDB, "SELECT has_table_privilege('role_readonly', 'items', 'SELECT')"); got != "t" {
			t.Errorf("role_readonly cannot read the copy's items")
		}
	})

	t.Run("SDK list", func(t *testing.T) {
		list, err := s.api.ListDatabaseBackups(&sdb.ListDatabaseBackupsRequest{DatabaseID: db.ID}, scw.WithAllPages())
		if err != nil {
			t.Fatal(err)
		}
		if list.TotalCount != 1 || len(list.Backups) != 1 || list.Backups[0].ID != b.ID {
			t.Errorf("ListDatabaseBackups = %d backups %+v, want only %s", list.TotalCount, list.Backups, b.ID)
		}
	})

	t.Run("export", func(t *testing.T) {
		exported, err := s.api.ExportDatabaseBackup(&sdb.ExportDatabaseBackupRequest{BackupID: b.ID})
		if err != nil {
			t.Fatalf("ExportDatabaseBackup: %v", err)
		}
		if exported.DownloadURL == nil || exported.DownloadURLExpiresAt == nil {
			t.Fatalf("export returned no download URL: %+v", exported)
		}
		downloadURL := *exported.DownloadURL
		if !strings.HasPrefix(downloadURL, s.apiURL+"/serverless-sqldb/v1alpha1/regions/fr-par/backups/"+b.ID+"/download?token=") {
			t.Errorf("download URL %s is not on the API listener", downloadURL)
		}

		downloaded := filepath.Join(t.TempDir(), "export.pg_dump")
		status, body := httpGet(t, downloadURL)
		if status != http.StatusOK {
			t.Fatalf("download: status %d, body %.200s", status, body)
		}
		if err := os.WriteFile(downloaded, body, 0o600); err != nil {
			t.Fatal(err)
		}
		original, _ := os.ReadFile(file)
		if string(body) != string(original) {
			t.Errorf("downloaded %d bytes, differing from the %d-byte backup file", len(body), len(original))
		}

		tampered := strings.Replace(downloadURL, "token=", "token=9", 1)
		if status, body := httpGet(t, tampered); status != http.StatusForbidden || !strings.Contains(string(body), "permissions_denied") {
			t.Errorf("tampered URL: status %d, body %s; want 403 permissions_denied", status, body)
		}

		plain := startPlainPostgres(t)
		restore := exec.Command("pg_restore", "--no-owner", "--no-privileges", "--exit-on-error",
			"-h", plain, "-p", "5432", "-U", "postgres", "-d", "postgres", downloaded)
		if out, err := restore.CombinedOutput(); err != nil {
			t.Errorf("pg_restore into a plain PostgreSQL 14: %v\n%s", err, out)
		}
		got, err := exec.Command("psql", "-X", "-A", "-t", "-h", plain, "-p", "5432", "-U", "postgres", "-d", "postgres",
			"-c", backupSnapshotQueries[0], "-c", backupSnapshotQueries[4]).CombinedOutput()
		if err != nil || strings.TrimSpace(string(got)) != want[0]+"\n"+want[4] {
			t.Errorf("plain PostgreSQL after the restore: %v\n got  %q\n want %q", err, got, want[0]+"\n"+want[4])
		}

		time.Sleep(time.Until(*exported.DownloadURLExpiresAt) + 100*time.Millisecond)
		status, body = httpGet(t, downloadURL)
		if status != http.StatusForbidden || !strings.Contains(string(body), "expired") {
			t.Errorf("expired URL: status %d, body %s; want 403 saying it expired", status, body)
		}
	})

	if v, _ := s.metric(t, "sdblocal_backups_total", `outcome="success"`); v != 1 {
		t.Errorf("sdblocal_backups_total{outcome=success} = %v, want 1", v)
	}
	if v, _ := s.metric(t, "sdblocal_restores_total", `outcome="success"`); v != 2 {
		t.Errorf("sdblocal_restores_total{outcome=success} = %v, want 2 (in place and into a new database)", v)
	}
	if v, ok := s.metric(t, "sdblocal_backup_duration_seconds_count"); !ok || v != 1 {
		t.Errorf("sdblocal_backup_duration_seconds_count = %v, want 1", v)
	}
}

func TestBackupScheduleAndRetention(t *testing.T) {
	s := startServer(t, "--backup-interval", "2s", "--backup-time", "00:00", "--backup-retention", "3s", "--idle-timeout", "1s")
	db := s.createDatabase(t, "scheduled", 0, 1)
	if pid := s.postmasterPID(t, db.ID); pid != 0 {
		t.Fatalf("instance runs after provisioning (pid %d); the test needs it suspended", pid)
	}

	var first *sdb.DatabaseBackup
	waitFor(t, 15*time.Second, "a scheduled backup to be ready", func() bool {
		list, err := s.api.ListDatabaseBackups(&sdb.ListDatabaseBackupsRequest{DatabaseID: db.ID, OrderBy: sdb.ListDatabaseBackupsRequestOrderByCreatedAtAsc}, scw.WithAllPages())
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range list.Backups {
			if b.Status == sdb.DatabaseBackupStatusReady {
				first = b
				return true
			}
		}
		return false
	})
	file := s.backupFile(db.ID, first.ID)
	if _, err := os.Stat(file); err != nil {
		t.Errorf("file of the scheduled backup: %v", err)
	}
	if !first.ExpiresAt.Equal(first.CreatedAt.Add(3 * time.Second)) {
		t.Errorf("expires_at %s, want created_at %s + 3s", first.ExpiresAt, first.CreatedAt)
	}
	// The backup woke the instance; the idle rule suspends it again
	// between two scheduled backups.
	if !strings.Contains(s.logs.String(), "instance woke") {
		t.Errorf("no wake logged for the scheduled backup of a suspended database")
	}
	waitFor(t, 10*time.Second, "the instance to suspend after the backup", func() bool { return s.postmasterPID(t, db.ID) == 0 })

	waitFor(t, 10*time.Second, "the expired backup to be deleted", func() bool {
		_, err := s.api.GetDatabaseBackup(&sdb.GetDatabaseBackupRequest{BackupID: first.ID})
		var notFound *scw.ResourceNotFoundError
		return errors.As(err, &notFound)
	})
	if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("file of the deleted backup: %v, want it gone", err)
	}
	if !strings.Contains(s.logs.String(), "expired backup deleted") {
		t.Errorf("no log line for the deleted backup")
	}
}

func TestBackupAndRestoreFailures(t *testing.T) {
	s := startServer(t, "--backup-interval", "0", "--backup-lock-wait-timeout", "500ms")
	db := s.createDatabase(t, "locked", 0, 1)
	s.mustPsql(t, db, "CREATE TABLE busy (x int); INSERT INTO busy VALUES (1), (2)")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	holder, err := pgx.Connect(ctx, s.connString(db))
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(context.Background())
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE busy IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}

	started := time.Now()
	b := s.takeBackup(t, db.ID)
	if b.Status != sdb.DatabaseBackupStatusError {
		t.Fatalf("backup under a held lock has status %s, want error", b.Status)
	}
	if took := time.Since(started); took > 20*time.Second {
		t.Errorf("the failing backup took %s, want about the 500ms lock wait", took)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatalf("the lock holder's transaction was disturbed: %v", err)
	}

	entries, err := os.ReadDir(filepath.Join(s.dataDir, "backups", db.ID))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("files left after the failed backup: %v", entries)
	}
	// pg_dump enforces --lock-wait-timeout with a statement timeout on its
	// LOCK TABLE, so the cause names that statement.
	if !strings.Contains(s.logs.String(), "backup failed") || !strings.Contains(s.logs.String(), "LOCK TABLE public.busy") {
		t.Errorf("log lacks the failure and its cause:\n%s", s.logs)
	}
	if got := s.mustPsql(t, db, "SELECT count(*) FROM busy"); got != "2" {
		t.Errorf("table after the failed backup has %s rows, want 2", got)
	}
	if v, _ := s.metric(t, "sdblocal_backups_total", `outcome="error"`); v != 1 {
		t.Errorf("sdblocal_backups_total{outcome=error} = %v, want 1", v)
	}

	// A restore that fails leaves the database as it was.
	good := s.takeBackup(t, db.ID)
	if good.Status != sdb.DatabaseBackupStatusReady {
		t.Fatalf("backup without the lock has status %s, want ready", good.Status)
	}
	s.mustPsql(t, db, "INSERT INTO busy VALUES (3)")
	if err := os.Truncate(s.backupFile(db.ID, good.ID), 100); err != nil {
		t.Fatal(err)
	}
	if _, err := s.api.RestoreDatabaseFromBackup(&sdb.RestoreDatabaseFromBackupRequest{DatabaseID: db.ID, BackupID: good.ID}); err != nil {
		t.Fatal(err)
	}
	s.waitDatabaseReady(t, db.ID)
	if got := s.mustPsql(t, db, "SELECT count(*) FROM busy"); got != "3" {
		t.Errorf("table after a failed restore has %s rows, want the 3 it had", got)
	}
	if v, _ := s.metric(t, "sdblocal_restores_total", `outcome="error"`); v != 1 {
		t.Errorf("sdblocal_restores_total{outcome=error} = %v, want 1", v)
	}
	if !strings.Contains(s.logs.String(), "restore failed") {
		t.Errorf("no log line for the failed restore")
	}
}

func TestBackupRecoveryAfterRestart(t *testing.T) {
	s := startServer(t, "--backup-interval", "0")
	db := s.createDatabase(t, "interrupted", 0, 1)
	s.mustPsql(t, db, "CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
	b := s.takeBackup(t, db.ID)
	s.mustPsql(t, db, "INSERT INTO t VALUES (2)")
	dataDir := s.dataDir
	s.stop()

	// Leave the catalog and files as a crash would: a restore recorded and
	// not done, and a dump cut short.
	cat, err := catalog.Open(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	cut := catalog.Backup{ID: "00000000-0000-4000-8000-000000000001", DatabaseID: db.ID, OrganizationID: db.OrganizationID,
		ProjectID: db.ProjectID, Region: string(db.Region), Status: catalog.BackupStatusUnknown, CreatedAt: time.Now().UTC()}
	err = cat.Update(func(tx *catalog.Tx) error {
		record, err := tx.Database(db.ID)
		if err != nil {
			return err
		}
		record.Status = catalog.StatusRestoring
		if err := tx.PutDatabase(record); err != nil {
			return err
		}
		locked, err := tx.Backup(b.ID)
		if err != nil {
			return err
		}
		locked.Status = catalog.BackupStatusLocked
		if err := tx.PutBackup(locked); err != nil {
			return err
		}
		if err := tx.PutBackup(cut); err != nil {
			return err
		}
		return tx.PutRestoreJob(catalog.RestoreJob{DatabaseID: db.ID, BackupID: b.ID, StartedAt: time.Now()})
	})
	cat.Close()
	if err != nil {
		t.Fatal(err)
	}
	partial := filepath.Join(dataDir, "backups", db.ID, cut.ID+".pg_dump.tmp")
	if err := os.WriteFile(partial, []byte("PGDMP"), 0o600); err != nil {
		t.Fatal(err)
	}

	s = startServerIn(t, dataDir, "--backup-interval", "0")
	s.waitDatabaseReady(t, db.ID)
	if got := s.mustPsql(t, db, "SELECT string_agg(x::text, ',' ORDER BY x) FROM t"); got != "1" {
		t.Errorf("table after the resumed restore = %q, want the backup's 1", got)
	}
	if got, err := s.api.GetDatabaseBackup(&sdb.GetDatabaseBackupRequest{BackupID: cut.ID}); err != nil || got.Status != sdb.DatabaseBackupStatusError {
		t.Errorf("backup cut short: %v, %v; want status error", got, err)
	}
	if got, err := s.api.GetDatabaseBackup(&sdb.GetDatabaseBackupRequest{BackupID: b.ID}); err != nil || got.Status != sdb.DatabaseBackupStatusReady {
		t.Errorf("backup read by the resumed restore: %v, %v; want ready again", got, err)
	}
	if _, err := os.Stat(partial); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary file of the cut-short dump: %v, want it removed", err)
	}
	if _, err := os.Stat(s.backupFile(db.ID, b.ID)); err != nil {
		t.Errorf("file of the ready backup: %v", err)
	}
}

// httpGet fetches url without credentials.
func httpGet(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

// startPlainPostgres runs an unmodified PostgreSQL 14 from the tree sdblocal
// uses, initialised with trust authentication for user postgres, listening
// only on a Unix socket in the returned directory. As root it runs as the
// postgres user, because PostgreSQL refuses root.
func startPlainPostgres(t *testing.T) string {
	t.Helper()
	pgDir := autoscale.ResolvePGDir("")
	dir, err := os.MkdirTemp("", "sdbpg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })

	var credential *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("look up user postgres: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
	}

	command := func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command(filepath.Join(pgDir, "bin", name), args...)
		cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C", "LC_ALL=C"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: credential}
		return cmd
	}

	data := filepath.Join(dir, "data")
	if out, err := command("initdb", "-D", data, "-U", "postgres", "-A", "trust", "--locale=C", "--encoding=UTF8", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}

	server := command("postgres", "-D", data, "-c", "listen_addresses=", "-c", "unix_socket_directories="+dir, "-c", "port=5432", "-c", "fsync=off")
	logs := &syncBuffer{}
	server.Stdout, server.Stderr = logs, logs
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		_ = server.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = server.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = server.Process.Kill()
			<-exited
		}
	})
	waitFor(t, 20*time.Second, "the plain PostgreSQL to accept connections", func() bool {
		select {
		case <-exited:
			t.Fatalf("plain PostgreSQL exited:\n%s", logs)
		default:
		}
		return exec.Command("psql", "-X", "-h", dir, "-p", "5432", "-U", "postgres", "-d", "postgres", "-c", "SELECT 1").Run() == nil
	})
	return dir
}
