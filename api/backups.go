package api

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/sdblocal/sdblocal/auth"
	"github.com/sdblocal/sdblocal/catalog"
)

// Backups is the interface to the backup service. The API reads the backup
// records from the catalog, checks permissions and statuses, and calls
// Backups only for the work itself.
type Backups interface {
	// Export starts preparing a download of the backup and returns the
	// record as it is now. The service sets download_url on the catalog
	// record once the file is ready.
	Export(backup catalog.Backup) (catalog.Backup, error)
	// Restore overwrites the database's data with the backup in the
	// background. The API has already set the database's status to
	// restoring, and Restore sets it to ready or error when done.
	Restore(db catalog.Database, backup catalog.Backup)
	// ProvisionFromBackup creates the database's instance and loads the
	// backup into it in the background, in place of Instances.Provision.
	// It sets the status to ready when done, or to error.
	ProvisionFromBackup(db catalog.Database, backup catalog.Backup)
}

// Backup list orderings, the values of ListDatabaseBackupsRequestOrderBy in
// the SDK. The first is the default.
var backupOrders = []string{orderCreatedAtDesc, orderCreatedAtAsc}

// backupJSON is the DatabaseBackup object of the v1alpha1 API.
type backupJSON struct {
	ID                   string  `json:"id"`
	Status               string  `json:"status"`
	OrganizationID       string  `json:"organization_id"`
	ProjectID            string  `json:"project_id"`
	DatabaseID           string  `json:"database_id"`
	CreatedAt            *string `json:"created_at"`
	ExpiresAt            *string `json:"expires_at"`
	Size                 *uint64 `json:"size"`
	DatabaseSize         *uint64 `json:"db_size"`
	DownloadURL          *string `json:"download_url"`
	DownloadURLExpiresAt *string `json:"download_url_expires_at"`
	Region               string  `json:"region"`
}

type listBackupsResponse struct {
	Backups    []backupJSON `json:"backups"`
	TotalCount uint64       `json:"total_count"`
}

func toBackupJSON(b catalog.Backup) backupJSON {
	out := backupJSON{
		ID:                   b.ID,
		Status:               string(b.Status),
		OrganizationID:       b.OrganizationID,
		ProjectID:            b.ProjectID,
		DatabaseID:           b.DatabaseID,
		CreatedAt:            formatTimePtr(&b.CreatedAt),
		ExpiresAt:            formatTimePtr(b.ExpiresAt),
		Size:                 b.Size,
		DatabaseSize:         b.DatabaseSize,
		DownloadURLExpiresAt: formatTimePtr(b.DownloadURLExpiresAt),
		Region:               b.Region,
	}
	if out.Status == "" {
		out.Status = string(catalog.BackupStatusUnknown)
	}
	if b.DownloadURL != "" {
		out.DownloadURL = &b.DownloadURL
	}
	return out
}

// formatTime renders t as the real API does: RFC 3339 in UTC with six
// fractional digits.
func formatTime(t time.Time) string { return t.UTC().Format(createdAtLayout) }

// formatTimePtr renders t, or returns nil, sent as null, for a nil or zero
// time.
func formatTimePtr(t *time.Time) *string {
	if t == nil || t.IsZero() {
		return nil
	}
	s := formatTime(*t)
	return &s
}

func (s *server) backupRoutes(mux *http.ServeMux) {
	backups := apiPrefix + "/backups"
	s.handleResource(mux, backups, map[string]apiHandler{
		http.MethodGet: s.listBackups,
	})
	s.handleResource(mux, backups+"/{backup_id}", map[string]apiHandler{
		http.MethodGet: s.getBackup,
	})
	s.handleResource(mux, backups+"/{backup_id}/export", map[string]apiHandler{
		http.MethodPost: s.exportBackup,
	})
	s.handleResource(mux, apiPrefix+"/databases/{database_id}/restore", map[string]apiHandler{
		http.MethodPost: s.restoreDatabase,
	})
}

