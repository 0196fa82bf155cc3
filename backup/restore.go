package backup

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sdblocal/sdblocal/autoscale"
	"github.com/sdblocal/sdblocal/catalog"
)

// Restore method. A backup never loads into the live database. The service
// creates a scratch database beside it in the same instance and sets it up
// as provisioning sets up a database: owner, grants and event trigger. It
// runs pg_restore into it as role_admin, so every restored object belongs
// to role_admin as if a principal had created it. Then it swaps the scratch
// database in by renaming, so a failed pg_restore leaves the database as
// it was.

// Names of the scratch databases. Database names from the API contain no
// underscore, so these cannot be a user's database.
const (
	scratchDatabase  = "sdblocal_restore"
	replacedDatabase = "sdblocal_replaced"
)

// Restore overwrites db's contents with the backup in the background. The
// API has set db's status to restoring; Restore locks the backup, and sets
// the status back to ready when done. A failed restore leaves the contents
// as they were, with status ready and the cause in the log.
func (s *Service) Restore(db catalog.Database, backup catalog.Backup) {
	job := catalog.RestoreJob{DatabaseID: db.ID, BackupID: backup.ID, StartedAt: s.cfg.Now().UTC()}
	if err := s.startJob(job); err != nil {
		s.recordRestore(job, 0, err)
		_ = s.setDatabaseStatus(db.ID, catalog.StatusReady, "")
		return
	}
	// When the service is closing the job stays recorded, and the next
	// start resumes it.
	s.goTask(func(ctx context.Context) { s.restoreInPlace(ctx, job) })
}

// ProvisionFromBackup creates db's instance and loads the backup into it in
// the background. The API has stored db in status creating; the status
// becomes ready when the data is in, or error.
func (s *Service) ProvisionFromBackup(db catalog.Database, backup catalog.Backup) {
	job := catalog.RestoreJob{DatabaseID: db.ID, BackupID: backup.ID, IntoNew: true, StartedAt: s.cfg.Now().UTC()}
	if err := s.startJob(job); err != nil {
		s.recordRestore(job, 0, err)
		_ = s.setDatabaseStatus(db.ID, catalog.StatusError, err.Error())
		return
	}
	s.goTask(func(ctx context.Context) { s.restoreIntoNew(ctx, job) })
}

// resume restarts a job that Recover found unfinished.
func (s *Service) resume(job catalog.RestoreJob) {
	s.log.Info("resuming interrupted restore", "database_id", job.DatabaseID, "backup_id", job.BackupID, "into_new_database", job.IntoNew)
	if job.IntoNew {
		s.goTask(func(ctx context.Context) { s.restoreIntoNew(ctx, job) })
		return
	}
	s.goTask(func(ctx context.Context) { s.restoreInPlace(ctx, job) })
}

// startJob records the job and locks its backup, which must be ready or
// already locked by another restore.
func (s *Service) startJob(job catalog.RestoreJob) error {
	return s.cat.Update(func(tx *catalog.Tx) error {
		b, err := tx.Backup(job.BackupID)
		if errors.Is(err, catalog.ErrNotFound) {
			return fmt.Errorf("backup %s no longer exists", job.BackupID)
		}
		if err != nil {
			return err
		}
		if b.Status != catalog.BackupStatusReady && b.Status != catalog.BackupStatusLocked {
			return fmt.Errorf("backup %s is %s: only a ready backup can be restored", b.ID, b.Status)
		}
		b.Status = catalog.BackupStatusLocked
		if err := tx.PutBackup(b); err != nil {
			return err
		}
		return tx.PutRestoreJob(job)
	})
}

// finishJob deletes the job and unlocks its backup unless another job
// still reads it. It runs in the caller's transaction.
func finishJob(tx *catalog.Tx, job catalog.RestoreJob) error {
	if err := tx.DeleteRestoreJob(job.DatabaseID); err != nil {
		return err
	}
	jobs, err := tx.RestoreJobs()
	if err != nil {
		return err
	}
	for _, other := range jobs {
		if other.BackupID == job.BackupID {
			return nil
		}
	}
	b, err := tx.Backup(job.BackupID)
	if errors.Is(err, catalog.ErrNotFound) {
		return nil
	}
	if err != nil || b.Status != catalog.BackupStatusLocked {
		return err
	}
	b.Status = catalog.BackupStatusReady
	return tx.PutBackup(b)
}

// restoreInPlace runs an in-place restore job to its end.
func (s *Service) restoreInPlace(ctx context.Context, job catalog.RestoreJob) {
	started := time.Now()
	err := s.runJob(ctx, job, func(b catalog.Backup) error {
		inst, err := s.instances.Instance(job.DatabaseID)
		if err != nil {
			return err
		}
		return s.restoreInto(ctx, inst, b)
	})
	if err != nil && ctx.Err() != nil {
		s.log.Warn("restore interrupted by shutdown; the next start resumes it", "database_id", job.DatabaseID, "backup_id", job.BackupID, "error", err)
		return
	}
	// Success or not, the database's data is whole: the new contents, or
	// the old ones because nothing was swapped in.
	s.endJob(job, catalog.StatusReady, "", time.Since(started), err)
}

