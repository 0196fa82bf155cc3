package backup

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/sdblocal/sdblocal/catalog"
)

// retentionCheckInterval is how often expired backups are looked for: a
// twentieth of the retention, between 100 ms and 1 minute, so a backup
// outlives its expires_at by at most that long.
func (s *Service) retentionCheckInterval() time.Duration {
	return min(max(s.cfg.Retention/20, 100*time.Millisecond), time.Minute)
}

func (s *Service) retentionLoop(ctx context.Context) {
	ticker := time.NewTicker(s.retentionCheckInterval())
	defer ticker.Stop()
	for {
		s.deleteExpired(s.cfg.Now())
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// deleteExpired deletes the backups whose expires_at has passed, record
// first and file second, so a crash in between leaves an orphan file that
// the next start removes rather than a record without its file. A backup
// being taken or restored is kept until it settles. Empty database
// directories stay until the next start, because a dump may be about to
// write into one.
func (s *Service) deleteExpired(now time.Time) int {
	var expired []catalog.Backup
	err := s.cat.Update(func(tx *catalog.Tx) error {
		var err error
		expired, err = tx.Backups(func(b *catalog.Backup) bool {
			return b.ExpiresAt != nil && !now.Before(*b.ExpiresAt) &&
				(b.Status == catalog.BackupStatusReady || b.Status == catalog.BackupStatusError)
		})
		if err != nil {
			return err
		}
		for _, b := range expired {
			if err := tx.DeleteBackup(b.ID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.log.Error("could not delete expired backups", "error", err)
		return 0
	}
	for _, b := range expired {
		path, err := s.filePath(b)
		if err == nil {
			err = os.Remove(path)
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("could not remove the file of an expired backup; the next start removes it", "backup_id", b.ID, "database_id", b.DatabaseID, "error", err)
		}
		s.log.Info("expired backup deleted", "backup_id", b.ID, "database_id", b.DatabaseID, "expires_at", b.ExpiresAt.Format(time.RFC3339))
	}
	return len(expired)
}
