package catalog

import (
	"fmt"
	"time"
)

// BackupStatus is the status of a backup, with the values of the Scaleway
// serverless-sqldb v1alpha1 DatabaseBackupStatus enum. A backup being taken
// is unknown_status, which the SDK's WaitForDatabaseBackup waits through.
type BackupStatus string

const (
	BackupStatusUnknown BackupStatus = "unknown_status"
	BackupStatusError   BackupStatus = "error"
	BackupStatusReady   BackupStatus = "ready"
	BackupStatusLocked  BackupStatus = "locked"
)

// Backup is a logical backup of one database. Backups outlive their
// database until they expire, so DatabaseID may name a deleted database.
type Backup struct {
	ID             string       `json:"id"`
	OrganizationID string       `json:"organization_id"`
	ProjectID      string       `json:"project_id"`
	DatabaseID     string       `json:"database_id"`
	Region         string       `json:"region"`
	Status         BackupStatus `json:"status"`
	CreatedAt      time.Time    `json:"created_at"`
	ExpiresAt      *time.Time   `json:"expires_at,omitempty"`
	// Size is the backup file's size in bytes, nil until it is known.
	Size *uint64 `json:"size,omitempty"`
	// DatabaseSize is the database's size in bytes when the backup was
	// taken, nil until it is known.
	DatabaseSize *uint64 `json:"database_size,omitempty"`
	// DownloadURL is empty until an export of the backup is ready.
	DownloadURL          string     `json:"download_url,omitempty"`
	DownloadURLExpiresAt *time.Time `json:"download_url_expires_at,omitempty"`
	// StatusMessage explains an error status; it is logged, not served.
	StatusMessage string `json:"status_message,omitempty"`
}

// bucketBackups is created by the first PutBackup rather than by Open, so a
// catalog written before backups existed needs no schema migration.
var bucketBackups = []byte("backups")

// PutBackup stores b, replacing any record with its ID. It must run in an
// Update transaction.
func (t *Tx) PutBackup(b Backup) error {
	if _, err := t.tx.CreateBucketIfNotExists(bucketBackups); err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketBackups, err)
	}
	return put(t.tx, bucketBackups, b.ID, b)
}

// Backup returns the backup with the given ID.
func (t *Tx) Backup(id string) (Backup, error) {
	var b Backup
	if t.tx.Bucket(bucketBackups) == nil {
		return b, ErrNotFound
	}
	return b, get(t.tx, bucketBackups, id, &b)
}

// Backups returns the backups that keep accepts (all when keep is nil),
// oldest first.
func (t *Tx) Backups(keep func(*Backup) bool) ([]Backup, error) {
	if t.tx.Bucket(bucketBackups) == nil {
		return nil, nil
	}
	out, err := list(t.tx, bucketBackups, keep)
	if err != nil {
		return nil, err
	}
	byCreation(out, func(b *Backup) time.Time { return b.CreatedAt }, func(b *Backup) string { return b.ID })
	return out, nil
}

// DeleteBackup removes the backup with the given ID. It returns ErrNotFound
// when the backup does not exist.
func (t *Tx) DeleteBackup(id string) error {
	bucket := t.tx.Bucket(bucketBackups)
	if bucket == nil || bucket.Get([]byte(id)) == nil {
		return ErrNotFound
	}
	return bucket.Delete([]byte(id))
}

// RestoreJob records a restore that has started and not finished, so that
// a restart of sdblocal can resume it. It is keyed by the database being
// written, and the backup it reads stays locked while any job names it.
type RestoreJob struct {
	DatabaseID string `json:"database_id"`
	BackupID   string `json:"backup_id"`
	// IntoNew marks a database created from the backup, as opposed to a
	// restore over an existing database's contents.
	IntoNew   bool      `json:"into_new"`
	StartedAt time.Time `json:"started_at"`
}

// bucketRestoreJobs is created by the first PutRestoreJob, like
// bucketBackups.
var bucketRestoreJobs = []byte("restore_jobs")

// PutRestoreJob stores j, replacing any job for the same database. It must
// run in an Update transaction.
func (t *Tx) PutRestoreJob(j RestoreJob) error {
	if _, err := t.tx.CreateBucketIfNotExists(bucketRestoreJobs); err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketRestoreJobs, err)
	}
	return put(t.tx, bucketRestoreJobs, j.DatabaseID, j)
}

// RestoreJobs returns every unfinished restore, in no particular order.
func (t *Tx) RestoreJobs() ([]RestoreJob, error) {
	if t.tx.Bucket(bucketRestoreJobs) == nil {
		return nil, nil
	}
	return list[RestoreJob](t.tx, bucketRestoreJobs, nil)
}

// DeleteRestoreJob removes the job of the database, if there is one.
func (t *Tx) DeleteRestoreJob(databaseID string) error {
	bucket := t.tx.Bucket(bucketRestoreJobs)
	if bucket == nil {
		return nil
	}
	return bucket.Delete([]byte(databaseID))
}