// restoreIntoNew runs a create-from-backup job to its end: provisioning,
// loading, then status ready and the database's CPU limits.
func (s *Service) restoreIntoNew(ctx context.Context, job catalog.RestoreJob) {
	started := time.Now()
	var db catalog.Database
	err := s.cat.View(func(tx *catalog.Tx) error {
		var err error
		db, err = tx.Database(job.DatabaseID)
		return err
	})
	if err == nil {
		err = s.runJob(ctx, job, func(b catalog.Backup) error {
			inst, err := s.instances.ProvisionInstance(ctx, db)
			if err != nil {
				return fmt.Errorf("provision instance: %w", err)
			}
			return s.restoreInto(ctx, inst, b)
		})
	}
	if err != nil && ctx.Err() != nil {
		s.log.Warn("creation from backup interrupted by shutdown; the next start resumes it", "database_id", job.DatabaseID, "backup_id", job.BackupID, "error", err)
		return
	}
	if err != nil {
		s.endJob(job, catalog.StatusError, err.Error(), time.Since(started), err)
		return
	}
	if statusErr := s.endJob(job, catalog.StatusReady, "", time.Since(started), nil); errors.Is(statusErr, catalog.ErrNotFound) {
		// The API rejects deleting a database in creating, so this is
		// only a record removed by hand; do not leave its instance behind.
		s.instances.Remove(db.ID)
		return
	}
	s.instances.SetCPU(db.ID, db.CPUMin, db.CPUMax)
}

// runJob reads the job's backup and runs load with it, holding the
// database's turn so no backup of it runs at the same time.
func (s *Service) runJob(ctx context.Context, job catalog.RestoreJob, load func(catalog.Backup) error) error {
	unlock, err := s.lockDatabase(ctx, job.DatabaseID)
	if err != nil {
		return err
	}
	defer unlock()
	var b catalog.Backup
	err = s.cat.View(func(tx *catalog.Tx) error {
		var err error
		b, err = tx.Backup(job.BackupID)
		return err
	})
	if err != nil {
		return fmt.Errorf("read backup %s: %w", job.BackupID, err)
	}
	return load(b)
}

// endJob sets the database's status, finishes the job in the same
// transaction, and records the outcome. It returns catalog.ErrNotFound
// when the database record is gone.
func (s *Service) endJob(job catalog.RestoreJob, status catalog.DatabaseStatus, message string, duration time.Duration, restoreErr error) error {
	gone := false
	err := s.cat.Update(func(tx *catalog.Tx) error {
		if err := finishJob(tx, job); err != nil {
			return err
		}
		db, err := tx.Database(job.DatabaseID)
		if errors.Is(err, catalog.ErrNotFound) {
			// Commit the finished job all the same.
			gone = true
			return nil
		}
		if err != nil {
			return err
		}
		db.Status = status
		db.StatusMessage = message
		return tx.PutDatabase(db)
	})
	if err != nil {
		s.log.Error("could not record the end of a restore", "database_id", job.DatabaseID, "backup_id", job.BackupID, "error", err)
	}
	s.recordRestore(job, duration, restoreErr)
	if gone {
		return catalog.ErrNotFound
	}
	return err
}

// recordRestore counts and logs the outcome of a restore.
func (s *Service) recordRestore(job catalog.RestoreJob, duration time.Duration, err error) {
	kind := "in place"
	if job.IntoNew {
		kind = "into a new database"
	}
	if err != nil {
		s.metrics.restores.WithLabelValues(outcomeError).Inc()
		s.log.Error("restore failed", "database_id", job.DatabaseID, "backup_id", job.BackupID, "kind", kind, "duration", duration, "error", err)
		return
	}
	s.metrics.restores.WithLabelValues(outcomeSuccess).Inc()
	s.log.Info("restore finished", "database_id", job.DatabaseID, "backup_id", job.BackupID, "kind", kind, "duration", duration)
}

// restoreInto replaces the contents of the instance's database with the
// backup. It ends the database's client sessions and keeps new ones out
// until it returns.
func (s *Service) restoreInto(ctx context.Context, inst *autoscale.Instance, b catalog.Backup) error {
	path, err := s.filePath(b)
	if err != nil {
		return err
	}
	hold, err := inst.TakeExclusive(ctx, "is being restored")
	if err != nil {
		return fmt.Errorf("wake database: %w", err)
	}
	defer hold.Release()

	target := inst.DatabaseName()
	admin, err := connect(ctx, inst, maintenanceDatabase(target), autoscale.Superuser)
	if err != nil {
		return err
	}
	defer admin.Close(context.Background())

	// Scratch databases of an attempt that failed or was interrupted.
	for _, name := range []string{scratchDatabase, replacedDatabase} {
		if err := execSQL(ctx, admin, "DROP DATABASE IF EXISTS "+quote(name)+" WITH (FORCE)"); err != nil {
			return err
		}
	}
	if err := execSQL(ctx, admin, "CREATE DATABASE "+quote(scratchDatabase)+" TEMPLATE template0 OWNER "+quote(autoscale.OwnerRole)); err != nil {
		return err
	}
	err = s.loadScratch(ctx, inst, path)
	if err == nil {
		// A shutdown must not stop the swap halfway, so it runs on a
		// context of its own; it takes milliseconds unless sessions linger.
		swapCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*renameTimeout)
		err = swapDatabase(swapCtx, admin, target)
		cancel()
	}
	if err != nil {
		// Best effort, with a context of its own because ctx may be the
		// one that ended; the next attempt drops it anyway.
		cleanup, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = execSQL(cleanup, admin, "DROP DATABASE IF EXISTS "+quote(scratchDatabase)+" WITH (FORCE)")
		return err
	}
	return nil
}

