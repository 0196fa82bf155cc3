package api

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/google/uuid"

	"github.com/sdblocal/sdblocal/auth"
	"github.com/sdblocal/sdblocal/catalog"
)

// applicationJSON is the Application object of iam/v1alpha1. sdblocal has
// no managed applications, so every application is editable and deletable.
type applicationJSON struct {
	ID             string   `json:"id"`
	Name           string   `json:"name"`
	Description    string   `json:"description"`
	CreatedAt      string   `json:"created_at"`
	UpdatedAt      string   `json:"updated_at"`
	OrganizationID string   `json:"organization_id"`
	Editable       bool     `json:"editable"`
	Deletable      bool     `json:"deletable"`
	Managed        bool     `json:"managed"`
	NbAPIKeys      uint32   `json:"nb_api_keys"`
	Tags           []string `json:"tags"`
}

type listApplicationsResponse struct {
	Applications []applicationJSON `json:"applications"`
	TotalCount   uint32            `json:"total_count"`
}

// Application list orderings, the values of ListApplicationsRequestOrderBy
// in the SDK. The first is the default.
var applicationOrders = []string{"created_at_asc", "created_at_desc", "updated_at_asc", "updated_at_desc", "name_asc", "name_desc"}

type createApplicationRequest struct {
	Name           string   `json:"name"`
	OrganizationID string   `json:"organization_id"`
	Description    string   `json:"description"`
	Tags           []string `json:"tags"`
}

// updateApplicationRequest changes only the fields present.
type updateApplicationRequest struct {
	Name        *string   `json:"name"`
	Description *string   `json:"description"`
	Tags        *[]string `json:"tags"`
}

func toApplicationJSON(p catalog.Principal, keys int) applicationJSON {
	return applicationJSON{
		ID:             p.ID,
		Name:           p.Name,
		Description:    p.Description,
		CreatedAt:      formatTime(p.CreatedAt),
		UpdatedAt:      formatTime(updatedAt(p.CreatedAt, p.UpdatedAt)),
		OrganizationID: p.OrganizationID,
		Editable:       true,
		Deletable:      true,
		NbAPIKeys:      clampUint32(keys),
		Tags:           orEmpty(p.Tags),
	}
}

// createApplication handles POST /applications.
func (s *server) createApplication(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error) {
	var req createApplicationRequest
	if err := decodeBody(w, r, &req); err != nil {
		return nil, err
	}
	var invalid argumentErrors
	invalid.check(validateIAMName("name", req.Name))
	invalid.check(validateDescription("description", req.Description))
	invalid.check(validateTags(req.Tags))
	if err := invalid.err(); err != nil {
		return nil, err
	}
	organizationID, err := callerOrganization(call, "organization_id", req.OrganizationID, permissionApplication, actionCreate)
	if err != nil {
		return nil, err
	}
	if err := s.authorizeOrganization(call, organizationID, auth.ActionIAMManage, permissionApplication, actionCreate); err != nil {
		return nil, err
	}

	app := catalog.Principal{
		ID:             uuid.NewString(),
		OrganizationID: organizationID,
		Kind:           catalog.PrincipalApplication,
		Name:           req.Name,
		Description:    req.Description,
		Tags:           req.Tags,
		CreatedAt:      recordTime(),
	}
	if err := s.cat.Update(func(tx *catalog.Tx) error { return tx.PutPrincipal(app) }); err != nil {
		return nil, err
	}
	s.log.Info("application created", "application_id", app.ID, "principal_id", call.principal().ID, "name", app.Name)
	return toApplicationJSON(app, 0), nil
}

// getApplication handles GET /applications/{application_id}.
func (s *server) getApplication(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error) {
	app, err := s.findApplication(r.PathValue("application_id"))
	if err != nil {
		return nil, err
	}
	if err := s.authorizeOrganization(call, app.OrganizationID, auth.ActionIAMRead, permissionApplication, actionRead); err != nil {
		return nil, err
	}
	keys, err := s.countKeys(app.ID)
	if err != nil {
		return nil, err
	}
	return toApplicationJSON(app, keys), nil
}

