package catalog

import (
	"errors"
	"slices"
	"testing"
	"time"
)

func openTestCatalog(t *testing.T) *Catalog {
	t.Helper()
	cat, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close() })
	return cat
}

// seedPrincipal stores a principal with the given number of API keys and one
// policy, all created at base plus the given offset.
func seedPrincipal(t *testing.T, cat *Catalog, id string, kind PrincipalKind, keys int, created time.Time) {
	t.Helper()
	err := cat.Update(func(tx *Tx) error {
		if err := tx.PutPrincipal(Principal{ID: id, OrganizationID: "org", Kind: kind, Name: id, CreatedAt: created}); err != nil {
			return err
		}
		for i := range keys {
			accessKey := id + "-key-" + string(rune('a'+i))
			err := tx.PutAPIKey(APIKey{AccessKey: accessKey, PrincipalID: id, OrganizationID: "org", TokenHash: []byte(accessKey), CreatedAt: created})
			if err != nil {
				return err
			}
		}
		return tx.PutPolicy(Policy{ID: id + "-policy", OrganizationID: "org", PrincipalID: id, CreatedAt: created})
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestPrincipalsOrderAndFilter(t *testing.T) {
	cat := openTestCatalog(t)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	seedPrincipal(t, cat, "p-late", PrincipalApplication, 0, base.Add(time.Hour))
	seedPrincipal(t, cat, "p-b", PrincipalUser, 0, base)
	seedPrincipal(t, cat, "p-a", PrincipalApplication, 0, base)

	var all, apps []Principal
	err := cat.View(func(tx *Tx) error {
		var err error
		if all, err = tx.Principals(nil); err != nil {
			return err
		}
		apps, err = tx.Principals(func(p *Principal) bool { return p.Kind == PrincipalApplication })
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := principalIDs(all); !slices.Equal(got, []string{"p-a", "p-b", "p-late"}) {
		t.Errorf("all principals = %v, want oldest first with ties by ID", got)
	}
	if got := principalIDs(apps); !slices.Equal(got, []string{"p-a", "p-late"}) {
		t.Errorf("applications = %v, want p-a, p-late", got)
	}
}

func principalIDs(ps []Principal) []string {
	var ids []string
	for _, p := range ps {
		ids = append(ids, p.ID)
	}
	return ids
}

func TestDeletePrincipalCascades(t *testing.T) {
	cat := openTestCatalog(t)
	now := time.Now().UTC()
	seedPrincipal(t, cat, "gone", PrincipalApplication, 2, now)
	seedPrincipal(t, cat, "kept", PrincipalApplication, 1, now)

	if err := cat.Update(func(tx *Tx) error { return tx.DeletePrincipal("gone") }); err != nil {
		t.Fatal(err)
	}

	err := cat.View(func(tx *Tx) error {
		if _, err := tx.Principal("gone"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Principal after delete: %v, want ErrNotFound", err)
		}
		keys, err := tx.APIKeys(nil)
		if err != nil {
			return err
		}
		if len(keys) != 1 || keys[0].PrincipalID != "kept" {
			t.Errorf("keys after delete = %+v, want only the key of kept", keys)
		}
		// The token-hash index must not point at a deleted key.
		if _, err := tx.APIKeyByTokenHash([]byte("gone-key-a")); !errors.Is(err, ErrNotFound) {
			t.Errorf("APIKeyByTokenHash of a deleted key: %v, want ErrNotFound", err)
		}
		policies, err := tx.Policies(nil)
		if err != nil {
			return err
		}
		if len(policies) != 1 || policies[0].ID != "kept-policy" {
			t.Errorf("policies after delete = %+v, want only kept-policy", policies)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	err = cat.Update(func(tx *Tx) error { return tx.DeletePrincipal("gone") })
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("second DeletePrincipal: %v, want ErrNotFound", err)
	}
}

func TestUpdateAPIKeyKeepsSecret(t *testing.T) {
	cat := openTestCatalog(t)
	seedPrincipal(t, cat, "app", PrincipalApplication, 1, time.Now().UTC())
	err := cat.Update(func(tx *Tx) error {
		return tx.UpdateAPIKey(APIKey{AccessKey: "app-key-a", PrincipalID: "app", Description: "renamed", TokenHash: []byte("forged")})
	})
	if err != nil {
		t.Fatal(err)
	}
	err = cat.View(func(tx *Tx) error {
		key, err := tx.APIKeyByTokenHash([]byte("app-key-a"))
		if err != nil {
			return err
		}
		if key.Description != "renamed" || string(key.TokenHash) != "app-key-a" {
			t.Errorf("key = %+v, want the new description and the original token hash", key)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	err = cat.Update(func(tx *Tx) error { return tx.UpdateAPIKey(APIKey{AccessKey: "missing"}) })
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("UpdateAPIKey of a missing key: %v, want ErrNotFound", err)
	}
}

func TestDeletePolicy(t *testing.T) {
	cat := openTestCatalog(t)
	seedPrincipal(t, cat, "app", PrincipalApplication, 0, time.Now().UTC())
	if err := cat.Update(func(tx *Tx) error { return tx.DeletePolicy("app-policy") }); err != nil {
		t.Fatal(err)
	}
	err := cat.View(func(tx *Tx) error {
		_, err := tx.Policy("app-policy")
		return err
	})
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("Policy after delete: %v, want ErrNotFound", err)
	}
	err = cat.Update(func(tx *Tx) error { return tx.DeletePolicy("app-policy") })
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("second DeletePolicy: %v, want ErrNotFound", err)
	}
}

func TestDeleteProjectInUse(t *testing.T) {
	cat := openTestCatalog(t)
	now := time.Now().UTC()
	err := cat.Update(func(tx *Tx) error {
		for _, id := range []string{"with-db", "default-of-key", "empty"} {
			if err := tx.PutProject(Project{ID: id, OrganizationID: "org", CreatedAt: now}); err != nil {
				return err
			}
		}
		if err := tx.PutDatabase(Database{ID: "db", ProjectID: "with-db", Status: StatusDeleting, CreatedAt: now}); err != nil {
			return err
		}
		return tx.PutAPIKey(APIKey{AccessKey: "k", DefaultProjectID: "default-of-key", TokenHash: []byte("k"), CreatedAt: now})
	})
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		project   string
		databases int
		keys      int
	}{
		{"with-db", 1, 0},
		{"default-of-key", 0, 1},
	}
	for _, tt := range tests {
		err := cat.Update(func(tx *Tx) error { return tx.DeleteProject(tt.project) })
		var inUse *ProjectInUseError
		if !errors.As(err, &inUse) || !errors.Is(err, ErrInUse) {
			t.Fatalf("DeleteProject(%s) = %v, want a *ProjectInUseError", tt.project, err)
		}
		if inUse.Databases != tt.databases || inUse.APIKeys != tt.keys {
			t.Errorf("DeleteProject(%s): databases, keys = %d, %d; want %d, %d", tt.project, inUse.Databases, inUse.APIKeys, tt.databases, tt.keys)
		}
	}

	if err := cat.Update(func(tx *Tx) error { return tx.DeleteProject("empty") }); err != nil {
		t.Fatalf("DeleteProject(empty) = %v", err)
	}
	err = cat.Update(func(tx *Tx) error { return tx.DeleteProject("empty") })
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("second DeleteProject(empty) = %v, want ErrNotFound", err)
	}
	err = cat.View(func(tx *Tx) error {
		count, err := tx.CountDatabases("with-db")
		if count != 1 {
			t.Errorf("CountDatabases(with-db) = %d, want 1", count)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestBackupsRoundTrip(t *testing.T) {
	cat := openTestCatalog(t)

	// A fresh catalog has no backups bucket, and reads must not fail on it.
	err := cat.View(func(tx *Tx) error {
		if _, err := tx.Backup("b"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Backup on a fresh catalog: %v, want ErrNotFound", err)
		}
		backups, err := tx.Backups(nil)
		if len(backups) != 0 {
			t.Errorf("Backups on a fresh catalog = %v, want none", backups)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	size := uint64(4096)
	err = cat.Update(func(tx *Tx) error {
		if err := tx.PutBackup(Backup{ID: "late", DatabaseID: "db", Status: BackupStatusReady, CreatedAt: base.Add(time.Hour), Size: &size}); err != nil {
			return err
		}
		return tx.PutBackup(Backup{ID: "early", DatabaseID: "other", Status: BackupStatusUnknown, CreatedAt: base})
	})
	if err != nil {
		t.Fatal(err)
	}

	err = cat.View(func(tx *Tx) error {
		all, err := tx.Backups(nil)
		if err != nil {
			return err
		}
		if len(all) != 2 || all[0].ID != "early" || all[1].ID != "late" {
			t.Errorf("Backups = %+v, want early then late", all)
		}
		late, err := tx.Backup("late")
		if err != nil {
			return err
		}
		if late.Size == nil || *late.Size != size || late.Status != BackupStatusReady {
			t.Errorf("Backup(late) = %+v, want size %d and status ready", late, size)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	if err := cat.Update(func(tx *Tx) error { return tx.DeleteBackup("late") }); err != nil {
		t.Fatal(err)
	}
	err = cat.Update(func(tx *Tx) error { return tx.DeleteBackup("late") })
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("second DeleteBackup = %v, want ErrNotFound", err)
	}
}
