// Package backup takes logical backups of each database with pg_dump, on a
// daily schedule or on request, and deletes them when they expire. It signs
// the URLs that export them, and restores them with pg_restore over a
// database or into a new one.
//
// A backup is one pg_dump custom-format file,
// <data-dir>/backups/<database-id>/<backup-id>.pg_dump, and one catalog
// record. Its status is unknown_status while pg_dump runs, then ready or
// error, and locked while a restore reads it.
package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sdblocal/sdblocal/auth"
	"github.com/sdblocal/sdblocal/autoscale"
	"github.com/sdblocal/sdblocal/catalog"
)

// Defaults of Config.
const (
	// DefaultInterval and DefaultTimeOfDay take one backup a day at 03:00
	// UTC. The real service backs up once a day at a fixed time it does
	// not publish.
	DefaultInterval  = 24 * time.Hour
	DefaultTimeOfDay = 3 * time.Hour
	// DefaultRetention is the real service's: backups are kept 7 days.
	DefaultRetention = 7 * 24 * time.Hour
	// DefaultLockWaitTimeout bounds how long pg_dump waits for each table's
	// ACCESS SHARE lock before the backup fails.
	DefaultLockWaitTimeout = 30 * time.Second
	// DefaultExportLifetime is how long a download URL stays valid. The
	// real service does not document its URLs' lifetime.
	DefaultExportLifetime = time.Hour
)

// Config holds the backup service's settings. Zero durations take the
// defaults above, except Interval, where zero turns scheduled backups off,
// and TimeOfDay, where zero is midnight.
type Config struct {
	// DataDir is sdblocal's data directory. Backups live in
	// DataDir/backups and the export signing key in DataDir/backup-export.key.
	DataDir string
	// Tools are the pg_dump and pg_restore to run, from FindTools.
	Tools Tools
	// Interval is the time between two scheduled backups of a database.
	// Zero takes no scheduled backups; backups on request still work.
	Interval time.Duration
	// TimeOfDay is when, after midnight UTC, each day's first scheduled
	// backup starts, from 0 to 24h. With Interval 24h it is the daily
	// backup time.
	TimeOfDay time.Duration
	// Retention is how long a backup is kept after it was started.
	Retention time.Duration
	// LockWaitTimeout is passed to pg_dump --lock-wait-timeout.
	LockWaitTimeout time.Duration
	// ExportLifetime is how long a download URL stays valid.
	ExportLifetime time.Duration
	Logger         *slog.Logger
	Registerer     prometheus.Registerer
	// Now replaces time.Now in tests.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.Retention <= 0 {
		c.Retention = DefaultRetention
	}
	if c.LockWaitTimeout <= 0 {
		c.LockWaitTimeout = DefaultLockWaitTimeout
	}
	if c.ExportLifetime <= 0 {
		c.ExportLifetime = DefaultExportLifetime
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Instances is the part of the instance manager that the service uses
// (autoscale.Manager implements it).
type Instances interface {
	// Instance returns the database's instance.
	Instance(databaseID string) (*autoscale.Instance, error)
	// ProvisionInstance creates a database's instance without marking the
	// database ready.
	ProvisionInstance(ctx context.Context, db catalog.Database) (*autoscale.Instance, error)
	// SetCPU applies the database's cpu_min and cpu_max to its instance.
	SetCPU(databaseID string, cpuMin, cpuMax uint32)
	// Remove deletes the database's instance and its catalog record.
	Remove(databaseID string)
}

// Service runs the backups of every database. Create it with New, call
// Recover before the instance manager starts, then Start, and Close before
// the instance manager closes.
type Service struct {
	cfg       Config
	cat       *catalog.Catalog
	instances Instances
	dir       string
	secret    []byte
	metrics   *metrics
	log       *slog.Logger

	// ctx is cancelled by Close, which stops pg_dump and pg_restore.
	ctx    context.Context
	cancel context.CancelFunc
	tasks  sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	locks   map[string]chan struct{} // one per database: backups and restores of it take turns
	resumed []catalog.RestoreJob     // found by Recover, restarted by Start
}

// New returns the service for the databases in cat. It creates the backup
// directory and the export signing key when they do not exist.
func New(cfg Config, cat *catalog.Catalog, instances Instances) (*Service, error) {
	cfg.setDefaults()
	if cfg.Tools.PGDump == "" || cfg.Tools.PGRestore == "" {
		return nil, errors.New("backup service needs pg_dump and pg_restore: call FindTools")
	}
	if cfg.TimeOfDay < 0 || cfg.TimeOfDay >= 24*time.Hour {
		return nil, fmt.Errorf("backup time of day %s is not between 00:00 and 23:59", cfg.TimeOfDay)
	}
	dir := filepath.Join(cfg.DataDir, "backups")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create backup directory: %w", err)
	}
	secret, err := loadSecret(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Service{
		cfg:       cfg,
		cat:       cat,
		instances: instances,
		dir:       dir,
		secret:    secret,
		metrics:   newMetrics(cfg.Registerer),
		log:       cfg.Logger,
		ctx:       ctx,
		cancel:    cancel,
		locks:     map[string]chan struct{}{},
	}, nil
}

// Start resumes the restores Recover found and starts the schedule and the
// retention of expired backups.
func (s *Service) Start() {
	s.mu.Lock()
	resumed := s.resumed
	s.resumed = nil
	s.mu.Unlock()
	for _, job := range resumed {
		s.resume(job)
	}
	if s.cfg.Interval > 0 {
		s.goTask(s.scheduleLoop)
	}
	s.goTask(s.retentionLoop)
}

// Close stops the schedule, interrupts the dumps and restores in progress
// and waits for them. An interrupted backup ends in error; an interrupted
// restore stays recorded and is resumed by the next Start.
func (s *Service) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.tasks.Wait()
}

