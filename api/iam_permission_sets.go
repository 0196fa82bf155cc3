package api

import (
	"cmp"
	"net/http"
	"slices"

	"github.com/google/uuid"

	"github.com/sdblocal/sdblocal/auth"
)

// permissionSetJSON is the PermissionSet object of iam/v1alpha1.
type permissionSetJSON struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	ScopeType   string   `json:"scope_type"`
	Description string   `json:"description"`
	Categories  []string `json:"categories"`
}

type listPermissionSetsResponse struct {
	PermissionSets []permissionSetJSON `json:"permission_sets"`
	TotalCount     uint32              `json:"total_count"`
}

// Permission set list orderings, the values of
// ListPermissionSetsRequestOrderBy in the SDK. The first is the default.
var permissionSetOrders = []string{"name_asc", "name_desc", "created_at_asc", "created_at_desc"}

// permissionSetNamespace derives stable permission set IDs from their
// names, so an ID stays the same across restarts and data directories.
var permissionSetNamespace = uuid.MustParse("0b5a4d38-7c1e-4b8e-9a53-2f6d1c0e8a71")

// permissionSetDescriptions contains the rights each permission set grants
// in sdblocal. They are narrower than on Scaleway for the
// organization-scoped sets, because sdblocal serves no billing, support or
// other products.
var permissionSetDescriptions = map[auth.PermissionSet]string{
	auth.FullAccess:          "Create, configure, restore and delete databases, read them, and connect with DDL and DML rights (role_admin).",
	auth.ReadWrite:           "List and read databases, and connect with DDL and DML rights (role_admin).",
	auth.DataReadWrite:       "Connect with SELECT, INSERT, UPDATE and DELETE rights (role_readwrite). No API rights.",
	auth.ReadOnly:            "List and read databases and backups, and connect with SELECT rights (role_readonly).",
	auth.OrganizationManager: "Manage projects and IAM: applications, users, API keys and policies.",
	auth.IAMManager:          "Manage applications, API keys and policies, and projects.",
	auth.IAMReadOnly:         "List and read applications, users, API keys and policies.",
	auth.ProjectManager:      "Create, rename, list and delete projects.",
	auth.ProjectReadOnly:     "List and read projects.",
}

func toPermissionSetJSON(set auth.PermissionSet) permissionSetJSON {
	out := permissionSetJSON{
		ID:          uuid.NewSHA1(permissionSetNamespace, []byte(set)).String(),
		Name:        string(set),
		ScopeType:   scopeProjects,
		Description: permissionSetDescriptions[set],
		Categories:  []string{"Serverless SQL Databases"},
	}
	if set.OrganizationScoped() {
		out.ScopeType = scopeOrganization
		out.Categories = []string{"Identity and Access Management"}
	}
	return out
}

// listPermissionSets handles GET /permission-sets. Any authenticated
// caller may list them, because the list holds nothing of an
// organization. The permission sets have no creation date, so the
// created_at orderings keep the order of auth.KnownPermissionSets followed
// by auth.OrganizationPermissionSets.
func (s *server) listPermissionSets(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error) {
	values := r.URL.Query()
	p := newQueryParser(values)
	paging := p.paging(permissionSetOrders)
	if err := p.err(); err != nil {
		return nil, err
	}
	if _, err := callerOrganization(call, "organization_id", values.Get("organization_id"), permissionPolicy, actionList); err != nil {
		return nil, err
	}

	sets := append(slices.Clone(auth.KnownPermissionSets), auth.OrganizationPermissionSets...)
	if paging.orderBy == "name_asc" || paging.orderBy == "name_desc" {
		slices.SortFunc(sets, func(a, b auth.PermissionSet) int { return ascending(paging.orderBy, cmp.Compare(a, b)) })
	} else if paging.orderBy == "created_at_desc" {
		slices.Reverse(sets)
	}
	resp := listPermissionSetsResponse{PermissionSets: []permissionSetJSON{}, TotalCount: clampUint32(len(sets))}
	for _, set := range paginate(sets, paging) {
		resp.PermissionSets = append(resp.PermissionSets, toPermissionSetJSON(set))
	}
	return resp, nil
}
