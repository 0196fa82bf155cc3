package backup

import (
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sdblocal/sdblocal/catalog"
)

// newTestService returns a service over a fresh catalog, without instances
// and with tools that are never run.
func newTestService(t *testing.T, configure ...func(*Config)) (*Service, *catalog.Catalog) {
	t.Helper()
	dir := t.TempDir()
	cat, err := catalog.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close() })
	cfg := Config{
		DataDir: dir,
		Tools:   Tools{PGDump: "/nonexistent/pg_dump", PGRestore: "/nonexistent/pg_restore"},
		Logger:  slog.New(slog.NewTextHandler(t.Output(), nil)),
	}
	for _, fn := range configure {
		fn(&cfg)
	}
	s, err := New(cfg, cat, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s, cat
}

func TestDownloadToken(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	backupID := uuid.NewString()
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	expiresAt := now.Add(time.Hour)
	token := signToken(secret, backupID, expiresAt)

	if err := verifyToken(secret, backupID, token, now); err != nil {
		t.Fatalf("fresh token rejected: %v", err)
	}
	err := verifyToken(secret, backupID, token, expiresAt)
	if !errors.Is(err, ErrTokenExpired) || !errors.Is(err, fs.ErrPermission) {
		t.Errorf("token at its expiry: %v, want ErrTokenExpired and fs.ErrPermission", err)
	}

	expiry, mac, _ := strings.Cut(token, ".")
	later := signToken(secret, backupID, expiresAt.Add(24*time.Hour))
	laterExpiry, _, _ := strings.Cut(later, ".")
	flipped := []byte(mac)
	flipped[0] ^= 1
	invalid := map[string]string{
		"another backup":   signToken(secret, uuid.NewString(), expiresAt),
		"another key":      signToken([]byte("another key of thirty-two bytes!"), backupID, expiresAt),
		"extended expiry":  laterExpiry + "." + mac,
		"changed MAC":      expiry + "." + string(flipped),
		"no separator":     expiry + mac,
		"empty":            "",
		"expiry only":      expiry + ".",
		"padded expiry":    "0" + token,
		"non-numeric time": "x." + mac,
	}
	for name, candidate := range invalid {
		err := verifyToken(secret, backupID, candidate, now)
		if !errors.Is(err, fs.ErrPermission) || errors.Is(err, ErrTokenExpired) {
			t.Errorf("%s: %v, want an invalid-token error wrapping fs.ErrPermission", name, err)
		}
	}
}

func TestScheduleSlots(t *testing.T) {
	day := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		schedule schedule
		now      time.Time
		want     time.Time
	}{
		{"daily, after the time", schedule{24 * time.Hour, 3 * time.Hour}, day.Add(10 * time.Hour), day.Add(3 * time.Hour)},
		{"daily, before the time", schedule{24 * time.Hour, 3 * time.Hour}, day.Add(time.Hour), day.Add(-21 * time.Hour)},
		{"daily, at the time", schedule{24 * time.Hour, 3 * time.Hour}, day.Add(3 * time.Hour), day.Add(3 * time.Hour)},
		{"hourly from 03:30", schedule{time.Hour, 3*time.Hour + 30*time.Minute}, day.Add(5*time.Hour + 10*time.Minute), day.Add(4*time.Hour + 30*time.Minute)},
		{"hourly, before 03:30", schedule{time.Hour, 3*time.Hour + 30*time.Minute}, day.Add(20 * time.Minute), day.Add(-30 * time.Minute)},
		{"every 2s", schedule{2 * time.Second, 0}, day.Add(5*time.Second + 300*time.Millisecond), day.Add(4 * time.Second)},
		{"local time zone", schedule{24 * time.Hour, 3 * time.Hour}, day.Add(10 * time.Hour).In(time.FixedZone("UTC+9", 9*3600)), day.Add(3 * time.Hour)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.schedule.slotAtOrBefore(tt.now); !got.Equal(tt.want) {
				t.Errorf("slotAtOrBefore(%s) = %s, want %s", tt.now, got, tt.want)
			}
		})
	}
}

