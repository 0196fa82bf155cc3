package auth

import (
	"fmt"
	"slices"

	"github.com/sdblocal/sdblocal/catalog"
)

// PermissionSet is a Scaleway IAM permission set name.
type PermissionSet string

// The permission sets of Serverless SQL Databases.
const (
	FullAccess    PermissionSet = "ServerlessSQLDatabaseFullAccess"
	ReadWrite     PermissionSet = "ServerlessSQLDatabaseReadWrite"
	DataReadWrite PermissionSet = "ServerlessSQLDatabaseDataReadWrite"
	ReadOnly      PermissionSet = "ServerlessSQLDatabaseReadOnly"
)

// KnownPermissionSets lists the permission sets sdblocal understands, from
// the most to the least powerful.
var KnownPermissionSets = []PermissionSet{FullAccess, ReadWrite, DataReadWrite, ReadOnly}

// Action is what a caller wants to do with a database.
type Action int

const (
	// ActionRead is listing and reading databases and backups.
	ActionRead Action = iota
	// ActionManage is creating, configuring, restoring and deleting.
	ActionManage
	// ActionConnect is logging in on the PostgreSQL wire.
	ActionConnect
)

func (a Action) String() string {
	switch a {
	case ActionRead:
		return "read"
	case ActionManage:
		return "manage"
	case ActionConnect:
		return "connect"
	}
	return fmt.Sprintf("action(%d)", int(a))
}

// allows reports whether set permits action. The API rights follow the
// Scaleway permission-set table: FullAccess manages, ReadWrite and ReadOnly
// read, and DataReadWrite has no API right. All four may connect.
func (set PermissionSet) allows(action Action) bool {
	switch action {
	case ActionManage:
		return set == FullAccess
	case ActionRead:
		return set == FullAccess || set == ReadWrite || set == ReadOnly
	case ActionConnect:
		return slices.Contains(KnownPermissionSets, set)
	}
	return false
}

// PermissionSets returns the permission sets the principal holds on the
// project, most powerful first. An organization owner holds FullAccess on
// every project of its organization.
func (a *Authenticator) PermissionSets(principal catalog.Principal, organizationID, projectID string) ([]PermissionSet, error) {
	if principal.OrganizationID != organizationID {
		return nil, nil
	}
	if principal.Owner {
		return []PermissionSet{FullAccess}, nil
	}
	var policies []catalog.Policy
	err := a.cat.View(func(tx *catalog.Tx) error {
		var err error
		policies, err = tx.PoliciesOfPrincipal(principal.ID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read policies of principal %s: %w", principal.ID, err)
	}
	held := map[PermissionSet]bool{}
	for _, policy := range policies {
		for _, rule := range policy.Rules {
			inScope := rule.OrganizationID == organizationID || slices.Contains(rule.ProjectIDs, projectID)
			if !inScope {
				continue
			}
			for _, name := range rule.PermissionSetNames {
				held[PermissionSet(name)] = true
			}
		}
	}
	var out []PermissionSet
	for _, set := range KnownPermissionSets {
		if held[set] {
			out = append(out, set)
		}
	}
	return out, nil
}

// Authorize reports whether the principal may perform action on resources of
// the project.
func (a *Authenticator) Authorize(principal catalog.Principal, organizationID, projectID string, action Action) (bool, error) {
	sets, err := a.PermissionSets(principal, organizationID, projectID)
	if err != nil {
		return false, err
	}
	for _, set := range sets {
		if set.allows(action) {
			return true, nil
		}
	}
	return false, nil
}