// listBackups handles GET /backups. Like GET /databases it lists only the
// backups in projects the caller may read. The SDK always sends
// database_id, empty when the caller set none.
func (s *server) listBackups(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error) {
	p := newQueryParser(r.URL.Query())
	paging := p.paging(backupOrders)
	databaseID := p.uuid("database_id")
	projectID := p.uuid("project_id")
	organizationID := p.uuid("organization_id")
	if err := p.err(); err != nil {
		return nil, err
	}

	principal := call.principal()
	if organizationID != "" && organizationID != principal.OrganizationID {
		return nil, permissionsDenied(actionList)
	}
	if projectID != "" {
		project, err := s.lookupProject(projectID, actionList)
		if err != nil {
			return nil, err
		}
		if err := s.authorize(call, project.OrganizationID, project.ID, auth.ActionRead, actionList); err != nil {
			return nil, err
		}
	}

	var matching []catalog.Backup
	err := s.cat.View(func(tx *catalog.Tx) error {
		var err error
		matching, err = tx.Backups(func(b *catalog.Backup) bool {
			return b.Region == call.region &&
				(databaseID == "" || b.DatabaseID == databaseID) &&
				(projectID == "" || b.ProjectID == projectID) &&
				(organizationID == "" || b.OrganizationID == organizationID)
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	visible, err := readable(s.authn, principal, matching, func(b *catalog.Backup) (string, string) { return b.OrganizationID, b.ProjectID })
	if err != nil {
		return nil, err
	}
	// The catalog returns the oldest first.
	if paging.orderBy == orderCreatedAtDesc {
		slices.Reverse(visible)
	}

	resp := listBackupsResponse{Backups: []backupJSON{}, TotalCount: uint64(len(visible))}
	for _, b := range paginate(visible, paging) {
		resp.Backups = append(resp.Backups, toBackupJSON(b))
	}
	return resp, nil
}

// getBackup handles GET /backups/{backup_id}.
func (s *server) getBackup(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error) {
	backup, err := s.findBackup(call, r.PathValue("backup_id"))
	if err != nil {
		return nil, err
	}
	if err := s.authorize(call, backup.OrganizationID, backup.ProjectID, auth.ActionRead, actionRead); err != nil {
		return nil, err
	}
	return toBackupJSON(backup), nil
}

// exportBackup handles POST /backups/{backup_id}/export. An export hands
// out the whole database, so it needs the right to manage the project's
// databases rather than only to read them.
func (s *server) exportBackup(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error) {
	// The SDK sends {}; the body carries nothing, but a malformed one is
	// still a client mistake worth reporting.
	var body struct{}
	if err := decodeBody(w, r, &body); err != nil {
		return nil, err
	}
	backup, err := s.findBackup(call, r.PathValue("backup_id"))
	if err != nil {
		return nil, err
	}
	if err := s.authorize(call, backup.OrganizationID, backup.ProjectID, auth.ActionManage, actionExport); err != nil {
		return nil, err
	}
	if backup.Status != catalog.BackupStatusReady {
		return nil, preconditionFailed(preconditionUnknown,
			fmt.Sprintf("backup %s is %s: only a ready backup can be exported", backup.ID, backup.Status))
	}
	if s.cfg.Backups == nil {
		return nil, backupsDisabled("exporting a backup")
	}
	exported, err := s.cfg.Backups.Export(backup)
	if err != nil {
		return nil, fmt.Errorf("export backup %s: %w", backup.ID, err)
	}
	s.log.Info("backup export started", "backup_id", backup.ID, "database_id", backup.DatabaseID, "principal_id", call.principal().ID)
	return toBackupJSON(exported), nil
}

type restoreDatabaseRequest struct {
	BackupID string `json:"backup_id"`
}

// restoreDatabase handles POST /databases/{database_id}/restore, which
// overwrites a database with one of its own backups. Restoring another
// database's backup is done by creating a database with from_backup_id.
func (s *server) restoreDatabase(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error) {
	id, err := validateDatabaseID(r.PathValue("database_id"))
	if err != nil {
		return nil, err
	}
	var req restoreDatabaseRequest
	if err := decodeBody(w, r, &req); err != nil {
		return nil, err
	}
	backupID, err := validateBackupID(req.BackupID)
	if err != nil {
		return nil, err
	}

	db, err := s.findDatabase(call, id)
	if err != nil {
		return nil, err
	}
	if err := s.authorize(call, db.OrganizationID, db.ProjectID, auth.ActionManage, actionRestore); err != nil {
		return nil, err
	}
	backup, err := s.findBackup(call, backupID)
	if err != nil {
		return nil, err
	}
	if backup.DatabaseID != db.ID {
		return nil, invalidArgument("backup_id", reasonConstraint,
			fmt.Sprintf("backup %s belongs to database %s, not %s: create a new database from it with from_backup_id", backup.ID, backup.DatabaseID, db.ID))
	}
	if backup.Status != catalog.BackupStatusReady {
		return nil, preconditionFailed(preconditionUnknown,
			fmt.Sprintf("backup %s is %s: only a ready backup can be restored", backup.ID, backup.Status))
	}
	if s.cfg.Backups == nil {
		return nil, backupsDisabled("restoring a backup")
	}

	var restoring catalog.Database
	err = s.cat.Update(func(tx *catalog.Tx) error {
		current, err := databaseInTx(tx, id)
		if err != nil {
			return err
		}
		if err := checkSettled(current); err != nil {
			return err
		}
		current.Status = catalog.StatusRestoring
		restoring = current
		return tx.PutDatabase(current)
	})
	if err != nil {
		return nil, err
	}

	s.cfg.Backups.Restore(restoring, backup)
	s.log.Info("database restore started", "database_id", id, "backup_id", backup.ID, "principal_id", call.principal().ID)
	return s.toJSON(restoring), nil
}

// findBackup checks a backup ID and reads the backup in the call's region.
// A backup in another region is reported missing, as a database is.
func (s *server) findBackup(call *apiCall, rawID string) (catalog.Backup, error) {
	id, err := validateBackupID(rawID)
	if err != nil {
		return catalog.Backup{}, err
	}
	var backup catalog.Backup
	err = s.cat.View(func(tx *catalog.Tx) error {
		var err error
		backup, err = tx.Backup(id)
		return err
	})
	if errors.Is(err, catalog.ErrNotFound) || (err == nil && backup.Region != call.region) {
		return catalog.Backup{}, notFound(resourceBackup, id)
	}
	return backup, err
}

// validateBackupID checks a backup ID and returns it in lower case, the
// form the catalog stores.
func validateBackupID(id string) (string, error) {
	switch {
	case id == "":
		return "", invalidArgument("backup_id", reasonRequired, "set backup_id to the UUID of a backup of this database")
	case !auth.ValidUUID(id):
		return "", invalidArgument("backup_id", reasonFormat, fmt.Sprintf("backup_id %q is not a UUID", id))
	}
	return strings.ToLower(id), nil
}

// backupsDisabled is the error for a backup action when no backup service
// is configured. It is reachable only when backup records exist without
// one, because the API itself never creates backups.
func backupsDisabled(what string) *apiError {
	return genericError(http.StatusNotImplemented, "not_implemented",
		what+" is not available: this sdblocal runs without a backup service")
}

// readable keeps the items whose project the principal may read, asking
// the authenticator once per project. scope returns an item's organization
// and project.
func readable[T any](authn *auth.Authenticator, principal catalog.Principal, items []T, scope func(*T) (string, string)) ([]T, error) {
	allowed := map[string]bool{}
	var out []T
	for i := range items {
		organizationID, projectID := scope(&items[i])
		key := organizationID + "/" + projectID
		ok, seen := allowed[key]
		if !seen {
			var err error
			ok, err = authn.Authorize(principal, organizationID, projectID, auth.ActionRead)
			if err != nil {
				return nil, fmt.Errorf("authorize principal %s on project %s: %w", principal.ID, projectID, err)
			}
			allowed[key] = ok
		}
		if ok {
			out = append(out, items[i])
		}
	}
	return out, nil
}