func TestParseTimeOfDay(t *testing.T) {
	if got, err := ParseTimeOfDay("03:00"); err != nil || got != 3*time.Hour {
		t.Errorf("ParseTimeOfDay(03:00) = %s, %v", got, err)
	}
	if got, err := ParseTimeOfDay("23:59"); err != nil || got != 23*time.Hour+59*time.Minute {
		t.Errorf("ParseTimeOfDay(23:59) = %s, %v", got, err)
	}
	for _, bad := range []string{"24:00", "3am", "", "03:00:00"} {
		if _, err := ParseTimeOfDay(bad); err == nil || !strings.Contains(err.Error(), "HH:MM") {
			t.Errorf("ParseTimeOfDay(%q) = %v, want an error naming HH:MM", bad, err)
		}
	}
}

func TestExportSecretFile(t *testing.T) {
	dir := t.TempDir()
	first, err := loadSecret(dir)
	if err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(filepath.Join(dir, secretFileName))
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %s, want 0600", info.Mode().Perm())
	}
	again, err := loadSecret(dir)
	if err != nil || string(again) != string(first) {
		t.Errorf("second load = %x, %v; want the same key", again, err)
	}
	if err := os.WriteFile(filepath.Join(dir, secretFileName), []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadSecret(dir); err == nil || !strings.Contains(err.Error(), "delete it") {
		t.Errorf("load of a damaged key = %v, want an error saying to delete it", err)
	}
}

func TestFilePathStaysInBackupDirectory(t *testing.T) {
	s, _ := newTestService(t)
	good := catalog.Backup{ID: uuid.NewString(), DatabaseID: uuid.NewString()}
	path, err := s.filePath(good)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(s.dir, good.DatabaseID, good.ID+".pg_dump"); path != want {
		t.Errorf("filePath = %s, want %s", path, want)
	}
	for _, bad := range []catalog.Backup{
		{ID: "../../catalog", DatabaseID: good.DatabaseID},
		{ID: good.ID, DatabaseID: ".."},
		{ID: good.ID, DatabaseID: "/etc"},
	} {
		if path, err := s.filePath(bad); err == nil {
			t.Errorf("filePath(%+v) = %s, want an error", bad, path)
		}
	}
}

func TestOpenExport(t *testing.T) {
	s, _ := newTestService(t)
	b := catalog.Backup{ID: uuid.NewString(), DatabaseID: uuid.NewString(), Status: catalog.BackupStatusReady}
	path, _ := s.filePath(b)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("archive"), 0o600); err != nil {
		t.Fatal(err)
	}
	token, _, err := s.Export(b)
	if err != nil {
		t.Fatal(err)
	}
	f, err := s.OpenExport(b, token)
	if err != nil {
		t.Fatalf("OpenExport with a fresh token: %v", err)
	}
	f.Close()

	if _, err := s.OpenExport(b, token+"A"); !errors.Is(err, fs.ErrPermission) {
		t.Errorf("OpenExport with a tampered token: %v, want fs.ErrPermission", err)
	}
	failed := b
	failed.Status = catalog.BackupStatusError
	if _, _, err := s.Export(failed); err == nil {
		t.Errorf("Export of a failed backup succeeded")
	}

	// A symbolic link in place of the file is not followed.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(s.cfg.DataDir, secretFileName), path); err != nil {
		t.Fatal(err)
	}
	if f, err := s.OpenExport(b, token); err == nil {
		f.Close()
		t.Errorf("OpenExport followed a symbolic link")
	}
}

