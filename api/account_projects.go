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

// accountPrefix is the path prefix of the Account calls, which are global.
const accountPrefix = "/account/v3"

// projectJSON is the Project object of account/v3. sdblocal keeps no
// qualification, and a project is active until it is deleted, which
// happens at once.
type projectJSON struct {
	ID             string  `json:"id"`
	Name           string  `json:"name"`
	OrganizationID string  `json:"organization_id"`
	CreatedAt      string  `json:"created_at"`
	UpdatedAt      string  `json:"updated_at"`
	Description    string  `json:"description"`
	Qualification  *string `json:"qualification"`
	Status         string  `json:"status"`
}

type listProjectsResponse struct {
	TotalCount uint64        `json:"total_count"`
	Projects   []projectJSON `json:"projects"`
}

// Project list orderings, the values of ListProjectsRequestOrderBy in the
// SDK. The first is the default.
var projectOrders = []string{"created_at_asc", "created_at_desc", "name_asc", "name_desc"}

type createProjectRequest struct {
	Name           string `json:"name"`
	OrganizationID string `json:"organization_id"`
	Description    string `json:"description"`
}

// updateProjectRequest changes only the fields present.
type updateProjectRequest struct {
	Name        *string `json:"name"`
	Description *string `json:"description"`
}

func toProjectJSON(p catalog.Project) projectJSON {
	return projectJSON{
		ID:             p.ID,
		Name:           p.Name,
		OrganizationID: p.OrganizationID,
		CreatedAt:      formatTime(p.CreatedAt),
		UpdatedAt:      formatTime(updatedAt(p.CreatedAt, p.UpdatedAt)),
		Description:    p.Description,
		Status:         "active",
	}
}

func (s *server) accountRoutes(mux *http.ServeMux) {
	s.handleResource(mux, accountPrefix+"/projects", map[string]apiHandler{
		http.MethodGet:  s.listProjects,
		http.MethodPost: s.createProject,
	})
	s.handleResource(mux, accountPrefix+"/projects/{project_id}", map[string]apiHandler{
		http.MethodGet:    s.getProject,
		http.MethodPatch:  s.updateProject,
		http.MethodDelete: s.deleteProject,
	})
}

// createProject handles POST /projects. Project names need not be unique,
// because databases and rules name projects by ID.
func (s *server) createProject(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error) {
	var req createProjectRequest
	if err := decodeBody(w, r, &req); err != nil {
		return nil, err
	}
	var invalid argumentErrors
	invalid.check(validateIAMName("name", req.Name))
	invalid.check(validateDescription("description", req.Description))
	if err := invalid.err(); err != nil {
		return nil, err
	}
	organizationID, err := callerOrganization(call, "organization_id", req.OrganizationID, permissionProject, actionCreate)
	if err != nil {
		return nil, err
	}
	if err := s.authorizeOrganization(call, organizationID, auth.ActionProjectManage, permissionProject, actionCreate); err != nil {
		return nil, err
	}

	project := catalog.Project{
		ID:             uuid.NewString(),
		OrganizationID: organizationID,
		Name:           req.Name,
		Description:    req.Description,
		CreatedAt:      recordTime(),
	}
	if err := s.cat.Update(func(tx *catalog.Tx) error { return tx.PutProject(project) }); err != nil {
		return nil, err
	}
	s.log.Info("project created", "project_id", project.ID, "principal_id", call.principal().ID, "name", project.Name)
	return toProjectJSON(project), nil
}

// getProject handles GET /projects/{project_id}.
func (s *server) getProject(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error) {
	project, err := s.findProject(r.PathValue("project_id"))
	if err != nil {
		return nil, err
	}
	if err := s.authorizeOrganization(call, project.OrganizationID, auth.ActionProjectRead, permissionProject, actionRead); err != nil {
		return nil, err
	}
	return toProjectJSON(project), nil
}

