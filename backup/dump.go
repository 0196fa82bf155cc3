package backup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/sdblocal/sdblocal/autoscale"
	"github.com/sdblocal/sdblocal/catalog"
)

// Create records a new backup of db in unknown_status and takes it in the
// background. The record turns ready or error when pg_dump ends.
func (s *Service) Create(db catalog.Database) (catalog.Backup, error) {
	b, err := s.newRecord(db)
	if err != nil {
		return catalog.Backup{}, err
	}
	if !s.goTask(func(ctx context.Context) { s.takeBackup(ctx, b) }) {
		s.finishBackup(b, 0, 0, 0, errors.New("sdblocal is shutting down"))
	}
	return b, nil
}

// newRecord stores a backup of db in unknown_status, expiring Retention
// after now.
func (s *Service) newRecord(db catalog.Database) (catalog.Backup, error) {
	// Truncated so the stored time equals the one the API serves.
	now := s.cfg.Now().UTC().Truncate(time.Microsecond)
	expiresAt := now.Add(s.cfg.Retention)
	b := catalog.Backup{
		ID:             uuid.NewString(),
		OrganizationID: db.OrganizationID,
		ProjectID:      db.ProjectID,
		DatabaseID:     db.ID,
		Region:         db.Region,
		Status:         catalog.BackupStatusUnknown,
		CreatedAt:      now,
		ExpiresAt:      &expiresAt,
	}
	if err := s.cat.Update(func(tx *catalog.Tx) error { return tx.PutBackup(b) }); err != nil {
		return catalog.Backup{}, fmt.Errorf("record backup of database %s: %w", db.ID, err)
	}
	return b, nil
}

// takeBackup runs pg_dump for the record b and records the outcome.
func (s *Service) takeBackup(ctx context.Context, b catalog.Backup) {
	started := time.Now()
	size, dbSize, err := s.dump(ctx, b)
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("interrupted because sdblocal is shutting down: %w", err)
	}
	s.finishBackup(b, size, dbSize, time.Since(started), err)
}

// finishBackup records the outcome of a dump in the catalog, the metrics
// and the log.
func (s *Service) finishBackup(b catalog.Backup, size, dbSize uint64, duration time.Duration, dumpErr error) {
	outcome := outcomeSuccess
	err := s.cat.Update(func(tx *catalog.Tx) error {
		current, err := tx.Backup(b.ID)
		if err != nil {
			return err
		}
		if dumpErr != nil {
			current.Status = catalog.BackupStatusError
			current.StatusMessage = dumpErr.Error()
		} else {
			current.Status = catalog.BackupStatusReady
			current.Size = &size
			current.DatabaseSize = &dbSize
		}
		return tx.PutBackup(current)
	})
	switch {
	case err != nil && dumpErr == nil:
		dumpErr = fmt.Errorf("record the finished backup: %w", err)
	case err != nil:
		// The record stays in unknown_status until the next start marks
		// it error.
		s.log.Error("could not record the failed backup", "backup_id", b.ID, "database_id", b.DatabaseID, "error", err)
	}
	if dumpErr != nil {
		outcome = outcomeError
		// A ready file whose record could not be updated would be an
		// orphan; the next start removes it too, but do it now.
		if path, pathErr := s.filePath(b); pathErr == nil {
			_ = os.Remove(path)
		}
	}
	s.metrics.backups.WithLabelValues(outcome).Inc()
	s.metrics.backupSeconds.Observe(duration.Seconds())
	if dumpErr != nil {
		s.log.Error("backup failed", "backup_id", b.ID, "database_id", b.DatabaseID, "duration", duration, "error", dumpErr)
		return
	}
	s.log.Info("backup taken", "backup_id", b.ID, "database_id", b.DatabaseID, "duration", duration, "size", size, "db_size", dbSize)
}

