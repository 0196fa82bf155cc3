package catalog

import (
	"errors"
	"fmt"
	"sort"
	"time"
)

// Organization is the top of the IAM tree: projects, principals and API keys
// belong to exactly one.
type Organization struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// Project groups databases inside an organization; policies grant access
// per project.
type Project struct {
	ID             string    `json:"id"`
	OrganizationID string    `json:"organization_id"`
	Name           string    `json:"name"`
	Description    string    `json:"description,omitempty"`
	CreatedAt      time.Time `json:"created_at"`
	// UpdatedAt is zero until the first update.
	UpdatedAt time.Time `json:"updated_at,omitzero"`
}

// PrincipalKind distinguishes an IAM user from an IAM application.
type PrincipalKind string

const (
	PrincipalUser        PrincipalKind = "user"
	PrincipalApplication PrincipalKind = "application"
)

// Principal is an IAM user or application. Its ID is the PostgreSQL user
// name on the wire.
type Principal struct {
	ID             string        `json:"id"`
	OrganizationID string        `json:"organization_id"`
	Kind           PrincipalKind `json:"kind"`
	Name           string        `json:"name"`
	// Owner marks the organization's owner, who holds every permission in
	// it without a policy, as the owner of a Scaleway organization does.
	Owner       bool      `json:"owner"`
	Description string    `json:"description,omitempty"`
	Tags        []string  `json:"tags,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	// UpdatedAt is zero until the first update.
	UpdatedAt time.Time `json:"updated_at,omitzero"`
}

// SCRAMVerifier is the SCRAM-SHA-256 form of a secret key (RFC 5802,
// RFC 7677). The secret itself is never stored.
type SCRAMVerifier struct {
	Salt       []byte `json:"salt"`
	Iterations int    `json:"iterations"`
	StoredKey  []byte `json:"stored_key"`
	ServerKey  []byte `json:"server_key"`
}

// APIKey binds an access key and a secret key to one principal.
type APIKey struct {
	AccessKey        string `json:"access_key"`
	PrincipalID      string `json:"principal_id"`
	OrganizationID   string `json:"organization_id"`
	DefaultProjectID string `json:"default_project_id"`
	Description      string `json:"description"`
	// TokenHash is the SHA-256 of the secret key, the index that turns an
	// X-Auth-Token header into this record.
	TokenHash []byte        `json:"token_hash"`
	Verifier  SCRAMVerifier `json:"verifier"`
	CreatedAt time.Time     `json:"created_at"`
	// ExpiresAt is nil for a key that never expires.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// UpdatedAt is zero until the first update.
	UpdatedAt time.Time `json:"updated_at,omitzero"`
	// CreationIP is the client address that created the key through the
	// API, empty for keys created at first start.
	CreationIP string `json:"creation_ip,omitempty"`
}

// Expired reports whether the key is past its expiry at now.
func (k *APIKey) Expired(now time.Time) bool {
	return k.ExpiresAt != nil && !now.Before(*k.ExpiresAt)
}

// Rule grants permission sets on a scope: the listed projects, or the whole
// organization when OrganizationID is set.
type Rule struct {
	// ID is empty in rules written before rules had IDs.
	ID                 string   `json:"id,omitempty"`
	PermissionSetNames []string `json:"permission_set_names"`
	ProjectIDs         []string `json:"project_ids,omitempty"`
	OrganizationID     string   `json:"organization_id,omitempty"`
}

// Policy attaches rules to one principal.
type Policy struct {
	ID             string `json:"id"`
	Name           string `json:"name"`
	OrganizationID string `json:"organization_id"`
	// PrincipalID is empty for a policy attached to no principal, which
	// grants nothing.
	PrincipalID string    `json:"principal_id"`
	Rules       []Rule    `json:"rules"`
	Description string    `json:"description,omitempty"`
	Tags        []string  `json:"tags,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	// UpdatedAt is zero until the first update.
	UpdatedAt time.Time `json:"updated_at,omitzero"`
}

// DatabaseStatus is the lifecycle status the API reports, with the values
// of the Scaleway serverless-sqldb v1alpha1 enum.
type DatabaseStatus string

const (
	StatusUnknown   DatabaseStatus = "unknown_status"
	StatusError     DatabaseStatus = "error"
	StatusCreating  DatabaseStatus = "creating"
	StatusReady     DatabaseStatus = "ready"
	StatusDeleting  DatabaseStatus = "deleting"
	StatusRestoring DatabaseStatus = "restoring"
	StatusLocked    DatabaseStatus = "locked"
)

// Database is a serverless SQL database resource. Its instance (the
// PostgreSQL server) lives in the data directory under instances/<ID>.
type Database struct {
	ID             string         `json:"id"`
	Name           string         `json:"name"`
	OrganizationID string         `json:"organization_id"`
	ProjectID      string         `json:"project_id"`
	Region         string         `json:"region"`
	Status         DatabaseStatus `json:"status"`
	CPUMin         uint32         `json:"cpu_min"`
	CPUMax         uint32         `json:"cpu_max"`
	CreatedAt      time.Time      `json:"created_at"`
	// StatusMessage explains an error status; it is logged, not served.
	StatusMessage string `json:"status_message,omitempty"`
	// ColdStartDelay is the database's extra wait at each wake, in the form
	// autoscale.ParseColdStartDelay reads ("2s", "1s-4s"). Empty means the
	// server's --cold-start-delay. It is an sdblocal extension of the API.
	ColdStartDelay string `json:"cold_start_delay,omitempty"`
}

