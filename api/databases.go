package api

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/sdblocal/sdblocal/auth"
	"github.com/sdblocal/sdblocal/catalog"
)

// resourceDatabase is the resource named in not_found and transient_state
// errors about a database.
const resourceDatabase = "database"

// resourceBackup is the resource named in not_found errors about a backup.
const resourceBackup = "backup"

// createdAtLayout is RFC 3339 with exactly six fractional digits, the form
// the real API sends (2026-10-07T06:52:48.906544Z).
const createdAtLayout = "2006-01-02T15:04:05.000000Z07:00"

// databaseJSON is the Database object of the v1alpha1 API.
type databaseJSON struct {
	ID                 string `json:"id"`
	Name               string `json:"name"`
	Status             string `json:"status"`
	Endpoint           string `json:"endpoint"`
	OrganizationID     string `json:"organization_id"`
	ProjectID          string `json:"project_id"`
	Region             string `json:"region"`
	CreatedAt          string `json:"created_at"`
	CPUMin             uint32 `json:"cpu_min"`
	CPUMax             uint32 `json:"cpu_max"`
	CPUCurrent         uint32 `json:"cpu_current"`
	Started            bool   `json:"started"`
	EngineMajorVersion uint32 `json:"engine_major_version"`
	// Version is the newer form of engine_major_version, which the
	// real API sends alongside it.
	Version versionJSON `json:"version"`
	// ColdStartDelay is an sdblocal extension, sent only when the database
	// sets its own delay. The Scaleway SDK ignores it.
	ColdStartDelay string `json:"cold_start_delay,omitempty"`
}

type listDatabasesResponse struct {
	Databases  []databaseJSON `json:"databases"`
	TotalCount uint64         `json:"total_count"`
}

// toJSON renders db with the live state of its instance.
func (s *server) toJSON(db catalog.Database) databaseJSON {
	started, cpuCurrent := s.inst.State(db.ID)
	return databaseJSON{
		ID:                 db.ID,
		Name:               db.Name,
		Status:             string(db.Status),
		Endpoint:           endpointURL(s.cfg.PGHost, s.cfg.PGPort, db.Name, db.ID),
		OrganizationID:     db.OrganizationID,
		ProjectID:          db.ProjectID,
		Region:             db.Region,
		CreatedAt:          db.CreatedAt.UTC().Format(createdAtLayout),
		CPUMin:             db.CPUMin,
		CPUMax:             db.CPUMax,
		CPUCurrent:         cpuCurrent,
		Started:            started,
		EngineMajorVersion: engineMajorVersion,
		Version:            engineVersion(db.Region),
		ColdStartDelay:     db.ColdStartDelay,
	}
}

// endpointURL returns the connection URL of a database on the proxy. A user
// adds principal-id:secret-key@ after the scheme and gives it to psql. The
// options parameter names the database for clients that send no TLS SNI,
// which the proxy would otherwise route by.
func endpointURL(host string, port int, name, id string) string {
	u := url.URL{
		Scheme:   "postgresql",
		Host:     net.JoinHostPort(host, strconv.Itoa(port)),
		Path:     "/" + name,
		RawQuery: "sslmode=require&options=" + url.QueryEscape("databaseid="+id),
	}
	return u.String()
}

