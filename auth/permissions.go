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

// Action is an operation a caller requests on a database.
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

// Organization-scoped permission sets. They apply only through a rule whose
// scope is the whole organization, and they grant no right on databases.
// The names and rights are those of Scaleway's permission-set reference
// (docs-content pages/iam/reference-content/permission-sets.mdx), reduced to
// the IAM and Account calls sdblocal serves.
const (
	// OrganizationManager manages projects and IAM.
	OrganizationManager PermissionSet = "OrganizationManager"
	// IAMManager manages applications, users, API keys and policies, and
	// includes every ProjectManager right. A holder can grant itself any
	// permission set by writing a policy, so it is as powerful as the owner
	// except on the owner's own API keys.
	IAMManager PermissionSet = "IAMManager"
	// IAMReadOnly lists and reads applications, users, API keys and
	// policies.
	IAMReadOnly PermissionSet = "IAMReadOnly"
	// ProjectManager creates, renames, lists and deletes projects.
	ProjectManager PermissionSet = "ProjectManager"
	// ProjectReadOnly lists and reads projects.
	ProjectReadOnly PermissionSet = "ProjectReadOnly"
)

// OrganizationPermissionSets lists the organization-scoped permission sets,
// from the most to the least powerful.
var OrganizationPermissionSets = []PermissionSet{OrganizationManager, IAMManager, IAMReadOnly, ProjectManager, ProjectReadOnly}

// ValidPermissionSet reports whether name is a permission set sdblocal
// understands, of either scope.
func ValidPermissionSet(name string) bool {
	set := PermissionSet(name)
	return slices.Contains(KnownPermissionSets, set) || slices.Contains(OrganizationPermissionSets, set)
}

// OrganizationScoped reports whether the permission set applies only to a
// whole organization.
func (set PermissionSet) OrganizationScoped() bool {
	return slices.Contains(OrganizationPermissionSets, set)
}

// OrganizationAction is an operation on an organization's IAM records or
// projects.
type OrganizationAction int

const (
	// ActionIAMRead is listing and reading applications, users, API keys,
	// policies and rules.
	ActionIAMRead OrganizationAction = iota
	// ActionIAMManage is creating, updating and deleting them.
	ActionIAMManage
	// ActionProjectRead is listing and reading projects.
	ActionProjectRead
	// ActionProjectManage is creating, updating and deleting projects.
	ActionProjectManage
)

func (a OrganizationAction) String() string {
	switch a {
	case ActionIAMRead:
		return "iam read"
	case ActionIAMManage:
		return "iam manage"
	case ActionProjectRead:
		return "project read"
	case ActionProjectManage:
		return "project manage"
	}
	return fmt.Sprintf("organization action(%d)", int(a))
}

// allowsInOrganization reports whether set permits action.
func (set PermissionSet) allowsInOrganization(action OrganizationAction) bool {
	switch set {
	case OrganizationManager, IAMManager:
		return true
	case IAMReadOnly:
		return action == ActionIAMRead
	case ProjectManager:
		return action == ActionProjectRead || action == ActionProjectManage
	case ProjectReadOnly:
		return action == ActionProjectRead
	}
	return false
}

// AuthorizeOrganization reports whether the principal may perform action in
// the organization. The owner may do everything in its organization. Any
// other principal needs an organization-scoped permission set in a rule
// scoped to that organization.
func (a *Authenticator) AuthorizeOrganization(principal catalog.Principal, organizationID string, action OrganizationAction) (bool, error) {
	if principal.OrganizationID != organizationID {
		return false, nil
	}
	if principal.Owner {
		return true, nil
	}
	var policies []catalog.Policy
	err := a.cat.View(func(tx *catalog.Tx) error {
		var err error
		policies, err = tx.PoliciesOfPrincipal(principal.ID)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("read policies of principal %s: %w", principal.ID, err)
	}
	for _, policy := range policies {
		for _, rule := range policy.Rules {
			if rule.OrganizationID != organizationID {
				continue
			}
			for _, name := range rule.PermissionSetNames {
				if PermissionSet(name).allowsInOrganization(action) {
					return true, nil
				}
			}
		}
	}
	return false, nil
}