// loadScratch sets the scratch database up, restores the backup file into
// it, and sets it up again, which grants the permission-set roles their
// rights on the restored tables and sequences.
func (s *Service) loadScratch(ctx context.Context, inst *autoscale.Instance, path string) error {
	if err := bootstrapDatabase(ctx, inst, scratchDatabase); err != nil {
		return err
	}
	// pg_restore connects as role_admin, not as the superuser: the archive
	// runs with no more rights than a principal has, and what it creates
	// is role_admin's. --single-transaction makes a failure leave nothing.
	cmd := exec.CommandContext(ctx, s.cfg.Tools.PGRestore,
		"--no-owner",
		"--no-privileges",
		"--exit-on-error",
		"--single-transaction",
		"--no-password",
		"--host="+inst.SocketDir(),
		"--port="+strconv.Itoa(int(inst.SocketPort())),
		"--username="+autoscale.RoleAdmin,
		"--dbname="+scratchDatabase,
		path,
	)
	if err := runTool(cmd); err != nil {
		return err
	}
	return bootstrapDatabase(ctx, inst, scratchDatabase)
}

// bootstrapDatabase runs the database bootstrap SQL in dbName as the
// superuser, in one transaction.
func bootstrapDatabase(ctx context.Context, inst *autoscale.Instance, dbName string) error {
	conn, err := connect(ctx, inst, dbName, autoscale.Superuser)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		for _, stmt := range autoscale.DatabaseBootstrapSQL(dbName) {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("set up database %s: SQL %q: %w", dbName, stmt, err)
			}
		}
		return nil
	})
}

// swapDatabase puts the scratch database in target's place and drops the
// old one. Renaming needs every other session of the database gone, so
// backends that linger after their client was terminated are ended first.
//
// NOTE: target does not exist between the two renames. If sdblocal dies
// exactly then, the instance cannot wake, because each wake connects to
// target; rename sdblocal_replaced back by hand.
func swapDatabase(ctx context.Context, admin *pgx.Conn, target string) error {
	if err := renameDatabase(ctx, admin, target, replacedDatabase); err != nil {
		return err
	}
	if err := renameDatabase(ctx, admin, scratchDatabase, target); err != nil {
		// Put the original back, so the database keeps its old contents.
		if undoErr := renameDatabase(context.Background(), admin, replacedDatabase, target); undoErr != nil {
			return fmt.Errorf("%w; renaming %s back to %s also failed: %v", err, replacedDatabase, target, undoErr)
		}
		return err
	}
	return execSQL(ctx, admin, "DROP DATABASE "+quote(replacedDatabase)+" WITH (FORCE)")
}

// renameTimeout bounds the wait for a database's sessions to end.
const renameTimeout = 10 * time.Second

// renameDatabase renames a database once no other session uses it,
// terminating the sessions that remain.
func renameDatabase(ctx context.Context, admin *pgx.Conn, from, to string) error {
	deadline := time.Now().Add(renameTimeout)
	for {
		_, err := admin.Exec(ctx, "ALTER DATABASE "+quote(from)+" RENAME TO "+quote(to))
		var pgErr *pgconn.PgError
		if err == nil || !errors.As(err, &pgErr) || pgErr.Code != "55006" || time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("rename database %s to %s: %w", from, to, err)
			}
			return nil
		}
		// 55006 object_in_use: "database is being accessed by other users".
		_, err = admin.Exec(ctx, "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity WHERE datname = $1 AND pid <> pg_catalog.pg_backend_pid()", from)
		if err != nil {
			return fmt.Errorf("end the sessions of database %s: %w", from, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// maintenanceDatabase is the database the superuser connects to while it
// creates, renames and drops others: postgres, or template1 when the
// user's database is itself called postgres.
func maintenanceDatabase(target string) string {
	if target == "postgres" {
		return "template1"
	}
	return "postgres"
}

func execSQL(ctx context.Context, conn *pgx.Conn, sql string) error {
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("SQL %q: %w", sql, err)
	}
	return nil
}

func quote(name string) string { return pgx.Identifier{name}.Sanitize() }
