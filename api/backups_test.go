package api

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	sdb "github.com/scaleway/scaleway-sdk-go/api/serverless_sqldb/v1alpha1"
	"github.com/scaleway/scaleway-sdk-go/scw"

	"github.com/sdblocal/sdblocal/catalog"
)

// fakeBackups replaces the backup service at the Backups boundary. It
// records each call, and a restore or a provision from a backup marks the
// database ready. Its download token is the backup ID reversed, and every
// download serves the file at filePath.
type fakeBackups struct {
	cat      *catalog.Catalog
	filePath string

	mu           sync.Mutex
	created      []string
	exported     []string
	restored     []string
	provisioned  []string
	restoreDelay time.Duration
}

func (f *fakeBackups) Create(db catalog.Database) (catalog.Backup, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.created = append(f.created, db.ID)
	backup := catalog.Backup{
		ID: uuid.NewString(), OrganizationID: db.OrganizationID, ProjectID: db.ProjectID, DatabaseID: db.ID,
		Region: db.Region, Status: catalog.BackupStatusUnknown, CreatedAt: time.Now().UTC().Truncate(time.Microsecond),
	}
	return backup, f.cat.Update(func(tx *catalog.Tx) error { return tx.PutBackup(backup) })
}

func (f *fakeBackups) Export(backup catalog.Backup) (string, time.Time, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.exported = append(f.exported, backup.ID)
	return fakeToken(backup.ID), time.Now().Add(time.Hour).Truncate(time.Second), nil
}

func (f *fakeBackups) OpenExport(backup catalog.Backup, token string) (*os.File, error) {
	if token != fakeToken(backup.ID) {
		return nil, fmt.Errorf("download URL is invalid for backup %s: %w", backup.ID, fs.ErrPermission)
	}
	return os.Open(f.filePath)
}

func fakeToken(backupID string) string {
	runes := []rune(backupID)
	slices.Reverse(runes)
	return string(runes)
}

func (f *fakeBackups) Restore(db catalog.Database, backup catalog.Backup) {
	f.mu.Lock()
	f.restored = append(f.restored, db.ID+" "+backup.ID)
	delay := f.restoreDelay
	f.mu.Unlock()
	go func() {
		time.Sleep(delay)
		_ = f.cat.SetDatabaseStatus(db.ID, catalog.StatusReady, "")
	}()
}

func (f *fakeBackups) ProvisionFromBackup(db catalog.Database, backup catalog.Backup) {
	f.mu.Lock()
	f.provisioned = append(f.provisioned, db.ID+" "+backup.ID)
	f.mu.Unlock()
	_ = f.cat.SetDatabaseStatus(db.ID, catalog.StatusReady, "")
}

func (f *fakeBackups) calls() (exported, restored, provisioned []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.exported), slices.Clone(f.restored), slices.Clone(f.provisioned)
}

// addBackup stores a backup of db with the given status, created at the
// given time.
func (e *testEnv) addBackup(db *sdb.Database, status catalog.BackupStatus, createdAt time.Time) catalog.Backup {
	e.t.Helper()
	size, databaseSize := uint64(8192), uint64(65536)
	expiresAt := createdAt.Add(7 * 24 * time.Hour)
	backup := catalog.Backup{
		ID:             uuid.NewString(),
		OrganizationID: db.OrganizationID,
		ProjectID:      db.ProjectID,
		DatabaseID:     db.ID,
		Region:         string(db.Region),
		Status:         status,
		CreatedAt:      createdAt,
		ExpiresAt:      &expiresAt,
		Size:           &size,
		DatabaseSize:   &databaseSize,
	}
	if err := e.cat.Update(func(tx *catalog.Tx) error { return tx.PutBackup(backup) }); err != nil {
		e.t.Fatal(err)
	}
	return backup
}

