package proxy

import (
	"github.com/sdblocal/sdblocal/auth"
	"github.com/sdblocal/sdblocal/autoscale"
	"github.com/sdblocal/sdblocal/catalog"
)

// permissionSetRoles maps each permission set that allows a wire login to
// the PostgreSQL role its backend connections use, as the real service
// does for FullAccess, ReadWrite and DataReadWrite. The service does not
// document the role of ReadOnly, so sdblocal gives it a SELECT-only role.
var permissionSetRoles = map[auth.PermissionSet]string{
	auth.FullAccess:    autoscale.RoleAdmin,
	auth.ReadWrite:     autoscale.RoleAdmin,
	auth.DataReadWrite: autoscale.RoleReadWrite,
	auth.ReadOnly:      autoscale.RoleReadOnly,
}

// roleStrength orders the roles from the weakest (1) to the strongest.
var roleStrength = map[string]int{
	autoscale.RoleReadOnly:  1,
	autoscale.RoleReadWrite: 2,
	autoscale.RoleAdmin:     3,
}

// roleForPermissionSets returns the role of the strongest permission set in
// sets, and false when none of them allows a wire login.
func roleForPermissionSets(sets []auth.PermissionSet) (string, bool) {
	best := ""
	for _, set := range sets {
		role, ok := permissionSetRoles[set]
		if ok && roleStrength[role] > roleStrength[best] {
			best = role
		}
	}
	return best, best != ""
}

// backendRole returns the role the principal's backend connections to db
// use. The role is chosen once per client session, at login: a policy
// change applies to the principal's next session.
func (s *Server) backendRole(identity auth.Identity, db catalog.Database) (string, *wireError) {
	sets, err := s.authn.PermissionSets(identity.Principal, db.OrganizationID, db.ProjectID)
	if err != nil {
		return "", fatalf(codeSystemError, "could not check permissions: %v", err)
	}
	role, ok := roleForPermissionSets(sets)
	if !ok {
		// The policy changed since route checked it.
		return "", fatalf(codeInvalidAuthorization, "principal %s does not have permission to access database %s", identity.Principal.ID, db.ID)
	}
	return role, nil
}
