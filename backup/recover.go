package backup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/sdblocal/sdblocal/auth"
	"github.com/sdblocal/sdblocal/catalog"
)

// Recover repairs what an sdblocal that stopped during a backup or a
// restore left behind. Call it once, before the instance manager starts.
//
//   - A backup left in unknown_status was cut short: it becomes error.
//   - An unfinished restore is resumed by Start. It starts again from the
//     beginning, because the database's contents change only at the final
//     rename. A database being created from a backup is set to restoring,
//     so that the instance manager does not provision it empty.
//   - A restore whose backup is gone ends: the database keeps its contents
//     and becomes ready, or becomes error when it was being created.
//   - A database left restoring with no job becomes ready: the job is
//     recorded before a restore touches anything.
//   - A locked backup that no restore reads becomes ready.
//   - Temporary files, and files that belong to no ready or locked backup,
//     are deleted.
func (s *Service) Recover() error {
	var resumed []catalog.RestoreJob
	err := s.cat.Update(func(tx *catalog.Tx) error {
		var err error
		resumed, err = s.recoverRecords(tx)
		return err
	})
	if err != nil {
		return fmt.Errorf("recover interrupted backups and restores: %w", err)
	}
	s.mu.Lock()
	s.resumed = resumed
	s.mu.Unlock()
	return s.removeStrayFiles()
}

// recoverRecords makes the catalog changes of Recover and returns the jobs
// to resume.
func (s *Service) recoverRecords(tx *catalog.Tx) ([]catalog.RestoreJob, error) {
	backups, err := tx.Backups(nil)
	if err != nil {
		return nil, err
	}
	byID := map[string]catalog.Backup{}
	for _, b := range backups {
		if b.Status == catalog.BackupStatusUnknown {
			b.Status = catalog.BackupStatusError
			b.StatusMessage = "sdblocal stopped while the backup was being taken"
			if err := tx.PutBackup(b); err != nil {
				return nil, err
			}
			s.log.Warn("backup interrupted by a stop of sdblocal; marked error", "backup_id", b.ID, "database_id", b.DatabaseID)
		}
		byID[b.ID] = b
	}

	jobs, err := tx.RestoreJobs()
	if err != nil {
		return nil, err
	}
	var resumed []catalog.RestoreJob
	withJob := map[string]bool{}
	reading := map[string]bool{}
	for _, job := range jobs {
		keep, err := s.recoverJob(tx, job, byID)
		if err != nil {
			return nil, err
		}
		if !keep {
			if err := tx.DeleteRestoreJob(job.DatabaseID); err != nil {
				return nil, err
			}
			continue
		}
		resumed = append(resumed, job)
		withJob[job.DatabaseID] = true
		reading[job.BackupID] = true
	}

	for _, b := range byID {
		if b.Status == catalog.BackupStatusLocked && !reading[b.ID] {
			b.Status = catalog.BackupStatusReady
			if err := tx.PutBackup(b); err != nil {
				return nil, err
			}
		}
	}

	restoring, err := tx.Databases(func(db *catalog.Database) bool {
		return db.Status == catalog.StatusRestoring && !withJob[db.ID]
	})
	if err != nil {
		return nil, err
	}
	for _, db := range restoring {
		db.Status = catalog.StatusReady
		if err := tx.PutDatabase(db); err != nil {
			return nil, err
		}
		s.log.Warn("database left restoring before its restore started; set back to ready", "database_id", db.ID)
	}
	return resumed, nil
}

// recoverJob decides the fate of one unfinished restore and reports
// whether to resume it.
func (s *Service) recoverJob(tx *catalog.Tx, job catalog.RestoreJob, backups map[string]catalog.Backup) (bool, error) {
	db, err := tx.Database(job.DatabaseID)
	if errors.Is(err, catalog.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	// A job whose database has left the job's status finished, and only
	// the job's deletion was lost.
	running := db.Status == catalog.StatusRestoring || (job.IntoNew && db.Status == catalog.StatusCreating)
	if !running {
		return false, nil
	}

	b, ok := backups[job.BackupID]
	usable := ok && (b.Status == catalog.BackupStatusReady || b.Status == catalog.BackupStatusLocked)
	if usable {
		path, err := s.filePath(b)
		usable = err == nil && fileExists(path)
	}
	if !usable {
		s.metrics.restores.WithLabelValues(outcomeError).Inc()
		s.log.Error("restore interrupted and cannot resume: its backup is gone", "database_id", db.ID, "backup_id", job.BackupID, "into_new_database", job.IntoNew)
		if job.IntoNew {
			db.Status = catalog.StatusError
			db.StatusMessage = fmt.Sprintf("creation from backup %s was interrupted and the backup is gone", job.BackupID)
		} else {
			db.Status = catalog.StatusReady
		}
		return false, tx.PutDatabase(db)
	}

	if job.IntoNew && db.Status == catalog.StatusCreating {
		db.Status = catalog.StatusRestoring
		if err := tx.PutDatabase(db); err != nil {
			return false, err
		}
	}
	if b.Status != catalog.BackupStatusLocked {
		b.Status = catalog.BackupStatusLocked
		backups[b.ID] = b
		if err := tx.PutBackup(b); err != nil {
			return false, err
		}
	}
	return true, nil
}

// removeStrayFiles deletes everything in the backup directory that is not
// the file of a ready or locked backup: temporary files of cut-short
// dumps, files whose record is gone or failed, and empty directories.
func (s *Service) removeStrayFiles() error {
	keep := map[string]bool{}
	err := s.cat.View(func(tx *catalog.Tx) error {
		backups, err := tx.Backups(func(b *catalog.Backup) bool {
			return b.Status == catalog.BackupStatusReady || b.Status == catalog.BackupStatusLocked
		})
		for _, b := range backups {
			if path, err := s.filePath(b); err == nil {
				keep[path] = true
			}
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("list backups: %w", err)
	}

	dirs, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("read backup directory: %w", err)
	}
	for _, dir := range dirs {
		// Only what sdblocal itself writes is removed: database
		// directories named by UUID and the files in them.
		if !dir.IsDir() || !auth.ValidUUID(dir.Name()) {
			continue
		}
		dirPath := filepath.Join(s.dir, dir.Name())
		files, err := os.ReadDir(dirPath)
		if err != nil {
			return fmt.Errorf("read backup directory: %w", err)
		}
		for _, f := range files {
			path := filepath.Join(dirPath, f.Name())
			name := f.Name()
			ours := strings.HasSuffix(name, fileExtension) || strings.HasSuffix(name, fileExtension+tempSuffix)
			if keep[path] || !ours {
				continue
			}
			if err := os.Remove(path); err != nil {
				return fmt.Errorf("remove stray backup file: %w", err)
			}
			s.log.Info("stray backup file removed", "path", path)
		}
		// Fails, harmlessly, unless the directory is now empty.
		_ = os.Remove(dirPath)
	}
	return nil
}

func fileExists(path string) bool {
	info, err := os.Lstat(path)
	return err == nil && info.Mode().IsRegular()
}