func TestDeleteExpired(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	s, cat := newTestService(t, func(cfg *Config) { cfg.Now = func() time.Time { return now } })
	databaseID := uuid.NewString()
	add := func(status catalog.BackupStatus, expiresAt time.Time) (catalog.Backup, string) {
		b := catalog.Backup{ID: uuid.NewString(), DatabaseID: databaseID, Status: status, CreatedAt: expiresAt.Add(-time.Hour), ExpiresAt: &expiresAt}
		path := writeBackupFile(t, s, b)
		if err := cat.Update(func(tx *catalog.Tx) error { return tx.PutBackup(b) }); err != nil {
			t.Fatal(err)
		}
		return b, path
	}
	expired, expiredPath := add(catalog.BackupStatusReady, now.Add(-time.Second))
	current, currentPath := add(catalog.BackupStatusReady, now.Add(time.Second))
	locked, lockedPath := add(catalog.BackupStatusLocked, now.Add(-time.Second))

	if n := s.deleteExpired(now); n != 1 {
		t.Errorf("deleteExpired deleted %d backups, want 1", n)
	}
	requireBackupStatus(t, cat, expired.ID, "")
	requireBackupStatus(t, cat, current.ID, catalog.BackupStatusReady)
	requireBackupStatus(t, cat, locked.ID, catalog.BackupStatusLocked)
	if fileExists(expiredPath) {
		t.Errorf("file of the expired backup still exists")
	}
	if !fileExists(currentPath) || !fileExists(lockedPath) {
		t.Errorf("file of a kept backup was removed")
	}
}

