package catalog

import (
	"errors"
	"testing"
	"time"
)

func TestTombstoneRoundTrip(t *testing.T) {
	dir := t.TempDir()
	cat, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}

	// A fresh catalog has no tombstone bucket, and a read must not fail on it.
	err = cat.View(func(tx *Tx) error {
		_, err := tx.Tombstone(TombstoneDatabase, "a")
		return err
	})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("Tombstone on a fresh catalog: got %v, want ErrNotFound", err)
	}

	deletedAt := time.Date(2026, 10, 7, 6, 52, 48, 906544000, time.FixedZone("CEST", 2*3600))
	err = cat.Update(func(tx *Tx) error {
		return tx.PutTombstone(TombstoneDatabase, "a", "org-1", deletedAt)
	})
	if err != nil {
		t.Fatal(err)
	}

	// Reopening proves the tombstone is durable, not only visible in memory.
	if err := cat.Close(); err != nil {
		t.Fatal(err)
	}
	cat, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()

	var got Tombstone
	err = cat.View(func(tx *Tx) error {
		var err error
		got, err = tx.Tombstone(TombstoneDatabase, "a")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got.Kind != TombstoneDatabase || got.ID != "a" || got.OrganizationID != "org-1" {
		t.Errorf("tombstone = %+v, want kind %q, id a, organization org-1", got, TombstoneDatabase)
	}
	if !got.DeletedAt.Equal(deletedAt) || got.DeletedAt.Location() != time.UTC {
		t.Errorf("DeletedAt = %v, want %v in UTC", got.DeletedAt, deletedAt.UTC())
	}
}

func TestTombstoneKindsAreSeparate(t *testing.T) {
	cat, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()

	err = cat.Update(func(tx *Tx) error {
		return tx.PutTombstone(TombstoneDatabase, "a", "org-1", time.Now())
	})
	if err != nil {
		t.Fatal(err)
	}
	err = cat.View(func(tx *Tx) error {
		if _, err := tx.Tombstone("backup", "a"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Tombstone(backup, a) = %v, want ErrNotFound", err)
		}
		if _, err := tx.Tombstone(TombstoneDatabase, "b"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Tombstone(database, b) = %v, want ErrNotFound", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
