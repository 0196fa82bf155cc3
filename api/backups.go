package api

import (
	"errors"
	"fmt"
	"io/fs"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
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
	// Create records a backup of the database in unknown_status, returns
	// the record, and takes the backup in the background.
	Create(db catalog.Database) (catalog.Backup, error)
	// Export returns a token that lets anyone holding it download the
	// backup until expiresAt.
	Export(backup catalog.Backup) (token string, expiresAt time.Time, err error)
	// OpenExport checks a download token and opens the backup's file. The
	// error wraps fs.ErrPermission for an invalid or expired token and
	// fs.ErrNotExist for a backup without a file.
	OpenExport(backup catalog.Backup, token string) (*os.File, error)
	// Restore overwrites the database's data with the backup in the
	// background. The API has already set the database's status to
	// restoring, and Restore sets it back to ready when done.
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
		http.MethodGet:  s.listBackups,
		http.MethodPost: s.createBackup,
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
	// The download URL is authenticated by its token, not by X-Auth-Token,
	// so it bypasses serveAPI.
	download := backups + "/{backup_id}/download"
	mux.HandleFunc(http.MethodGet+" "+download, s.downloadBackup)
	mux.HandleFunc(download, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", "GET, HEAD")
		s.writeError(w, r, "", genericError(http.StatusMethodNotAllowed, "method_not_allowed",
			fmt.Sprintf("method %s is not allowed on %s: use GET", r.Method, r.URL.Path)))
	})
}

// createBackupRequest is the body of POST /backups. The call is an sdblocal
// extension, because the real API takes backups only on its own schedule.
type createBackupRequest struct {
	DatabaseID string `json:"database_id"`
}

// createBackup handles POST /backups, which takes a backup of a database
// now. It needs the right to manage the database, like an export.
func (s *server) createBackup(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error) {
	var req createBackupRequest
	if err := decodeBody(w, r, &req); err != nil {
		return nil, err
	}

	if req.DatabaseID == "" {
		return nil, invalidArgument("database_id", reasonRequired, "set database_id to the UUID of the database to back up")
	}
	id, err := validateDatabaseID(req.DatabaseID)
	if err != nil {
		return nil, err
	}
	db, err := s.findDatabase(call, id)
	if err != nil {
		return nil, err
	}
	if err := s.authorize(call, db.OrganizationID, db.ProjectID, auth.ActionManage, actionCreate); err != nil {
		return nil, err
	}

	if err := checkSettled(db); err != nil {
		return nil, err
	}
	if db.Status != catalog.StatusReady {
		return nil, preconditionFailed(preconditionUnknown,
			fmt.Sprintf("database %s is %s: only a ready database can be backed up", db.ID, db.Status))
	}
	if s.cfg.Backups == nil {
		return nil, backupsDisabled("taking a backup")
	}

	backup, err := s.cfg.Backups.Create(db)
	if err != nil {
		return nil, fmt.Errorf("back up database %s: %w", db.ID, err)
	}
	s.log.Info("backup started", "backup_id", backup.ID, "database_id", db.ID, "principal_id", call.principal().ID)
	return toBackupJSON(backup), nil
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
// databases rather than only to read them. The download URL is ready at
// once: it points at this API and carries a signed token.
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
	// A locked backup is being read by a restore; its file is whole.
	if backup.Status != catalog.BackupStatusReady && backup.Status != catalog.BackupStatusLocked {
		return nil, preconditionFailed(preconditionUnknown,
			fmt.Sprintf("backup %s is %s: only a ready backup can be exported", backup.ID, backup.Status))
	}
	if s.cfg.Backups == nil {
		return nil, backupsDisabled("exporting a backup")
	}
	token, expiresAt, err := s.cfg.Backups.Export(backup)
	if err != nil {
		return nil, fmt.Errorf("export backup %s: %w", backup.ID, err)
	}
	downloadURL := baseURL(r) + strings.Replace(apiPrefix, "{region}", url.PathEscape(backup.Region), 1) +
		"/backups/" + backup.ID + "/download?token=" + url.QueryEscape(token)

	var exported catalog.Backup
	err = s.cat.Update(func(tx *catalog.Tx) error {
		current, err := tx.Backup(backup.ID)
		if errors.Is(err, catalog.ErrNotFound) {
			return notFound(resourceBackup, backup.ID)
		}
		if err != nil {
			return err
		}
		current.DownloadURL = downloadURL
		current.DownloadURLExpiresAt = &expiresAt
		exported = current
		return tx.PutBackup(current)
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("backup exported", "backup_id", backup.ID, "database_id", backup.DatabaseID, "principal_id", call.principal().ID,
		"download_url_expires_at", expiresAt.Format(time.RFC3339))
	return toBackupJSON(exported), nil
}

// baseURL returns the scheme and host the client used to reach the API,
// so the download URL works through whatever address it used. A Host
// header that is not a plain host[:port] gives way to the listener's
// address.
func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	host := r.Host
	if host == "" || strings.ContainsAny(host, "/?#@\\ ") {
		host = ""
		if addr, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			host = addr.String()
		}
	}
	return scheme + "://" + host
}