func TestBackupsServedFromCatalog(t *testing.T) {
	env := newTestEnv(t)
	db := env.createDatabase("backed-up")
	other := env.createDatabase("other")
	base := time.Date(2026, 3, 1, 4, 0, 0, 0, time.UTC)
	older := env.addBackup(db, catalog.BackupStatusReady, base)
	newer := env.addBackup(db, catalog.BackupStatusReady, base.Add(24*time.Hour))
	env.addBackup(other, catalog.BackupStatusReady, base)

	got, err := env.api.GetDatabaseBackup(&sdb.GetDatabaseBackupRequest{BackupID: older.ID})
	if err != nil {
		t.Fatal(err)
	}
	if got.DatabaseID != db.ID || got.Status != sdb.DatabaseBackupStatusReady || got.Region != scw.RegionFrPar ||
		got.Size == nil || *got.Size != 8192 || got.DbSize == nil || *got.DbSize != 65536 ||
		got.CreatedAt == nil || !got.CreatedAt.Equal(base) || got.ExpiresAt == nil || got.DownloadURL != nil {
		t.Errorf("GetDatabaseBackup = %+v", got)
	}

	list, err := env.api.ListDatabaseBackups(&sdb.ListDatabaseBackupsRequest{DatabaseID: db.ID}, scw.WithAllPages())
	if err != nil {
		t.Fatal(err)
	}
	if list.TotalCount != 2 || list.Backups[0].ID != newer.ID || list.Backups[1].ID != older.ID {
		t.Errorf("ListDatabaseBackups(database) = %+v, want newer then older", list.Backups)
	}
	asc, err := env.api.ListDatabaseBackups(&sdb.ListDatabaseBackupsRequest{OrderBy: sdb.ListDatabaseBackupsRequestOrderByCreatedAtAsc})
	if err != nil {
		t.Fatal(err)
	}
	if asc.TotalCount != 3 {
		t.Errorf("ListDatabaseBackups(all) total = %d, want 3", asc.TotalCount)
	}

	// A principal that may not read the project gets none of its backups.
	projectB := env.addProject(env.creds.OrganizationID)
	outsider := env.addMember(env.creds.OrganizationID, nil,
		catalog.Rule{PermissionSetNames: []string{"ServerlessSQLDatabaseReadOnly"}, ProjectIDs: []string{projectB}})
	outsiderAPI := env.sdkClient(outsider.accessKey, outsider.secretKey, projectB)
	hidden, err := outsiderAPI.ListDatabaseBackups(&sdb.ListDatabaseBackupsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if hidden.TotalCount != 0 {
		t.Errorf("outsider's list = %+v, want empty", hidden)
	}
	_, err = outsiderAPI.GetDatabaseBackup(&sdb.GetDatabaseBackupRequest{BackupID: older.ID})
	requireDenied(t, err, "read")

	t.Run("actions need a backup service", func(t *testing.T) {
		_, err := env.api.RestoreDatabaseFromBackup(&sdb.RestoreDatabaseFromBackupRequest{DatabaseID: db.ID, BackupID: older.ID})
		var response *scw.ResponseError
		if !errors.As(err, &response) || response.StatusCode != http.StatusNotImplemented || response.Type != "not_implemented" {
			t.Errorf("restore without a backup service: %T %v, want a 501 not_implemented", err, err)
		}
	})
}

func TestBackupActionsThroughService(t *testing.T) {
	filePath := filepath.Join(t.TempDir(), "backup.pg_dump")
	if err := os.WriteFile(filePath, []byte("PGDMP fake archive"), 0o600); err != nil {
		t.Fatal(err)
	}
	backups := &fakeBackups{filePath: filePath, restoreDelay: 300 * time.Millisecond}
	env := newTestEnv(t, func(cfg *Config) { cfg.Backups = backups })
	backups.cat = env.cat
	db := env.createDatabase("restorable")
	other := env.createDatabase("other")
	now := time.Now().UTC()
	ready := env.addBackup(db, catalog.BackupStatusReady, now)
	running := env.addBackup(db, catalog.BackupStatusUnknown, now)
	ofOther := env.addBackup(other, catalog.BackupStatusReady, now)

	t.Run("export", func(t *testing.T) {
		exported, err := env.api.ExportDatabaseBackup(&sdb.ExportDatabaseBackupRequest{BackupID: ready.ID})
		if err != nil {
			t.Fatal(err)
		}
		wantURL := env.srv.URL + "/serverless-sqldb/v1alpha1/regions/fr-par/backups/" + ready.ID + "/download?token=" + fakeToken(ready.ID)
		if exported.DownloadURL == nil || *exported.DownloadURL != wantURL {
			t.Errorf("download_url = %v, want %s", exported.DownloadURL, wantURL)
		}
		if exported.DownloadURLExpiresAt == nil || exported.DownloadURLExpiresAt.Before(time.Now()) {
			t.Errorf("download_url_expires_at = %v, want a time in the future", exported.DownloadURLExpiresAt)
		}
		stored, err := env.api.GetDatabaseBackup(&sdb.GetDatabaseBackupRequest{BackupID: ready.ID})
		if err != nil {
			t.Fatal(err)
		}
		if stored.DownloadURL == nil || *stored.DownloadURL != wantURL {
			t.Errorf("GetDatabaseBackup after export: download_url = %v, want %s", stored.DownloadURL, wantURL)
		}
		_, err = env.api.ExportDatabaseBackup(&sdb.ExportDatabaseBackupRequest{BackupID: running.ID})
		var failed *scw.PreconditionFailedError
		if !errors.As(err, &failed) {
			t.Errorf("export of a running backup: %T %v, want *scw.PreconditionFailedError", err, err)
		}
		reader := env.addMember(env.creds.OrganizationID, nil,
			catalog.Rule{PermissionSetNames: []string{"ServerlessSQLDatabaseReadOnly"}, ProjectIDs: []string{env.creds.ProjectID}})
		_, err = env.sdkClient(reader.accessKey, reader.secretKey, env.creds.ProjectID).ExportDatabaseBackup(&sdb.ExportDatabaseBackupRequest{BackupID: ready.ID})
		requireDenied(t, err, "export")
	})

	t.Run("download", func(t *testing.T) {
		path := "/serverless-sqldb/v1alpha1/regions/fr-par/backups/" + ready.ID + "/download?token="
		resp := env.do(http.MethodGet, path+fakeToken(ready.ID), "", "", nil)
		if resp.status != http.StatusOK || string(resp.body) != "PGDMP fake archive" {
			t.Errorf("download with the token: status %d, body %q", resp.status, resp.body)
		}
		if got := resp.header.Get("Content-Disposition"); got != `attachment; filename=`+ready.ID+`.pg_dump` {
			t.Errorf("Content-Disposition = %q", got)
		}
		if got := resp.header.Get("Content-Type"); got != "application/octet-stream" {
			t.Errorf("Content-Type = %q, want application/octet-stream", got)
		}

		denied := map[string]string{
			"tampered token":         path + fakeToken(ready.ID) + "x",
			"no token":               "/serverless-sqldb/v1alpha1/regions/fr-par/backups/" + ready.ID + "/download",
			"another backup's token": path + fakeToken(ofOther.ID),
			"unknown backup":         "/serverless-sqldb/v1alpha1/regions/fr-par/backups/" + uuid.NewString() + "/download?token=x",
			"malformed backup ID":    "/serverless-sqldb/v1alpha1/regions/fr-par/backups/..%2F..%2Fetc/download?token=x",
			"region the API lacks":   "/serverless-sqldb/v1alpha1/regions/nl-ams/backups/" + ready.ID + "/download?token=" + fakeToken(ready.ID),
		}
		for name, url := range denied {
			resp := env.do(http.MethodGet, url, "", "", nil)
			if resp.status != http.StatusForbidden {
				t.Errorf("%s: status %d, want 403; body %s", name, resp.status, resp.body)
				continue
			}
			if body := resp.decode(t); body["type"] != "permissions_denied" || body["message"] == "" {
				t.Errorf("%s: body %s, want a permissions_denied error with a message", name, resp.body)
			}
		}

		if resp := env.do(http.MethodPost, path+fakeToken(ready.ID), "", "", nil); resp.status != http.StatusMethodNotAllowed {
			t.Errorf("POST on the download URL: status %d, want 405", resp.status)
		}
	})

	t.Run("create", func(t *testing.T) {
		resp := env.ownerDo(http.MethodPost, "/serverless-sqldb/v1alpha1/regions/fr-par/backups", `{"database_id":"`+db.ID+`"}`)
		if resp.status != http.StatusOK {
			t.Fatalf("POST /backups: status %d, body %s", resp.status, resp.body)
		}
		body := resp.decode(t)
		if body["database_id"] != db.ID || body["status"] != "unknown_status" || body["id"] == "" {
			t.Errorf("POST /backups returned %s, want a backup of %s in unknown_status", resp.body, db.ID)
		}
		requireRawArgumentError(t, env.ownerDo(http.MethodPost, "/serverless-sqldb/v1alpha1/regions/fr-par/backups", `{}`), "database_id", "required")
		if resp := env.ownerDo(http.MethodPost, "/serverless-sqldb/v1alpha1/regions/fr-par/backups", `{"database_id":"`+uuid.NewString()+`"}`); resp.status != http.StatusNotFound {
			t.Errorf("POST /backups for an unknown database: status %d, want 404", resp.status)
		}
		reader := env.addMember(env.creds.OrganizationID, nil,
			catalog.Rule{PermissionSetNames: []string{"ServerlessSQLDatabaseReadOnly"}, ProjectIDs: []string{env.creds.ProjectID}})
		denied := env.do(http.MethodPost, "/serverless-sqldb/v1alpha1/regions/fr-par/backups", reader.secretKey, "application/json", strings.NewReader(`{"database_id":"`+db.ID+`"}`))
		if denied.status != http.StatusForbidden {
			t.Errorf("POST /backups as a ReadOnly member: status %d, want 403", denied.status)
		}
	})

	t.Run("restore another database's backup", func(t *testing.T) {
		_, err := env.api.RestoreDatabaseFromBackup(&sdb.RestoreDatabaseFromBackupRequest{DatabaseID: db.ID, BackupID: ofOther.ID})
		detail := requireArgumentError(t, err)
		if detail.ArgumentName != "backup_id" || detail.Reason != "constraint" {
			t.Errorf("detail = %+v, want backup_id constraint", detail)
		}
	})

	t.Run("restore", func(t *testing.T) {
		restoring, err := env.api.RestoreDatabaseFromBackup(&sdb.RestoreDatabaseFromBackupRequest{DatabaseID: db.ID, BackupID: ready.ID})
		if err != nil {
			t.Fatal(err)
		}
		if restoring.Status != sdb.DatabaseStatusRestoring {
			t.Errorf("status = %s, want restoring", restoring.Status)
		}
		// A second restore while the first runs is a transient state.
		_, err = env.api.RestoreDatabaseFromBackup(&sdb.RestoreDatabaseFromBackupRequest{DatabaseID: db.ID, BackupID: ready.ID})
		var transient *scw.TransientStateError
		if !errors.As(err, &transient) || transient.CurrentState != "restoring" {
			t.Errorf("second restore: %T %v, want transient_state restoring", err, err)
		}
		waited, err := env.api.WaitForDatabase(&sdb.WaitForDatabaseRequest{
			DatabaseID:    db.ID,
			Timeout:       scw.TimeDurationPtr(5 * time.Second),
			RetryInterval: scw.TimeDurationPtr(20 * time.Millisecond),
		})
		if err != nil {
			t.Fatal(err)
		}
		if waited.Status != sdb.DatabaseStatusReady {
			t.Errorf("after restore: status %s, want ready", waited.Status)
		}
	})

	t.Run("create from backup", func(t *testing.T) {
		before := len(env.inst.provisionedIDs())
		created, err := env.api.CreateDatabase(&sdb.CreateDatabaseRequest{Name: "copy", CPUMax: 1, FromBackupID: &ofOther.ID})
		if err != nil {
			t.Fatal(err)
		}
		if got := len(env.inst.provisionedIDs()); got != before {
			t.Errorf("instance manager provisioned %d databases, want the backup service to provision instead", got-before)
		}
		_, _, provisioned := backups.calls()
		if !slices.Contains(provisioned, created.ID+" "+ofOther.ID) {
			t.Errorf("provisioned from backup = %v, want %s from %s", provisioned, created.ID, ofOther.ID)
		}
	})

	exported, restored, _ := backups.calls()
	if !slices.Equal(exported, []string{ready.ID}) || !slices.Equal(restored, []string{db.ID + " " + ready.ID}) {
		t.Errorf("exported %v, restored %v; want one export and one restore of %s", exported, restored, ready.ID)
	}
	backups.mu.Lock()
	created := slices.Clone(backups.created)
	backups.mu.Unlock()
	if !slices.Equal(created, []string{db.ID}) {
		t.Errorf("created backups of %v, want one of %s", created, db.ID)
	}
}
