// Package catalog is sdblocal's durable metadata store: organizations,
// projects, principals, API keys, policies and databases, kept in one bbolt
// file inside the data directory.
//
// Records are stored as JSON under their ID, one bucket per kind. The schema
// version lives in the meta bucket; Open refuses a file written by a newer
// sdblocal and upgrades an older one in place.
package catalog

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
)

// SchemaVersion is the layout this build writes. Bump it and add a step to
// migrate when a bucket or a record's meaning changes.
const SchemaVersion = 1

// FileName is the catalog's file name inside the data directory.
const FileName = "catalog.db"

var (
	// ErrNotFound is returned when a record with the requested key does not exist.
	ErrNotFound = errors.New("not found")
	// ErrLocked is returned by Open when another process holds the catalog.
	ErrLocked = errors.New("catalog is in use by another process")
	// ErrExists is returned when a record with the same key already exists.
	ErrExists = errors.New("already exists")
)

var (
	bucketMeta          = []byte("meta")
	bucketOrganizations = []byte("organizations")
	bucketProjects      = []byte("projects")
	bucketPrincipals    = []byte("principals")
	bucketAPIKeys       = []byte("api_keys")
	bucketKeysByHash    = []byte("api_keys_by_token_hash")
	bucketPolicies      = []byte("policies")
	bucketDatabases     = []byte("databases")

	allBuckets = [][]byte{
		bucketMeta, bucketOrganizations, bucketProjects, bucketPrincipals,
		bucketAPIKeys, bucketKeysByHash, bucketPolicies, bucketDatabases,
	}

	keySchemaVersion = []byte("schema_version")
)

// lockWait is how long Open waits for the file lock before reporting that
// another process holds it. bbolt takes an exclusive flock, so a second
// sdblocal on the same data directory fails here instead of corrupting it.
const lockWait = 500 * time.Millisecond

// Catalog is the open metadata store. It is safe for concurrent use.
type Catalog struct {
	db   *bolt.DB
	path string
}

// Open opens or creates the catalog in dataDir.
func Open(dataDir string) (*Catalog, error) {
	path := filepath.Join(dataDir, FileName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockWait})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("open %s: %w: stop the other sdblocal or choose another --data-dir", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open catalog %s: %w", path, err)
	}
	c := &Catalog{db: db, path: path}
	if err := c.init(); err != nil {
		db.Close()
		return nil, err
	}
	return c, nil
}

func (c *Catalog) init() error {
	return c.db.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		raw := meta.Get(keySchemaVersion)
		if raw == nil {
			return meta.Put(keySchemaVersion, []byte(strconv.Itoa(SchemaVersion)))
		}
		version, err := strconv.Atoi(string(raw))
		if err != nil {
			return fmt.Errorf("catalog %s: invalid schema version %q", c.path, raw)
		}
		if version > SchemaVersion {
			return fmt.Errorf("catalog %s has schema version %d, newer than this sdblocal supports (%d): upgrade sdblocal", c.path, version, SchemaVersion)
		}
		// Versions older than SchemaVersion would be migrated here, one step
		// per version; version 1 is the first layout.
		return nil
	})
}

// Path returns the catalog's file path.
func (c *Catalog) Path() string { return c.path }

// Close releases the file and its lock.
func (c *Catalog) Close() error { return c.db.Close() }

// Empty reports whether the catalog holds no organization yet, which is the
// sign of a first start.
func (c *Catalog) Empty() (bool, error) {
	empty := true
	err := c.db.View(func(tx *bolt.Tx) error {
		k, _ := tx.Bucket(bucketOrganizations).Cursor().First()
		empty = k == nil
		return nil
	})
	return empty, err
}

func put(tx *bolt.Tx, bucket []byte, key string, value any) error {
	raw, err := json.Marshal(value)
	if err != nil {
		return fmt.Errorf("encode %s %s: %w", bucket, key, err)
	}
	return tx.Bucket(bucket).Put([]byte(key), raw)
}

func get(tx *bolt.Tx, bucket []byte, key string, value any) error {
	raw := tx.Bucket(bucket).Get([]byte(key))
	if raw == nil {
		return ErrNotFound
	}
	if err := json.Unmarshal(raw, value); err != nil {
		return fmt.Errorf("decode %s %s: %w", bucket, key, err)
	}
	return nil
}

func list[T any](tx *bolt.Tx, bucket []byte, keep func(*T) bool) ([]T, error) {
	var out []T
	err := tx.Bucket(bucket).ForEach(func(k, raw []byte) error {
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			return fmt.Errorf("decode %s %s: %w", bucket, k, err)
		}
		if keep == nil || keep(&v) {
			out = append(out, v)
		}
		return nil
	})
	return out, err
}

// Update runs fn in one read-write transaction, so several records change
// together or not at all.
func (c *Catalog) Update(fn func(tx *Tx) error) error {
	return c.db.Update(func(btx *bolt.Tx) error { return fn(&Tx{tx: btx}) })
}

// View runs fn in one read-only transaction.
func (c *Catalog) View(fn func(tx *Tx) error) error {
	return c.db.View(func(btx *bolt.Tx) error { return fn(&Tx{tx: btx}) })
}

// Tx is a catalog transaction. It is valid only inside the Update or View
// callback that received it.
type Tx struct {
	tx *bolt.Tx
}
