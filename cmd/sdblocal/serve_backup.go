package main

import (
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"github.com/sdblocal/sdblocal/backup"
)

func addBackupFlags(f *pflag.FlagSet, opts *backupOptions) {
	f.BoolVar(&opts.enabled, "backups", true, "take, export and restore backups with pg_dump and pg_restore; false serves the backup records but rejects every backup action")
	f.StringVar(&opts.pgDump, "pg-dump", "", "pg_dump to run, PostgreSQL 14 or newer (default: pg_dump in $PATH, from the Debian package postgresql-client-15)")
	f.StringVar(&opts.pgRestore, "pg-restore", "", "pg_restore to run, PostgreSQL 14 or newer (default: pg_restore in $PATH)")
	f.DurationVar(&opts.interval, "backup-interval", backup.DefaultInterval, "time between two scheduled backups of each database (Go duration); 0 takes none, and backups on request still work")
	f.StringVar(&opts.timeOfDay, "backup-time", "03:00", "time of day (HH:MM, UTC) of each day's first scheduled backup")
	f.DurationVar(&opts.retention, "backup-retention", backup.DefaultRetention, "how long a backup is kept before it and its file are deleted (Go duration; 168h is the real service's 7 days)")
	f.DurationVar(&opts.lockWaitTimeout, "backup-lock-wait-timeout", backup.DefaultLockWaitTimeout, "how long a backup waits for each table lock held by a client before it fails (Go duration, at least 1ms; passed to pg_dump --lock-wait-timeout)")
	f.DurationVar(&opts.exportLifetime, "backup-export-lifetime", backup.DefaultExportLifetime, "how long the download URL of an exported backup stays valid (Go duration, at least 1s)")
}

// backupConfigFromFlags checks the backup flags and, when backups are on,
// finds pg_dump and pg_restore, so a missing tool stops sdblocal at start.
func backupConfigFromFlags(opts backupOptions) (backup.Config, error) {
	if !opts.enabled {
		return backup.Config{}, nil
	}
	if opts.interval < 0 {
		return backup.Config{}, fmt.Errorf("invalid --backup-interval %s: must be 0 (no scheduled backups) or positive", opts.interval)
	}
	timeOfDay, err := backup.ParseTimeOfDay(opts.timeOfDay)
	if err != nil {
		return backup.Config{}, fmt.Errorf("invalid --backup-time: %w", err)
	}
	if opts.retention <= 0 {
		return backup.Config{}, fmt.Errorf("invalid --backup-retention %s: must be positive", opts.retention)
	}
	if opts.lockWaitTimeout < time.Millisecond {
		return backup.Config{}, fmt.Errorf("invalid --backup-lock-wait-timeout %s: must be at least 1ms", opts.lockWaitTimeout)
	}
	if opts.exportLifetime < time.Second {
		return backup.Config{}, fmt.Errorf("invalid --backup-export-lifetime %s: must be at least 1s", opts.exportLifetime)
	}
	tools, err := backup.FindTools(opts.pgDump, opts.pgRestore)
	if err != nil {
		return backup.Config{}, fmt.Errorf("%w; or point --pg-dump and --pg-restore at them, or turn backups off with --backups=false", err)
	}
	return backup.Config{
		Tools:           tools,
		Interval:        opts.interval,
		TimeOfDay:       timeOfDay,
		Retention:       opts.retention,
		LockWaitTimeout: opts.lockWaitTimeout,
		ExportLifetime:  opts.exportLifetime,
	}, nil
}