// updateProject handles PATCH /projects/{project_id}.
func (s *server) updateProject(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error) {
	var req updateProjectRequest
	if err := decodeBody(w, r, &req); err != nil {
		return nil, err
	}
	project, err := s.findProject(r.PathValue("project_id"))
	if err != nil {
		return nil, err
	}
	if err := s.authorizeOrganization(call, project.OrganizationID, auth.ActionProjectManage, permissionProject, actionWrite); err != nil {
		return nil, err
	}
	var invalid argumentErrors
	if req.Name != nil {
		invalid.check(validateIAMName("name", *req.Name))
	}
	if req.Description != nil {
		invalid.check(validateDescription("description", *req.Description))
	}
	if err := invalid.err(); err != nil {
		return nil, err
	}

	var updated catalog.Project
	err = s.cat.Update(func(tx *catalog.Tx) error {
		current, err := tx.Project(project.ID)
		if errors.Is(err, catalog.ErrNotFound) {
			return notFound(resourceProject, project.ID)
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
		current.UpdatedAt = recordTime()
		updated = current
		return tx.PutProject(current)
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("project updated", "project_id", project.ID, "principal_id", call.principal().ID)
	return toProjectJSON(updated), nil
}

// deleteProject handles DELETE /projects/{project_id}. A project that
// still holds databases, or that API keys default to, is kept and the call
// fails with precondition_failed resource_still_in_use.
func (s *server) deleteProject(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error) {
	project, err := s.findProject(r.PathValue("project_id"))
	if err != nil {
		return nil, err
	}
	if err := s.authorizeOrganization(call, project.OrganizationID, auth.ActionProjectManage, permissionProject, actionDelete); err != nil {
		return nil, err
	}
	err = s.cat.Update(func(tx *catalog.Tx) error { return tx.DeleteProject(project.ID) })
	var inUse *catalog.ProjectInUseError
	switch {
	case errors.As(err, &inUse):
		return nil, preconditionFailed(preconditionResourceStillInUse, projectInUseHelp(inUse))
	case errors.Is(err, catalog.ErrNotFound):
		return nil, notFound(resourceProject, project.ID)
	case err != nil:
		return nil, err
	}
	s.log.Info("project deleted", "project_id", project.ID, "principal_id", call.principal().ID)
	return noContent{}, nil
}

func projectInUseHelp(e *catalog.ProjectInUseError) string {
	var uses []string
	if e.Databases > 0 {
		uses = append(uses, fmt.Sprintf("delete its %d databases", e.Databases))
	}
	if e.APIKeys > 0 {
		uses = append(uses, fmt.Sprintf("move the default project of its %d API keys elsewhere", e.APIKeys))
	}
	return fmt.Sprintf("project %s is still in use: %s first", e.ProjectID, strings.Join(uses, " and "))
}

// listProjects handles GET /projects.
func (s *server) listProjects(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error) {
	values := r.URL.Query()
	p := newQueryParser(values)
	paging := p.paging(projectOrders)
	ids := p.uuids("project_ids")
	if err := p.err(); err != nil {
		return nil, err
	}
	organizationID, err := callerOrganization(call, "organization_id", values.Get("organization_id"), permissionProject, actionList)
	if err != nil {
		return nil, err
	}
	if err := s.authorizeOrganization(call, organizationID, auth.ActionProjectRead, permissionProject, actionList); err != nil {
		return nil, err
	}

	name := values.Get("name")
	var projects []catalog.Project
	err = s.cat.View(func(tx *catalog.Tx) error {
		all, err := tx.Projects(organizationID)
		for _, project := range all {
			if strings.Contains(project.Name, name) && (len(ids) == 0 || slices.Contains(ids, project.ID)) {
				projects = append(projects, project)
			}
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	sortProjects(projects, paging.orderBy)

	resp := listProjectsResponse{Projects: []projectJSON{}, TotalCount: uint64(len(projects))}
	for _, project := range paginate(projects, paging) {
		resp.Projects = append(resp.Projects, toProjectJSON(project))
	}
	return resp, nil
}

// sortProjects orders projects, which the catalog returns by ID. Ties are
// broken by ID so the order is stable across pages.
func sortProjects(projects []catalog.Project, orderBy string) {
	key := func(a, b catalog.Project) int { return a.CreatedAt.Compare(b.CreatedAt) }
	if strings.HasPrefix(orderBy, "name") {
		key = func(a, b catalog.Project) int { return cmp.Compare(a.Name, b.Name) }
	}
	slices.SortFunc(projects, func(a, b catalog.Project) int {
		if c := key(a, b); c != 0 {
			return ascending(orderBy, c)
		}
		return cmp.Compare(a.ID, b.ID)
	})
}

// findProject checks a project ID and reads the project.
func (s *server) findProject(rawID string) (catalog.Project, error) {
	if !auth.ValidUUID(rawID) {
		return catalog.Project{}, invalidArgument("project_id", reasonFormat, fmt.Sprintf("project_id %q is not a UUID", rawID))
	}
	id := strings.ToLower(rawID)
	var project catalog.Project
	err := s.cat.View(func(tx *catalog.Tx) error {
		var err error
		project, err = tx.Project(id)
		return err
	})
	if errors.Is(err, catalog.ErrNotFound) {
		return catalog.Project{}, notFound(resourceProject, id)
	}
	return project, err
}