// createDatabase handles POST /databases.
func (s *server) createDatabase(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error) {
	var req createDatabaseRequest
	if err := decodeBody(w, r, &req); err != nil {
		return nil, err
	}
	if details := validateCreate(&req); len(details) > 0 {
		return nil, invalidArguments(details...)
	}

	// An unknown project gets the same 403 as a project the caller may not
	// use, so the response does not reveal which project IDs exist.
	project, err := s.lookupProject(req.ProjectID, actionCreate)
	if err != nil {
		return nil, err
	}
	if err := s.authorize(call, project.OrganizationID, project.ID, auth.ActionManage, actionCreate); err != nil {
		return nil, err
	}
	if req.OrganizationID != "" && req.OrganizationID != project.OrganizationID {
		return nil, invalidArgument("organization_id", reasonConstraint,
			fmt.Sprintf("project %s belongs to organization %s, not %s: omit organization_id or fix it", project.ID, project.OrganizationID, req.OrganizationID))
	}
	var fromBackup *catalog.Backup
	if req.FromBackupID != "" {
		backup, err := s.findBackup(call, req.FromBackupID)
		if err != nil {
			return nil, err
		}
		if err := s.authorize(call, backup.OrganizationID, backup.ProjectID, auth.ActionRead, actionRead); err != nil {
			return nil, err
		}
		if backup.Status != catalog.BackupStatusReady {
			return nil, preconditionFailed(preconditionUnknown,
				fmt.Sprintf("backup %s is %s: only a ready backup can be restored", backup.ID, backup.Status))
		}
		if s.cfg.Backups == nil {
			return nil, backupsDisabled("creating a database from a backup")
		}
		fromBackup = &backup
	}

	// Names need not be unique within a project, because the proxy routes
	// by database ID.
	db := catalog.Database{
		ID:             uuid.NewString(),
		Name:           req.Name,
		OrganizationID: project.OrganizationID,
		ProjectID:      project.ID,
		Region:         call.region,
		Status:         catalog.StatusCreating,
		CPUMin:         *req.CPUMin,
		CPUMax:         *req.CPUMax,
		ColdStartDelay: req.ColdStartDelay,
		// Truncated so the stored time equals the one served.
		CreatedAt: time.Now().UTC().Truncate(time.Microsecond),
	}
	err = s.cat.Update(func(tx *catalog.Tx) error {
		// The project may have been deleted since it was looked up.
		if _, err := tx.Project(project.ID); err != nil {
			if errors.Is(err, catalog.ErrNotFound) {
				return permissionsDenied(actionCreate)
			}
			return err
		}
		// Counted in the same transaction as the write, so concurrent
		// creates cannot overshoot the quota.
		if err := s.checkDatabaseQuota(tx, project.ID); err != nil {
			return err
		}
		return tx.PutDatabase(db)
	})
	if err != nil {
		return nil, err
	}

	if fromBackup != nil {
		s.cfg.Backups.ProvisionFromBackup(db, *fromBackup)
	} else {
		s.inst.Provision(db)
	}
	s.log.Info("database created", "database_id", db.ID, "project_id", db.ProjectID, "principal_id", call.principal().ID,
		"name", db.Name, "cpu_min", db.CPUMin, "cpu_max", db.CPUMax, "cold_start_delay", db.ColdStartDelay)
	return s.toJSON(db), nil
}

// resourceDatabaseQuota is the resource named in quotas_exceeded details
// about databases.
const resourceDatabaseQuota = "serverless_sql_database"

// checkDatabaseQuota returns quotas_exceeded when the project already holds
// the maximum number of databases.
func (s *server) checkDatabaseQuota(tx *catalog.Tx, projectID string) error {
	limit := s.cfg.MaxDatabasesPerProject
	if limit < 0 {
		return nil
	}
	count, err := tx.CountDatabases(projectID)
	if err != nil {
		return err
	}
	if count >= limit {
		return quotasExceeded(resourceDatabaseQuota, limit, count)
	}
	return nil
}

// getDatabase handles GET /databases/{database_id}.
func (s *server) getDatabase(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error) {
	id, err := validateDatabaseID(r.PathValue("database_id"))
	if err != nil {
		return nil, err
	}
	db, err := s.findDatabase(call, id)
	if err != nil {
		return nil, err
	}
	if err := s.authorize(call, db.OrganizationID, db.ProjectID, auth.ActionRead, actionRead); err != nil {
		return nil, err
	}
	return s.toJSON(db), nil
}