// goTask runs fn in the background until Close, and reports false when the
// service is closing and fn was not started.
func (s *Service) goTask(fn func(ctx context.Context)) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.tasks.Go(func() { fn(s.ctx) })
	return true
}

// lockDatabase waits until no other backup or restore of the database runs.
func (s *Service) lockDatabase(ctx context.Context, databaseID string) (unlock func(), err error) {
	s.mu.Lock()
	sem, ok := s.locks[databaseID]
	if !ok {
		sem = make(chan struct{}, 1)
		s.locks[databaseID] = sem
	}
	s.mu.Unlock()
	select {
	case sem <- struct{}{}:
		return func() { <-sem }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// fileExtension is the backup files' extension, the one the console's
// export uses.
const fileExtension = ".pg_dump"

// tempSuffix marks a file that pg_dump is still writing.
const tempSuffix = ".tmp"

// filePath returns where the backup's file lives. The IDs come from the
// catalog, never from a request, and are checked again here so that no
// record can name a file outside the backup directory.
func (s *Service) filePath(b catalog.Backup) (string, error) {
	if !auth.ValidUUID(b.DatabaseID) || !auth.ValidUUID(b.ID) {
		return "", fmt.Errorf("backup %q of database %q: invalid ID in the catalog record", b.ID, b.DatabaseID)
	}
	path := filepath.Join(s.dir, b.DatabaseID, b.ID+fileExtension)
	rel, err := filepath.Rel(s.dir, path)
	if err != nil || rel == "." || strings.HasPrefix(rel, "..") || filepath.IsAbs(rel) {
		return "", fmt.Errorf("backup %s: file %s is outside %s", b.ID, path, s.dir)
	}
	return path, nil
}

// setDatabaseStatus sets a database's status and logs a failure, for the
// background tasks that have no caller to return an error to. It returns
// the error too, catalog.ErrNotFound included.
func (s *Service) setDatabaseStatus(id string, status catalog.DatabaseStatus, message string) error {
	err := s.cat.SetDatabaseStatus(id, status, message)
	if err != nil && !errors.Is(err, catalog.ErrNotFound) {
		s.log.Error("could not record database status", "database_id", id, "status", status, "error", err)
	}
	return err
}
