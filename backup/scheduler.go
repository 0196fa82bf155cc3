package backup

import (
	"context"
	"fmt"
	"time"

	"github.com/sdblocal/sdblocal/catalog"
)

// ParseTimeOfDay parses "HH:MM" (24-hour, UTC) into the time since
// midnight.
func ParseTimeOfDay(value string) (time.Duration, error) {
	t, err := time.Parse("15:04", value)
	if err != nil {
		return 0, fmt.Errorf("invalid time of day %q: expected HH:MM in UTC, for example 03:00", value)
	}
	return time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute, nil
}

// schedule is the series of times at which every database is backed up:
// each day at offset after midnight UTC, then every interval after that.
type schedule struct {
	interval time.Duration
	offset   time.Duration
}

// slotAtOrBefore returns the latest scheduled time not after t.
func (sc schedule) slotAtOrBefore(t time.Time) time.Time {
	// time.Time's zero is midnight UTC, so Truncate(24h) is midnight UTC.
	anchor := t.UTC().Truncate(24 * time.Hour).Add(sc.offset)
	steps := t.Sub(anchor) / sc.interval
	if t.Before(anchor.Add(steps * sc.interval)) {
		// Division truncates towards zero; slots before the anchor need
		// the floor.
		steps--
	}
	return anchor.Add(steps * sc.interval)
}

// scheduleLoop backs up every database at each scheduled time. At start it
// first catches up on the latest time, which sdblocal may have missed while
// it was not running.
func (s *Service) scheduleLoop(ctx context.Context) {
	sc := schedule{interval: s.cfg.Interval, offset: s.cfg.TimeOfDay}
	slot := sc.slotAtOrBefore(s.cfg.Now())
	s.log.Info("backup schedule started", "interval", sc.interval, "next", slot.Add(sc.interval).Format(time.RFC3339))
	s.backUpSlot(ctx, slot)
	for {
		slot = sc.slotAtOrBefore(s.cfg.Now()).Add(sc.interval)
		timer := time.NewTimer(slot.Sub(s.cfg.Now()))
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		s.backUpSlot(ctx, slot)
	}
}

// backUpSlot backs up, one after the other, every ready database that
// existed at slot and has no backup started since then, failed ones aside.
// Running it twice for one slot takes each backup once.
func (s *Service) backUpSlot(ctx context.Context, slot time.Time) {
	var due []catalog.Database
	err := s.cat.View(func(tx *catalog.Tx) error {
		covered := map[string]bool{}
		backups, err := tx.Backups(func(b *catalog.Backup) bool {
			return !b.CreatedAt.Before(slot) && b.Status != catalog.BackupStatusError
		})
		if err != nil {
			return err
		}
		for _, b := range backups {
			covered[b.DatabaseID] = true
		}
		due, err = tx.Databases(func(db *catalog.Database) bool {
			return db.Status == catalog.StatusReady && !db.CreatedAt.After(slot) && !covered[db.ID]
		})
		return err
	})
	if err != nil {
		s.log.Error("scheduled backups skipped: could not read the catalog", "slot", slot, "error", err)
		return
	}
	for _, db := range due {
		if ctx.Err() != nil {
			return
		}
		b, err := s.newRecord(db)
		if err != nil {
			s.log.Error("scheduled backup skipped", "database_id", db.ID, "error", err)
			continue
		}
		s.takeBackup(ctx, b)
	}
}