// PutOrganization stores o, replacing any record with its ID.
func (t *Tx) PutOrganization(o Organization) error {
	return put(t.tx, bucketOrganizations, o.ID, o)
}

// Organization returns the organization with the given ID.
func (t *Tx) Organization(id string) (Organization, error) {
	var o Organization
	return o, get(t.tx, bucketOrganizations, id, &o)
}

// PutProject stores p, replacing any record with its ID.
func (t *Tx) PutProject(p Project) error {
	return put(t.tx, bucketProjects, p.ID, p)
}

// Project returns the project with the given ID.
func (t *Tx) Project(id string) (Project, error) {
	var p Project
	return p, get(t.tx, bucketProjects, id, &p)
}

// Projects returns every project of an organization, or of all of them when
// organizationID is empty.
func (t *Tx) Projects(organizationID string) ([]Project, error) {
	return list(t.tx, bucketProjects, func(p *Project) bool {
		return organizationID == "" || p.OrganizationID == organizationID
	})
}

// PutPrincipal stores p, replacing any record with its ID.
func (t *Tx) PutPrincipal(p Principal) error {
	return put(t.tx, bucketPrincipals, p.ID, p)
}

// Principal returns the principal with the given ID.
func (t *Tx) Principal(id string) (Principal, error) {
	var p Principal
	return p, get(t.tx, bucketPrincipals, id, &p)
}

// PutAPIKey stores k and its token-hash index. An access key that is
// already stored is rejected with ErrExists.
func (t *Tx) PutAPIKey(k APIKey) error {
	if t.tx.Bucket(bucketAPIKeys).Get([]byte(k.AccessKey)) != nil {
		return fmt.Errorf("api key %s: %w", k.AccessKey, ErrExists)
	}
	if len(k.TokenHash) == 0 {
		return errors.New("api key has no token hash")
	}
	if err := put(t.tx, bucketAPIKeys, k.AccessKey, k); err != nil {
		return err
	}
	return t.tx.Bucket(bucketKeysByHash).Put(k.TokenHash, []byte(k.AccessKey))
}

// DeleteAPIKey removes the key with the given access key and its index.
func (t *Tx) DeleteAPIKey(accessKey string) error {
	var k APIKey
	if err := get(t.tx, bucketAPIKeys, accessKey, &k); err != nil {
		return err
	}
	if err := t.tx.Bucket(bucketKeysByHash).Delete(k.TokenHash); err != nil {
		return err
	}
	return t.tx.Bucket(bucketAPIKeys).Delete([]byte(accessKey))
}

// APIKey returns the key with the given access key.
func (t *Tx) APIKey(accessKey string) (APIKey, error) {
	var k APIKey
	return k, get(t.tx, bucketAPIKeys, accessKey, &k)
}

// APIKeyByTokenHash returns the key whose secret hashes to tokenHash.
func (t *Tx) APIKeyByTokenHash(tokenHash []byte) (APIKey, error) {
	accessKey := t.tx.Bucket(bucketKeysByHash).Get(tokenHash)
	if accessKey == nil {
		return APIKey{}, ErrNotFound
	}
	return t.APIKey(string(accessKey))
}

// APIKeysOfPrincipal returns every key bound to the principal.
func (t *Tx) APIKeysOfPrincipal(principalID string) ([]APIKey, error) {
	return list(t.tx, bucketAPIKeys, func(k *APIKey) bool { return k.PrincipalID == principalID })
}

// PutPolicy stores p, replacing any record with its ID.
func (t *Tx) PutPolicy(p Policy) error {
	return put(t.tx, bucketPolicies, p.ID, p)
}

// PoliciesOfPrincipal returns every policy attached to the principal.
func (t *Tx) PoliciesOfPrincipal(principalID string) ([]Policy, error) {
	return list(t.tx, bucketPolicies, func(p *Policy) bool { return p.PrincipalID == principalID })
}

// PutDatabase stores d, replacing any record with its ID.
func (t *Tx) PutDatabase(d Database) error {
	return put(t.tx, bucketDatabases, d.ID, d)
}

// Database returns the database with the given ID.
func (t *Tx) Database(id string) (Database, error) {
	var d Database
	return d, get(t.tx, bucketDatabases, id, &d)
}

// DeleteDatabase removes the database record with the given ID.
func (t *Tx) DeleteDatabase(id string) error {
	if t.tx.Bucket(bucketDatabases).Get([]byte(id)) == nil {
		return ErrNotFound
	}
	return t.tx.Bucket(bucketDatabases).Delete([]byte(id))
}

// Databases returns the databases that keep accepts (all when keep is nil),
// oldest first, ties broken by ID so the order is stable.
func (t *Tx) Databases(keep func(*Database) bool) ([]Database, error) {
	out, err := list(t.tx, bucketDatabases, keep)
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// SetDatabaseStatus changes one database's status and message in its own
// transaction. It returns ErrNotFound when the record is gone.
func (c *Catalog) SetDatabaseStatus(id string, status DatabaseStatus, message string) error {
	return c.Update(func(tx *Tx) error {
		d, err := tx.Database(id)
		if err != nil {
			return err
		}
		d.Status = status
		d.StatusMessage = message
		return tx.PutDatabase(d)
	})
}
