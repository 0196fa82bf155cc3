package proxy

import (
	"testing"

	"github.com/sdblocal/sdblocal/auth"
	"github.com/sdblocal/sdblocal/autoscale"
)

func TestRoleForPermissionSets(t *testing.T) {
	cases := []struct {
		name string
		sets []auth.PermissionSet
		role string
		ok   bool
	}{
		{name: "none", sets: nil, role: "", ok: false},
		{name: "FullAccess", sets: []auth.PermissionSet{auth.FullAccess}, role: autoscale.RoleAdmin, ok: true},
		{name: "ReadWrite", sets: []auth.PermissionSet{auth.ReadWrite}, role: autoscale.RoleAdmin, ok: true},
		{name: "DataReadWrite", sets: []auth.PermissionSet{auth.DataReadWrite}, role: autoscale.RoleReadWrite, ok: true},
		{name: "ReadOnly", sets: []auth.PermissionSet{auth.ReadOnly}, role: autoscale.RoleReadOnly, ok: true},
		{name: "ReadOnly then DataReadWrite", sets: []auth.PermissionSet{auth.ReadOnly, auth.DataReadWrite}, role: autoscale.RoleReadWrite, ok: true},
		{name: "DataReadWrite then ReadWrite", sets: []auth.PermissionSet{auth.DataReadWrite, auth.ReadWrite}, role: autoscale.RoleAdmin, ok: true},
		{name: "ReadOnly and FullAccess", sets: []auth.PermissionSet{auth.ReadOnly, auth.FullAccess}, role: autoscale.RoleAdmin, ok: true},
		{name: "unknown set", sets: []auth.PermissionSet{"ObjectStorageFullAccess"}, role: "", ok: false},
		{name: "unknown and ReadOnly", sets: []auth.PermissionSet{"ObjectStorageFullAccess", auth.ReadOnly}, role: autoscale.RoleReadOnly, ok: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			role, ok := roleForPermissionSets(tc.sets)
			if role != tc.role {
				t.Errorf("role = %q, want %q", role, tc.role)
			}
			if ok != tc.ok {
				t.Errorf("ok = %v, want %v", ok, tc.ok)
			}
		})
	}
}

// Every permission set that allows a wire login must map to a role, or
// its principals would be rejected after routing accepted them.
func TestEveryConnectableSetHasRole(t *testing.T) {
	for _, set := range auth.KnownPermissionSets {
		if _, ok := permissionSetRoles[set]; !ok {
			t.Errorf("permission set %s has no PostgreSQL role", set)
		}
	}
}
