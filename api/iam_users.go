package api

import (
	"net/http"
	"slices"

	"github.com/sdblocal/sdblocal/auth"
	"github.com/sdblocal/sdblocal/catalog"
)

// userJSON is the User object of iam/v1alpha1. sdblocal stores no e-mail
// address, phone, locale or login history, so those fields are empty.
type userJSON struct {
	ID                string   `json:"id"`
	Email             string   `json:"email"`
	Username          string   `json:"username"`
	FirstName         string   `json:"first_name"`
	LastName          string   `json:"last_name"`
	PhoneNumber       string   `json:"phone_number"`
	Locale            string   `json:"locale"`
	CreatedAt         string   `json:"created_at"`
	UpdatedAt         string   `json:"updated_at"`
	OrganizationID    string   `json:"organization_id"`
	Deletable         bool     `json:"deletable"`
	LastLoginAt       *string  `json:"last_login_at"`
	Type              string   `json:"type"`
	Status            string   `json:"status"`
	Mfa               bool     `json:"mfa"`
	AccountRootUserID string   `json:"account_root_user_id"`
	Tags              []string `json:"tags"`
	Locked            bool     `json:"locked"`
}

type listUsersResponse struct {
	Users      []userJSON `json:"users"`
	TotalCount uint32     `json:"total_count"`
}

// User list orderings, the values of ListUsersRequestOrderBy in the SDK.
// The first is the default.
var userOrders = []string{
	"created_at_asc", "created_at_desc", "updated_at_asc", "updated_at_desc",
	"email_asc", "email_desc", "last_login_asc", "last_login_desc", "username_asc", "username_desc",
}

// User types, the values of UserType in the SDK besides unknown_type.
const (
	userTypeOwner  = "owner"
	userTypeMember = "member"
)

func toUserJSON(p catalog.Principal) userJSON {
	userType := userTypeMember
	if p.Owner {
		userType = userTypeOwner
	}
	return userJSON{
		ID:             p.ID,
		Username:       p.Name,
		CreatedAt:      formatTime(p.CreatedAt),
		UpdatedAt:      formatTime(updatedAt(p.CreatedAt, p.UpdatedAt)),
		OrganizationID: p.OrganizationID,
		// The owner can never be deleted, and sdblocal has no call that
		// deletes another user.
		Deletable: false,
		Type:      userType,
		Status:    "activated",
		Tags:      orEmpty(p.Tags),
	}
}

// getUser handles GET /users/{user_id}.
func (s *server) getUser(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error) {
	user, err := s.findPrincipal(r.PathValue("user_id"), "user_id", catalog.PrincipalUser, resourceUser)
	if err != nil {
		return nil, err
	}
	if err := s.authorizeOrganization(call, user.OrganizationID, auth.ActionIAMRead, permissionUser, actionRead); err != nil {
		return nil, err
	}
	return toUserJSON(user), nil
}

// listUsers handles GET /users. The SDK always sends type, unknown_type
// when the caller set none.
func (s *server) listUsers(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error) {
	values := r.URL.Query()
	p := newQueryParser(values)
	paging := p.paging(userOrders)
	ids := p.uuids("user_ids")
	mfa := p.boolean("mfa")
	userType := p.enum("type", "unknown_type", []string{userTypeOwner, userTypeMember})
	if err := p.err(); err != nil {
		return nil, err
	}
	organizationID, err := callerOrganization(call, "organization_id", values.Get("organization_id"), permissionUser, actionList)
	if err != nil {
		return nil, err
	}
	if err := s.authorizeOrganization(call, organizationID, auth.ActionIAMRead, permissionUser, actionList); err != nil {
		return nil, err
	}

	tag := values.Get("tag")
	var users []catalog.Principal
	err = s.cat.View(func(tx *catalog.Tx) error {
		var err error
		users, err = tx.Principals(func(p *catalog.Principal) bool {
			return p.Kind == catalog.PrincipalUser &&
				p.OrganizationID == organizationID &&
				(len(ids) == 0 || slices.Contains(ids, p.ID)) &&
				// No user has MFA in sdblocal.
				(mfa == nil || !*mfa) &&
				(userType == "" || toUserJSON(*p).Type == userType) &&
				containsTag(p.Tags, tag)
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	sortPrincipals(users, paging.orderBy)

	resp := listUsersResponse{Users: []userJSON{}, TotalCount: clampUint32(len(users))}
	for _, user := range paginate(users, paging) {
		resp.Users = append(resp.Users, toUserJSON(user))
	}
	return resp, nil
}