func TestRecoverAfterInterruption(t *testing.T) {
	s, cat := newTestService(t)
	orgID, projectID := uuid.NewString(), uuid.NewString()
	newDatabase := func(status catalog.DatabaseStatus) catalog.Database {
		return catalog.Database{ID: uuid.NewString(), Name: "db", OrganizationID: orgID, ProjectID: projectID, Region: "fr-par", Status: status, CPUMax: 1, CreatedAt: time.Now().UTC()}
	}
	newBackup := func(db catalog.Database, status catalog.BackupStatus) catalog.Backup {
		return catalog.Backup{ID: uuid.NewString(), OrganizationID: orgID, ProjectID: projectID, DatabaseID: db.ID, Region: "fr-par", Status: status, CreatedAt: time.Now().UTC()}
	}

	source := newDatabase(catalog.StatusReady)
	running := newBackup(source, catalog.BackupStatusUnknown)
	kept := newBackup(source, catalog.BackupStatusReady)
	lockedAlone := newBackup(source, catalog.BackupStatusLocked)
	readByJobs := newBackup(source, catalog.BackupStatusLocked)
	vanished := newBackup(source, catalog.BackupStatusLocked) // its file is missing

	inPlace := newDatabase(catalog.StatusRestoring)
	intoNew := newDatabase(catalog.StatusCreating)
	noJob := newDatabase(catalog.StatusRestoring)
	lostBackupInPlace := newDatabase(catalog.StatusRestoring)
	lostBackupNew := newDatabase(catalog.StatusCreating)
	jobs := []catalog.RestoreJob{
		{DatabaseID: inPlace.ID, BackupID: readByJobs.ID},
		{DatabaseID: intoNew.ID, BackupID: readByJobs.ID, IntoNew: true},
		{DatabaseID: lostBackupInPlace.ID, BackupID: vanished.ID},
		{DatabaseID: lostBackupNew.ID, BackupID: vanished.ID, IntoNew: true},
	}
	err := cat.Update(func(tx *catalog.Tx) error {
		for _, db := range []catalog.Database{source, inPlace, intoNew, noJob, lostBackupInPlace, lostBackupNew} {
			if err := tx.PutDatabase(db); err != nil {
				return err
			}
		}
		for _, b := range []catalog.Backup{running, kept, lockedAlone, readByJobs, vanished} {
			if err := tx.PutBackup(b); err != nil {
				return err
			}
		}
		for _, job := range jobs {
			if err := tx.PutRestoreJob(job); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	runningPath := writeBackupFile(t, s, running)
	runningTemp := runningPath + tempSuffix
	if err := os.WriteFile(runningTemp, []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	keptPath := writeBackupFile(t, s, kept)
	writeBackupFile(t, s, lockedAlone)
	writeBackupFile(t, s, readByJobs)
	orphan := writeBackupFile(t, s, catalog.Backup{ID: uuid.NewString(), DatabaseID: uuid.NewString()})
	foreign := filepath.Join(filepath.Dir(keptPath), "notes.txt")
	if err := os.WriteFile(foreign, []byte("not sdblocal's"), 0o600); err != nil {
		t.Fatal(err)
	}

	if err := s.Recover(); err != nil {
		t.Fatal(err)
	}

	requireBackupStatus(t, cat, running.ID, catalog.BackupStatusError)
	requireBackupStatus(t, cat, kept.ID, catalog.BackupStatusReady)
	requireBackupStatus(t, cat, lockedAlone.ID, catalog.BackupStatusReady)
	requireBackupStatus(t, cat, readByJobs.ID, catalog.BackupStatusLocked)
	requireDatabaseStatus(t, cat, inPlace.ID, catalog.StatusRestoring)
	requireDatabaseStatus(t, cat, intoNew.ID, catalog.StatusRestoring)
	requireDatabaseStatus(t, cat, noJob.ID, catalog.StatusReady)
	requireDatabaseStatus(t, cat, lostBackupInPlace.ID, catalog.StatusReady)
	requireDatabaseStatus(t, cat, lostBackupNew.ID, catalog.StatusError)

	var resumed []string
	for _, job := range s.resumed {
		resumed = append(resumed, job.DatabaseID)
	}
	if len(resumed) != 2 || !slices.Contains(resumed, inPlace.ID) || !slices.Contains(resumed, intoNew.ID) {
		t.Errorf("resumed jobs for %v, want the in-place and the create-from-backup job", resumed)
	}
	var left []catalog.RestoreJob
	_ = cat.View(func(tx *catalog.Tx) error { left, err = tx.RestoreJobs(); return err })
	if len(left) != 2 {
		t.Errorf("%d restore jobs left, want the 2 being resumed: %+v", len(left), left)
	}

	for name, path := range map[string]string{"dump in progress": runningPath, "temporary file": runningTemp, "orphan": orphan} {
		if fileExists(path) {
			t.Errorf("%s %s survived Recover", name, path)
		}
	}
	if _, err := os.Stat(filepath.Dir(orphan)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("orphan's empty directory survived Recover: %v", err)
	}
	if !fileExists(keptPath) || !fileExists(foreign) {
		t.Errorf("Recover removed a ready backup's file or a file sdblocal did not write")
	}
}

func TestFindToolsErrors(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	if _, err := FindTools("", ""); err == nil || !strings.Contains(err.Error(), "postgresql-client-15") {
		t.Errorf("FindTools with no pg_dump in $PATH: %v, want an error naming postgresql-client-15", err)
	}

	old := filepath.Join(t.TempDir(), "pg_dump")
	if err := os.WriteFile(old, []byte("#!/bin/sh\necho 'pg_dump (PostgreSQL) 12.9'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := FindTools(old, old); err == nil || !strings.Contains(err.Error(), "PostgreSQL 12") {
		t.Errorf("FindTools with pg_dump 12: %v, want an error naming the version", err)
	}
	if _, err := FindTools("/nonexistent/pg_dump", ""); err == nil || !strings.Contains(err.Error(), "/nonexistent/pg_dump") {
		t.Errorf("FindTools with a missing path: %v, want an error naming it", err)
	}
}

// writeBackupFile creates b's file and returns its path.
func writeBackupFile(t *testing.T, s *Service, b catalog.Backup) string {
	t.Helper()
	path, err := s.filePath(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("archive"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// requireBackupStatus checks the stored status; "" means no record.
func requireBackupStatus(t *testing.T, cat *catalog.Catalog, id string, want catalog.BackupStatus) {
	t.Helper()
	var b catalog.Backup
	err := cat.View(func(tx *catalog.Tx) error { var err error; b, err = tx.Backup(id); return err })
	switch {
	case want == "" && !errors.Is(err, catalog.ErrNotFound):
		t.Errorf("backup %s: %v, status %s; want it deleted", id, err, b.Status)
	case want != "" && err != nil:
		t.Errorf("backup %s: %v", id, err)
	case want != "" && b.Status != want:
		t.Errorf("backup %s has status %s, want %s", id, b.Status, want)
	}
}

func requireDatabaseStatus(t *testing.T, cat *catalog.Catalog, id string, want catalog.DatabaseStatus) {
	t.Helper()
	var db catalog.Database
	err := cat.View(func(tx *catalog.Tx) error { var err error; db, err = tx.Database(id); return err })
	if err != nil {
		t.Fatalf("database %s: %v", id, err)
	}
	if db.Status != want {
		t.Errorf("database %s has status %s, want %s", id, db.Status, want)
	}
}