// deleteDatabase handles DELETE /databases/{database_id}. It marks the
// database deleting and hands it to the instance manager, which deletes the
// record when the instance is gone. Like the real API, the response shows the
// database as it was before the call.
func (s *server) deleteDatabase(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error) {
	id, err := validateDatabaseID(r.PathValue("database_id"))
	if err != nil {
		return nil, err
	}
	db, err := s.findDatabase(call, id)
	if err != nil {
		return nil, err
	}
	if err := s.authorize(call, db.OrganizationID, db.ProjectID, auth.ActionManage, actionDelete); err != nil {
		return nil, err
	}

	var before catalog.Database
	err = s.cat.Update(func(tx *catalog.Tx) error {
		current, err := databaseInTx(tx, id)
		if err != nil {
			return err
		}
		if err := checkSettled(current); err != nil {
			return err
		}
		before = current
		current.Status = catalog.StatusDeleting
		if err := tx.PutDatabase(current); err != nil {
			return err
		}
		// Written in the same transaction as the status, so there is no
		// moment when the record is gone and the ID reads as never existing.
		return tx.PutTombstone(catalog.TombstoneDatabase, id, current.OrganizationID, time.Now())
	})
	if err != nil {
		return nil, err
	}

	s.inst.Remove(id)
	s.log.Info("database deletion started", "database_id", id, "project_id", before.ProjectID, "principal_id", call.principal().ID)
	return s.toJSON(before), nil
}

// updateDatabase handles PATCH /databases/{database_id}, which changes the
// vCPU limits and, as an sdblocal extension, the cold-start delay. The new
// limits apply at once through SetCPU; the instance reads the delay from
// the catalog at its next wake.
func (s *server) updateDatabase(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error) {
	id, err := validateDatabaseID(r.PathValue("database_id"))
	if err != nil {
		return nil, err
	}
	var req updateDatabaseRequest
	if err := decodeBody(w, r, &req); err != nil {
		return nil, err
	}
	if req.ColdStartDelay != nil {
		delay, detail, ok := validateColdStartDelay(*req.ColdStartDelay)
		if !ok {
			return nil, invalidArguments(detail)
		}
		req.ColdStartDelay = &delay
	}
	db, err := s.findDatabase(call, id)
	if err != nil {
		return nil, err
	}
	if err := s.authorize(call, db.OrganizationID, db.ProjectID, auth.ActionManage, actionWrite); err != nil {
		return nil, err
	}

	var updated catalog.Database
	err = s.cat.Update(func(tx *catalog.Tx) error {
		current, err := databaseInTx(tx, id)
		if err != nil {
			return err
		}
		if err := checkSettled(current); err != nil {
			return err
		}
		if req.CPUMin != nil {
			current.CPUMin = *req.CPUMin
		}
		if req.CPUMax != nil {
			current.CPUMax = *req.CPUMax
		}
		if req.ColdStartDelay != nil {
			current.ColdStartDelay = *req.ColdStartDelay
		}
		if details := validateCPURange(current.CPUMin, current.CPUMax); len(details) > 0 {
			return invalidArguments(details...)
		}
		updated = current
		return tx.PutDatabase(current)
	})
	if err != nil {
		return nil, err
	}

	s.inst.SetCPU(id, updated.CPUMin, updated.CPUMax)
	s.log.Info("database updated", "database_id", id, "principal_id", call.principal().ID,
		"cpu_min", updated.CPUMin, "cpu_max", updated.CPUMax, "cold_start_delay", updated.ColdStartDelay)
	return s.toJSON(updated), nil
}

// listDatabases handles GET /databases. It lists only the databases in
// projects the caller may read, and total_count counts those that match the
// filters, across all pages.
func (s *server) listDatabases(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error) {
	q, details := parseListQuery(r.URL.Query())
	if len(details) > 0 {
		return nil, invalidArguments(details...)
	}

	// A filter naming a scope the caller cannot read returns
	// permissions_denied rather than an empty list, so a wrong ID is not
	// mistaken for an empty project.
	principal := call.principal()
	if q.organizationID != "" && q.organizationID != principal.OrganizationID {
		return nil, permissionsDenied(actionList)
	}
	if q.projectID != "" {
		project, err := s.lookupProject(q.projectID, actionList)
		if err != nil {
			return nil, err
		}
		if err := s.authorize(call, project.OrganizationID, project.ID, auth.ActionRead, actionList); err != nil {
			return nil, err
		}
	}

	var matching []catalog.Database
	err := s.cat.View(func(tx *catalog.Tx) error {
		var err error
		matching, err = tx.Databases(func(db *catalog.Database) bool {
			return db.Region == call.region &&
				(q.projectID == "" || db.ProjectID == q.projectID) &&
				(q.organizationID == "" || db.OrganizationID == q.organizationID) &&
				strings.Contains(db.Name, q.name)
		})
		return err
	})
	if err != nil {
		return nil, err
	}

	visible, err := s.readableDatabases(principal, matching)
	if err != nil {
		return nil, err
	}
	sortDatabases(visible, q.orderBy)

	resp := listDatabasesResponse{Databases: []databaseJSON{}, TotalCount: uint64(len(visible))}
	start := (q.page - 1) * q.pageSize
	if start < len(visible) {
		end := min(start+q.pageSize, len(visible))
		for _, db := range visible[start:end] {
			resp.Databases = append(resp.Databases, s.toJSON(db))
		}
	}
	return resp, nil
}

