package catalog

import (
	"errors"
	"fmt"
)

// ErrInUse is returned when a record cannot be deleted because other records
// still refer to it.
var ErrInUse = errors.New("still in use")

// ProjectInUseError is returned by DeleteProject for a project that still
// holds databases or is the default project of API keys. It matches ErrInUse
// with errors.Is.
type ProjectInUseError struct {
	ProjectID string
	// Databases counts the project's databases in any status, including
	// those being deleted, because their instances still exist.
	Databases int
	// APIKeys counts the keys whose default project it is.
	APIKeys int
}

func (e *ProjectInUseError) Error() string {
	return fmt.Sprintf("project %s still has %d databases and is the default project of %d API keys", e.ProjectID, e.Databases, e.APIKeys)
}

func (e *ProjectInUseError) Is(target error) bool { return target == ErrInUse }

// DeleteProject removes the project with the given ID. It returns ErrNotFound
// when the project does not exist, and a *ProjectInUseError when databases
// or API keys still refer to it, so no database is left without a project.
//
// NOTE: policy rules that name the project keep its ID, which then grants
// nothing because project IDs are never reused.
func (t *Tx) DeleteProject(id string) error {
	if t.tx.Bucket(bucketProjects).Get([]byte(id)) == nil {
		return ErrNotFound
	}
	databases, err := t.Databases(func(d *Database) bool { return d.ProjectID == id })
	if err != nil {
		return err
	}
	keys, err := list(t.tx, bucketAPIKeys, func(k *APIKey) bool { return k.DefaultProjectID == id })
	if err != nil {
		return err
	}
	if len(databases) > 0 || len(keys) > 0 {
		return &ProjectInUseError{ProjectID: id, Databases: len(databases), APIKeys: len(keys)}
	}
	return t.tx.Bucket(bucketProjects).Delete([]byte(id))
}

// CountDatabases returns the number of databases in the project, in any
// status.
func (t *Tx) CountDatabases(projectID string) (int, error) {
	databases, err := list(t.tx, bucketDatabases, func(d *Database) bool { return d.ProjectID == projectID })
	return len(databases), err
}