// updateApplication handles PATCH /applications/{application_id}.
func (s *server) updateApplication(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error) {
	var req updateApplicationRequest
	if err := decodeBody(w, r, &req); err != nil {
		return nil, err
	}
	app, err := s.findApplication(r.PathValue("application_id"))
	if err != nil {
		return nil, err
	}
	if err := s.authorizeOrganization(call, app.OrganizationID, auth.ActionIAMManage, permissionApplication, actionWrite); err != nil {
		return nil, err
	}
	var invalid argumentErrors
	if req.Name != nil {
		invalid.check(validateIAMName("name", *req.Name))
	}
	if req.Description != nil {
		invalid.check(validateDescription("description", *req.Description))
	}
	if req.Tags != nil {
		invalid.check(validateTags(*req.Tags))
	}
	if err := invalid.err(); err != nil {
		return nil, err
	}

	var updated catalog.Principal
	var keys int
	err = s.cat.Update(func(tx *catalog.Tx) error {
		current, err := tx.Principal(app.ID)
		if errors.Is(err, catalog.ErrNotFound) {
			return notFound(resourceApplication, app.ID)
		}
		if err != nil {
			return err
		}
		if req.Name != nil {
			current.Name = *req.Name
		}
		if req.Description != nil {
			current.Description = *req.Description
		}
		if req.Tags != nil {
			current.Tags = *req.Tags
		}
		current.UpdatedAt = recordTime()
		updated = current
		ownKeys, err := tx.APIKeysOfPrincipal(app.ID)
		if err != nil {
			return err
		}
		keys = len(ownKeys)
		return tx.PutPrincipal(current)
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("application updated", "application_id", app.ID, "principal_id", call.principal().ID)
	return toApplicationJSON(updated, keys), nil
}

// deleteApplication handles DELETE /applications/{application_id}. The
// application's API keys and policies are deleted with it, so its open
// wire connections can no longer authenticate a new session.
func (s *server) deleteApplication(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error) {
	app, err := s.findApplication(r.PathValue("application_id"))
	if err != nil {
		return nil, err
	}
	if err := s.authorizeOrganization(call, app.OrganizationID, auth.ActionIAMManage, permissionApplication, actionDelete); err != nil {
		return nil, err
	}
	err = s.cat.Update(func(tx *catalog.Tx) error {
		err := tx.DeletePrincipal(app.ID)
		if errors.Is(err, catalog.ErrNotFound) {
			return notFound(resourceApplication, app.ID)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("application deleted", "application_id", app.ID, "principal_id", call.principal().ID)
	return noContent{}, nil
}

// listApplications handles GET /applications.
func (s *server) listApplications(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error) {
	values := r.URL.Query()
	p := newQueryParser(values)
	paging := p.paging(applicationOrders)
	editable := p.boolean("editable")
	ids := p.uuids("application_ids")
	if err := p.err(); err != nil {
		return nil, err
	}
	organizationID, err := callerOrganization(call, "organization_id", values.Get("organization_id"), permissionApplication, actionList)
	if err != nil {
		return nil, err
	}
	if err := s.authorizeOrganization(call, organizationID, auth.ActionIAMRead, permissionApplication, actionList); err != nil {
		return nil, err
	}

	name, tag := values.Get("name"), values.Get("tag")
	var apps []catalog.Principal
	keyCounts := map[string]int{}
	err = s.cat.View(func(tx *catalog.Tx) error {
		var err error
		apps, err = tx.Principals(func(p *catalog.Principal) bool {
			return p.Kind == catalog.PrincipalApplication &&
				p.OrganizationID == organizationID &&
				strings.Contains(p.Name, name) &&
				(editable == nil || *editable) &&
				(len(ids) == 0 || slices.Contains(ids, p.ID)) &&
				containsTag(p.Tags, tag)
		})
		if err != nil {
			return err
		}
		keys, err := tx.APIKeys(func(k *catalog.APIKey) bool { return k.OrganizationID == organizationID })
		for _, key := range keys {
			keyCounts[key.PrincipalID]++
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	sortPrincipals(apps, paging.orderBy)

	resp := listApplicationsResponse{Applications: []applicationJSON{}, TotalCount: clampUint32(len(apps))}
	for _, app := range paginate(apps, paging) {
		resp.Applications = append(resp.Applications, toApplicationJSON(app, keyCounts[app.ID]))
	}
	return resp, nil
}

// sortPrincipals orders principals, which the catalog returns oldest first,
// by an application or user order_by value. The sort is stable, so equal
// keys stay oldest first. Orderings on fields sdblocal does not store
// (email, last login) keep the creation order.
func sortPrincipals(principals []catalog.Principal, orderBy string) {
	var key func(a, b catalog.Principal) int
	switch {
	case strings.HasPrefix(orderBy, "created_at"):
		key = func(a, b catalog.Principal) int { return a.CreatedAt.Compare(b.CreatedAt) }
	case strings.HasPrefix(orderBy, "updated_at"):
		key = func(a, b catalog.Principal) int {
			return updatedAt(a.CreatedAt, a.UpdatedAt).Compare(updatedAt(b.CreatedAt, b.UpdatedAt))
		}
	case strings.HasPrefix(orderBy, "name"), strings.HasPrefix(orderBy, "username"):
		key = func(a, b catalog.Principal) int { return cmp.Compare(a.Name, b.Name) }
	default:
		key = func(a, b catalog.Principal) int { return 0 }
	}
	slices.SortStableFunc(principals, func(a, b catalog.Principal) int { return ascending(orderBy, key(a, b)) })
}

// findApplication checks an application ID and reads the application. A
// user's ID is reported as a missing application.
func (s *server) findApplication(rawID string) (catalog.Principal, error) {
	return s.findPrincipal(rawID, "application_id", catalog.PrincipalApplication, resourceApplication)
}

// findPrincipal checks a principal ID sent in the field named field and
// reads the principal of the given kind.
func (s *server) findPrincipal(rawID, field string, kind catalog.PrincipalKind, resource string) (catalog.Principal, error) {
	if !auth.ValidUUID(rawID) {
		return catalog.Principal{}, invalidArgument(field, reasonFormat, fmt.Sprintf("%s %q is not a UUID", field, rawID))
	}
	id := strings.ToLower(rawID)
	var p catalog.Principal
	err := s.cat.View(func(tx *catalog.Tx) error {
		var err error
		p, err = tx.Principal(id)
		return err
	})
	if errors.Is(err, catalog.ErrNotFound) || (err == nil && p.Kind != kind) {
		return catalog.Principal{}, notFound(resource, id)
	}
	return p, err
}

// countKeys returns the number of API keys of a principal.
func (s *server) countKeys(principalID string) (int, error) {
	var keys []catalog.APIKey
	err := s.cat.View(func(tx *catalog.Tx) error {
		var err error
		keys, err = tx.APIKeysOfPrincipal(principalID)
		return err
	})
	return len(keys), err
}