// downloadBackup handles GET /backups/{backup_id}/download?token=..., the
// URL an export hands out. Anyone with a valid token may download, so
// every failure before the file is found, unknown backup included, is the
// same 403, which reveals nothing about which backups exist. The file path
// comes from the catalog record, never from the request.
func (s *server) downloadBackup(w http.ResponseWriter, r *http.Request) {
	denied := func(message string) {
		s.writeError(w, r, "", downloadDenied(message))
	}
	region := r.PathValue("region")
	backupID := strings.ToLower(r.PathValue("backup_id"))
	token := r.URL.Query().Get("token")
	if !slices.Contains(s.cfg.Regions, region) || !auth.ValidUUID(backupID) || token == "" {
		denied("download URL is invalid: export the backup to get a new one")
		return
	}
	var backup catalog.Backup
	err := s.cat.View(func(tx *catalog.Tx) error {
		var err error
		backup, err = tx.Backup(backupID)
		return err
	})
	if errors.Is(err, catalog.ErrNotFound) || (err == nil && backup.Region != region) {
		denied("download URL is invalid: export the backup to get a new one")
		return
	}
	if err != nil {
		s.writeError(w, r, "", err)
		return
	}
	if s.cfg.Backups == nil {
		s.writeError(w, r, "", backupsDisabled("downloading a backup"))
		return
	}
	file, err := s.cfg.Backups.OpenExport(backup, token)
	switch {
	case errors.Is(err, fs.ErrPermission):
		denied(err.Error())
		return
	case errors.Is(err, fs.ErrNotExist):
		s.writeError(w, r, "", notFound(resourceBackup, backup.ID))
		return
	case err != nil:
		s.writeError(w, r, "", fmt.Errorf("open backup %s: %w", backup.ID, err))
		return
	}
	defer file.Close()
	info, err := file.Stat()
	if err != nil {
		s.writeError(w, r, "", fmt.Errorf("open backup %s: %w", backup.ID, err))
		return
	}

	name := backup.ID + ".pg_dump"
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": name}))
	w.Header().Set("Cache-Control", "no-store")
	s.log.Info("backup download", "backup_id", backup.ID, "database_id", backup.DatabaseID, "client_addr", r.RemoteAddr, "size", info.Size())
	http.ServeContent(w, r, name, info.ModTime(), file)
}

// actionDownload names the download in permissions_denied details.
const actionDownload = "download"

// downloadDenied is the 403 of a download with an unknown, tampered or
// expired token.
func downloadDenied(message string) *apiError {
	return &apiError{status: http.StatusForbidden, errorType: "permissions_denied", body: permissionsDeniedBody{
		Details: []permissionDetail{{Resource: resourceBackup, Action: actionDownload}},
		Message: message,
		Type:    "permissions_denied",
	}}
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
// is configured.
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