// dump wakes the database's instance and holds it awake while pg_dump
// writes the backup file. It returns the file's size and the database's
// size. The file appears under its final name only when pg_dump succeeded.
func (s *Service) dump(ctx context.Context, b catalog.Backup) (size, dbSize uint64, err error) {
	path, err := s.filePath(b)
	if err != nil {
		return 0, 0, err
	}
	unlock, err := s.lockDatabase(ctx, b.DatabaseID)
	if err != nil {
		return 0, 0, err
	}
	defer unlock()

	inst, err := s.instances.Instance(b.DatabaseID)
	if err != nil {
		return 0, 0, err
	}
	if err := inst.Begin(ctx); err != nil {
		return 0, 0, fmt.Errorf("wake database: %w", err)
	}
	defer inst.End()

	dbSize, err = databaseSize(ctx, inst)
	if err != nil {
		return 0, 0, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return 0, 0, fmt.Errorf("create backup directory: %w", err)
	}
	if err := s.runDump(ctx, inst, path+tempSuffix); err != nil {
		return 0, 0, err
	}
	if err := os.Rename(path+tempSuffix, path); err != nil {
		os.Remove(path + tempSuffix)
		return 0, 0, fmt.Errorf("rename backup file: %w", err)
	}
	syncDir(filepath.Dir(path))
	info, err := os.Stat(path)
	if err != nil {
		return 0, 0, fmt.Errorf("read backup file size: %w", err)
	}
	return uint64(info.Size()), dbSize, nil
}

// runDump writes the database's pg_dump custom-format archive to tmp,
// created 0600, and removes tmp when pg_dump fails.
//
// --no-privileges leaves out every GRANT, REVOKE and ALTER DEFAULT
// PRIVILEGES, which name sdblocal's roles. The owners stay in the archive,
// so a restore elsewhere needs pg_restore --no-owner. sdblocal's schema,
// its function and its event trigger are members of the plpgsql extension
// (autoscale/roles.go), which pg_dump skips; --exclude-schema keeps the
// schema out should that membership ever be lost.
func (s *Service) runDump(ctx context.Context, inst *autoscale.Instance, tmp string) error {
	file, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if errors.Is(err, os.ErrExist) {
		// Left by a dump that died with sdblocal before the next start
		// could clean it up.
		if err = os.Remove(tmp); err == nil {
			file, err = os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		}
	}
	if err != nil {
		return fmt.Errorf("create backup file: %w", err)
	}
	cmd := exec.CommandContext(ctx, s.cfg.Tools.PGDump,
		"--format=custom",
		"--no-privileges",
		"--exclude-schema=sdblocal",
		"--lock-wait-timeout="+strconv.FormatInt(s.cfg.LockWaitTimeout.Milliseconds(), 10),
		"--no-password",
		"--host="+inst.SocketDir(),
		"--port="+strconv.Itoa(int(inst.SocketPort())),
		"--username="+autoscale.Superuser,
		"--dbname="+inst.DatabaseName(),
	)
	cmd.Stdout = file
	err = runTool(cmd)
	if err != nil && strings.Contains(err.Error(), "LOCK TABLE") {
		// pg_dump enforces --lock-wait-timeout with a statement timeout on
		// its LOCK TABLE, whose message does not name the cause.
		err = fmt.Errorf("%w; a client held a conflicting lock on that table for longer than the lock wait timeout (%s): find its transaction in pg_stat_activity (xact_start) and end or cancel it", err, s.cfg.LockWaitTimeout)
	}
	if err == nil {
		err = file.Sync()
	}
	if closeErr := file.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// databaseSize returns pg_database_size of the instance's database.
func databaseSize(ctx context.Context, inst *autoscale.Instance) (uint64, error) {
	conn, err := connect(ctx, inst, inst.DatabaseName(), autoscale.Superuser)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var size int64
	if err := conn.QueryRow(ctx, "SELECT pg_catalog.pg_database_size(pg_catalog.current_database())").Scan(&size); err != nil {
		return 0, fmt.Errorf("read database size: %w", err)
	}
	return uint64(max(size, 0)), nil
}

// connect opens a connection to one of the instance's databases over its
// Unix socket, where every local user is trusted.
func connect(ctx context.Context, inst *autoscale.Instance, dbName, user string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig("sslmode=disable")
	if err != nil {
		return nil, err
	}
	cfg.Host = inst.SocketDir()
	cfg.Port = inst.SocketPort()
	cfg.User = user
	cfg.Database = dbName
	cfg.ConnectTimeout = 10 * time.Second
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to %s as %s: %w", dbName, user, err)
	}
	return conn, nil
}

// syncDir flushes a directory's entries, so a rename survives a crash.
// Errors are ignored: the rename itself has succeeded.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}
