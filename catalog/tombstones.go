package catalog

import (
	"fmt"
	"time"
)

// TombstoneDatabase is the tombstone kind of a deleted database.
const TombstoneDatabase = "database"

// bucketTombstones is created by the first PutTombstone rather than by Open,
// so a catalog written before tombstones existed needs no schema migration.
var bucketTombstones = []byte("tombstones")

// Tombstone records that a resource existed and was deleted. The real API
// returns permissions_denied for a deleted database and not_found for one
// that never existed. Terraform takes only the first as "deleted", so the ID
// must be remembered after the record is gone.
type Tombstone struct {
	Kind           string    `json:"kind"`
	ID             string    `json:"id"`
	OrganizationID string    `json:"organization_id"`
	DeletedAt      time.Time `json:"deleted_at"`
}

func tombstoneKey(kind, id string) string { return kind + "/" + id }

// PutTombstone records that the resource of the given kind and ID was deleted
// at the given time, replacing any earlier tombstone for it. It must run in
// an Update transaction.
//
// NOTE: tombstones are never pruned, so the bucket grows by one small JSON
// record per deleted resource.
func (t *Tx) PutTombstone(kind, id string, organizationID string, at time.Time) error {
	if _, err := t.tx.CreateBucketIfNotExists(bucketTombstones); err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketTombstones, err)
	}
	stone := Tombstone{Kind: kind, ID: id, OrganizationID: organizationID, DeletedAt: at.UTC()}
	return put(t.tx, bucketTombstones, tombstoneKey(kind, id), stone)
}

// Tombstone returns the tombstone of the resource of the given kind and ID,
// or ErrNotFound when none was recorded.
func (t *Tx) Tombstone(kind, id string) (Tombstone, error) {
	var stone Tombstone
	if t.tx.Bucket(bucketTombstones) == nil {
		return stone, ErrNotFound
	}
	return stone, get(t.tx, bucketTombstones, tombstoneKey(kind, id), &stone)
}