// readableDatabases keeps the databases whose project the principal may
// read.
func (s *server) readableDatabases(principal catalog.Principal, dbs []catalog.Database) ([]catalog.Database, error) {
	return readable(s.authn, principal, dbs, func(db *catalog.Database) (string, string) { return db.OrganizationID, db.ProjectID })
}

// sortDatabases orders dbs, which the catalog returns oldest first with ties
// broken by ID. The name orderings are stable, so equal names stay oldest
// first.
func sortDatabases(dbs []catalog.Database, orderBy string) {
	switch orderBy {
	case orderCreatedAtDesc:
		slices.Reverse(dbs)
	case orderNameAsc:
		slices.SortStableFunc(dbs, func(a, b catalog.Database) int { return cmp.Compare(a.Name, b.Name) })
	case orderNameDesc:
		slices.SortStableFunc(dbs, func(a, b catalog.Database) int { return cmp.Compare(b.Name, a.Name) })
	}
}

// findDatabase reads the database id in the call's region. A missing record
// is a 403 with empty details when a tombstone shows it was deleted, as on
// the real API, and a 404 otherwise.
func (s *server) findDatabase(call *apiCall, id string) (catalog.Database, error) {
	var db catalog.Database
	err := s.cat.View(func(tx *catalog.Tx) error {
		var err error
		db, err = databaseInTx(tx, id)
		return err
	})
	if err != nil {
		return catalog.Database{}, err
	}
	if db.Region != call.region {
		return catalog.Database{}, notFound(resourceDatabase, id)
	}
	return db, nil
}

// databaseInTx reads a database record, turning a missing one into the
// error the client receives.
func databaseInTx(tx *catalog.Tx, id string) (catalog.Database, error) {
	db, err := tx.Database(id)
	if !errors.Is(err, catalog.ErrNotFound) {
		return db, err
	}
	_, err = tx.Tombstone(catalog.TombstoneDatabase, id)
	switch {
	case err == nil:
		return catalog.Database{}, permissionsDeniedDeleted()
	case errors.Is(err, catalog.ErrNotFound):
		return catalog.Database{}, notFound(resourceDatabase, id)
	default:
		return catalog.Database{}, err
	}
}

// checkSettled rejects a change to a database that is in a transient status,
// the statuses the SDK's WaitForDatabase waits through, or locked.
func checkSettled(db catalog.Database) error {
	switch db.Status {
	case catalog.StatusCreating, catalog.StatusDeleting, catalog.StatusRestoring:
		return transientState(resourceDatabase, db.ID, string(db.Status))
	case catalog.StatusLocked:
		return locked(resourceDatabase, db.ID)
	}
	return nil
}

// lookupProject reads a project and returns permissions_denied naming the
// action when it does not exist.
func (s *server) lookupProject(id, action string) (catalog.Project, error) {
	var project catalog.Project
	err := s.cat.View(func(tx *catalog.Tx) error {
		var err error
		project, err = tx.Project(id)
		return err
	})
	if errors.Is(err, catalog.ErrNotFound) {
		return catalog.Project{}, permissionsDenied(action)
	}
	return project, err
}

// authorize checks that the caller may perform action on the project's
// databases and returns permissions_denied naming deniedAction otherwise.
func (s *server) authorize(call *apiCall, organizationID, projectID string, action auth.Action, deniedAction string) error {
	ok, err := s.authn.Authorize(call.principal(), organizationID, projectID, action)
	if err != nil {
		return fmt.Errorf("authorize principal %s on project %s: %w", call.principal().ID, projectID, err)
	}
	if !ok {
		return permissionsDenied(deniedAction)
	}
	return nil
}
