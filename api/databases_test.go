package api

import (
	"cmp"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	sdb "github.com/scaleway/scaleway-sdk-go/api/serverless_sqldb/v1alpha1"
	"github.com/scaleway/scaleway-sdk-go/scw"

	"github.com/sdblocal/sdblocal/catalog"
)

var createdAtPattern = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$`)

func TestDatabaseLifecycle(t *testing.T) {
	env := newTestEnv(t)
	before := time.Now().UTC().Truncate(time.Microsecond)

	created, err := env.api.CreateDatabase(&sdb.CreateDatabaseRequest{Name: "app-db", CPUMin: 1, CPUMax: 4})
	if err != nil {
		t.Fatal(err)
	}
	id := created.ID
	parsed, err := uuid.Parse(id)
	if err != nil || parsed.Version() != 4 {
		t.Errorf("id %q is not a version 4 UUID", id)
	}
	if created.Name != "app-db" {
		t.Errorf("name = %q, want app-db", created.Name)
	}
	if created.Status != sdb.DatabaseStatusCreating {
		t.Errorf("status = %q, want creating", created.Status)
	}
	if created.OrganizationID != env.creds.OrganizationID || created.ProjectID != env.creds.ProjectID {
		t.Errorf("organization, project = %s, %s; want %s, %s", created.OrganizationID, created.ProjectID, env.creds.OrganizationID, env.creds.ProjectID)
	}
	if created.Region != scw.RegionFrPar {
		t.Errorf("region = %q, want fr-par", created.Region)
	}
	if created.CPUMin != 1 || created.CPUMax != 4 || created.CPUCurrent != 0 || created.Started {
		t.Errorf("cpu_min, cpu_max, cpu_current, started = %d, %d, %d, %v; want 1, 4, 0, false",
			created.CPUMin, created.CPUMax, created.CPUCurrent, created.Started)
	}
	if created.EngineMajorVersion == nil || *created.EngineMajorVersion != 14 {
		t.Errorf("engine_major_version = %v, want 14", created.EngineMajorVersion)
	}
	wantEndpoint := "postgresql://127.0.0.1:15432/app-db?sslmode=require&options=databaseid%3D" + id
	if created.Endpoint != wantEndpoint {
		t.Errorf("endpoint = %q, want %q", created.Endpoint, wantEndpoint)
	}
	if created.CreatedAt == nil || created.CreatedAt.Before(before) || created.CreatedAt.After(time.Now()) {
		t.Errorf("created_at = %v, want between %v and now", created.CreatedAt, before)
	}
	if got := env.inst.provisionedIDs(); !slices.Equal(got, []string{id}) {
		t.Errorf("provisioned = %v, want [%s]", got, id)
	}

	raw := env.ownerDo(http.MethodGet, databasesPath+"/"+id, "")
	if raw.status != http.StatusOK || raw.header.Get("Content-Type") != "application/json" {
		t.Fatalf("raw GET: status %d, Content-Type %q; want 200, application/json", raw.status, raw.header.Get("Content-Type"))
	}
	if createdAt := raw.decode(t)["created_at"]; !createdAtPattern.MatchString(fmt.Sprint(createdAt)) {
		t.Errorf("created_at = %v, want RFC 3339 UTC with six fractional digits", createdAt)
	}

	// The fake manager marked the database ready; the instance now runs.
	env.inst.setState(id, true, 2)
	got, err := env.api.GetDatabase(&sdb.GetDatabaseRequest{DatabaseID: id})
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != sdb.DatabaseStatusReady || !got.Started || got.CPUCurrent != 2 {
		t.Errorf("status, started, cpu_current = %q, %v, %d; want ready, true, 2", got.Status, got.Started, got.CPUCurrent)
	}
	if !got.CreatedAt.Equal(*created.CreatedAt) {
		t.Errorf("created_at changed from %v to %v", created.CreatedAt, got.CreatedAt)
	}

	deleted, err := env.api.DeleteDatabase(&sdb.DeleteDatabaseRequest{DatabaseID: id})
	if err != nil {
		t.Fatal(err)
	}
	if deleted.Status != sdb.DatabaseStatusReady {
		t.Errorf("delete response status = %q, want ready (the status before deletion)", deleted.Status)
	}
	if got := env.inst.removedIDs(); !slices.Equal(got, []string{id}) {
		t.Errorf("removed = %v, want [%s]", got, id)
	}

	got, err = env.api.GetDatabase(&sdb.GetDatabaseRequest{DatabaseID: id})
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != sdb.DatabaseStatusDeleting {
		t.Errorf("status while deleting = %q, want deleting", got.Status)
	}

	_, err = env.api.DeleteDatabase(&sdb.DeleteDatabaseRequest{DatabaseID: id})
	transient, ok := err.(*scw.TransientStateError)
	if !ok {
		t.Fatalf("second delete: error = %T %v, want *scw.TransientStateError", err, err)
	}
	if transient.Resource != "database" || transient.ResourceID != id || transient.CurrentState != "deleting" {
		t.Errorf("transient state error = %+v, want database %s deleting", transient, id)
	}

	env.inst.finishRemove(t, id)

	_, err = env.api.GetDatabase(&sdb.GetDatabaseRequest{DatabaseID: id})
	requireDeletedError(t, err)
	_, err = env.api.DeleteDatabase(&sdb.DeleteDatabaseRequest{DatabaseID: id})
	requireDeletedError(t, err)

	raw = env.ownerDo(http.MethodGet, databasesPath+"/"+id, "")
	wantBody := `{"details":[],"message":"insufficient permissions","type":"permissions_denied"}`
	if raw.status != http.StatusForbidden || string(raw.body) != wantBody {
		t.Errorf("GET deleted: %d %s, want 403 %s", raw.status, raw.body, wantBody)
	}
	if got := env.inst.removedIDs(); len(got) != 1 {
		t.Errorf("removed = %v, want exactly one Remove call", got)
	}
}

// requireDeletedError asserts the error the real API returns for a deleted
// database: permissions_denied with no details.
func requireDeletedError(t *testing.T, err error) {
	t.Helper()
	denied, ok := err.(*scw.PermissionsDeniedError)
	if !ok {
		t.Fatalf("error = %T %v, want *scw.PermissionsDeniedError", err, err)
	}
	if len(denied.Details) != 0 {
		t.Errorf("details = %+v, want none", denied.Details)
	}
}

func TestCreateDatabaseValidation(t *testing.T) {
	env := newTestEnv(t)
	tests := []struct {
		name     string
		req      sdb.CreateDatabaseRequest
		argument string
		reason   string
	}{
		{"empty name", sdb.CreateDatabaseRequest{Name: "", CPUMax: 4}, "name", "required"},
		{"name starting with dash", sdb.CreateDatabaseRequest{Name: "-db", CPUMax: 4}, "name", "format"},
		{"name with underscore", sdb.CreateDatabaseRequest{Name: "my_db", CPUMax: 4}, "name", "format"},
		{"name with space", sdb.CreateDatabaseRequest{Name: "my db", CPUMax: 4}, "name", "format"},
		{"name of 64 characters", sdb.CreateDatabaseRequest{Name: strings.Repeat("a", 64), CPUMax: 4}, "name", "constraint"},
		{"reserved name template1", sdb.CreateDatabaseRequest{Name: "template1", CPUMax: 4}, "name", "constraint"},
		{"reserved name template0", sdb.CreateDatabaseRequest{Name: "template0", CPUMax: 4}, "name", "constraint"},
		{"cpu_max of 0", sdb.CreateDatabaseRequest{Name: "db", CPUMax: 0}, "cpu_max", "constraint"},
		{"cpu_max of 16", sdb.CreateDatabaseRequest{Name: "db", CPUMax: 16}, "cpu_max", "constraint"},
		{"cpu_min of 16", sdb.CreateDatabaseRequest{Name: "db", CPUMin: 16, CPUMax: 15}, "cpu_min", "constraint"},
		{"cpu_min above cpu_max", sdb.CreateDatabaseRequest{Name: "db", CPUMin: 5, CPUMax: 4}, "cpu_min", "constraint"},
		{"project_id not a UUID", sdb.CreateDatabaseRequest{ProjectID: "default", Name: "db", CPUMax: 4}, "project_id", "format"},
		{"unavailable version", sdb.CreateDatabaseRequest{Name: "db", CPUMax: 4, Version: "16"}, "version", "constraint"},
		{"from_backup_id not a UUID", sdb.CreateDatabaseRequest{Name: "db", CPUMax: 4, FromBackupID: scw.StringPtr("last")}, "from_backup_id", "format"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.req
			_, err := env.api.CreateDatabase(&req)
			detail := requireArgumentError(t, err)
			if detail.ArgumentName != tt.argument || detail.Reason != tt.reason {
				t.Errorf("detail = %+v, want argument %q reason %q", detail, tt.argument, tt.reason)
			}
			if detail.HelpMessage == "" {
				t.Errorf("detail %+v has no help message", detail)
			}
		})
	}
	if got := env.inst.provisionedIDs(); len(got) != 0 {
		t.Errorf("provisioned = %v after invalid requests, want none", got)
	}
}

func TestCreateDatabaseReportsEveryInvalidField(t *testing.T) {
	env := newTestEnv(t)
	resp := env.ownerDo(http.MethodPost, databasesPath, `{"project_id":"x","name":"","cpu_max":0}`)
	if resp.status != http.StatusBadRequest {
		t.Fatalf("status = %d, want 400; body %s", resp.status, resp.body)
	}
	details, _ := resp.decode(t)["details"].([]any)
	var names []string
	for _, d := range details {
		names = append(names, fmt.Sprint(d.(map[string]any)["argument_name"]))
	}
	slices.Sort(names)
	if want := []string{"cpu_max", "name", "project_id"}; !slices.Equal(names, want) {
		t.Errorf("invalid arguments = %v, want %v", names, want)
	}
}

func TestCreateDatabaseRawBodies(t *testing.T) {
	env := newTestEnv(t)
	project := env.creds.ProjectID

	t.Run("missing project_id", func(t *testing.T) {
		resp := env.ownerDo(http.MethodPost, databasesPath, `{"name":"db","cpu_max":2}`)
		requireRawArgumentError(t, resp, "project_id", "required")
	})

	t.Run("CPU defaults when absent", func(t *testing.T) {
		resp := env.ownerDo(http.MethodPost, databasesPath, fmt.Sprintf(`{"project_id":%q,"name":"defaults"}`, project))
		if resp.status != http.StatusOK {
			t.Fatalf("status = %d, want 200; body %s", resp.status, resp.body)
		}
		body := resp.decode(t)
		if body["cpu_min"] != 0.0 || body["cpu_max"] != 15.0 {
			t.Errorf("cpu_min, cpu_max = %v, %v; want 0, 15", body["cpu_min"], body["cpu_max"])
		}
	})

	t.Run("name of 63 characters", func(t *testing.T) {
		name := "a" + strings.Repeat("-9", 31)
		resp := env.ownerDo(http.MethodPost, databasesPath, fmt.Sprintf(`{"project_id":%q,"name":%q,"cpu_max":1}`, project, name))
		if resp.status != http.StatusOK {
			t.Fatalf("status = %d, want 200; body %s", resp.status, resp.body)
		}
		if got := resp.decode(t)["name"]; got != name {
			t.Errorf("name = %v, want %s", got, name)
		}
	})

	t.Run("matching organization_id", func(t *testing.T) {
		body := fmt.Sprintf(`{"project_id":%q,"organization_id":%q,"name":"org","cpu_max":1}`, project, strings.ToUpper(env.creds.OrganizationID))
		resp := env.ownerDo(http.MethodPost, databasesPath, body)
		if resp.status != http.StatusOK {
			t.Fatalf("status = %d, want 200; body %s", resp.status, resp.body)
		}
	})

	t.Run("other organization_id", func(t *testing.T) {
		body := fmt.Sprintf(`{"project_id":%q,"organization_id":%q,"name":"org","cpu_max":1}`, project, uuid.NewString())
		requireRawArgumentError(t, env.ownerDo(http.MethodPost, databasesPath, body), "organization_id", "constraint")
	})

	t.Run("organization_id not a UUID", func(t *testing.T) {
		body := fmt.Sprintf(`{"project_id":%q,"organization_id":"acme","name":"org","cpu_max":1}`, project)
		requireRawArgumentError(t, env.ownerDo(http.MethodPost, databasesPath, body), "organization_id", "format")
	})

	t.Run("duplicate names allowed", func(t *testing.T) {
		body := fmt.Sprintf(`{"project_id":%q,"name":"twin","cpu_max":1}`, project)
		first := env.ownerDo(http.MethodPost, databasesPath, body)
		second := env.ownerDo(http.MethodPost, databasesPath, body)
		if first.status != http.StatusOK || second.status != http.StatusOK {
			t.Fatalf("statuses = %d, %d; want 200, 200", first.status, second.status)
		}
		if first.decode(t)["id"] == second.decode(t)["id"] {
			t.Errorf("both databases got the same ID")
		}
	})
}

func TestCreateDatabaseUnknownProject(t *testing.T) {
	env := newTestEnv(t)
	_, otherProject := env.addOrganization()
	for name, project := range map[string]string{"never created": uuid.NewString(), "other organization": otherProject} {
		t.Run(name, func(t *testing.T) {
			_, err := env.api.CreateDatabase(&sdb.CreateDatabaseRequest{ProjectID: project, Name: "db", CPUMax: 1})
			requireDenied(t, err, "create")
		})
	}
	if got := env.inst.provisionedIDs(); len(got) != 0 {
		t.Errorf("provisioned = %v, want none", got)
	}
}

// requireDenied asserts a permissions_denied error naming the action on
// serverless_sql_database.
func requireDenied(t *testing.T, err error, action string) {
	t.Helper()
	denied, ok := err.(*scw.PermissionsDeniedError)
	if !ok {
		t.Fatalf("error = %T %v, want *scw.PermissionsDeniedError", err, err)
	}
	if len(denied.Details) != 1 || denied.Details[0].Resource != "serverless_sql_database" || denied.Details[0].Action != action {
		t.Errorf("details = %+v, want one for action %q on serverless_sql_database", denied.Details, action)
	}
}

func TestCreateDatabaseFromBackup(t *testing.T) {
	env := newTestEnv(t)
	backupID := uuid.NewString()
	_, err := env.api.CreateDatabase(&sdb.CreateDatabaseRequest{Name: "restored", CPUMax: 1, FromBackupID: &backupID})
	notFound, ok := err.(*scw.ResourceNotFoundError)
	if !ok {
		t.Fatalf("error = %T %v, want *scw.ResourceNotFoundError", err, err)
	}
	if notFound.Resource != "backup" || notFound.ResourceID != backupID {
		t.Errorf("not found = %+v, want backup %s", notFound, backupID)
	}
}

func TestGetDatabaseErrors(t *testing.T) {
	env := newTestEnv(t, func(cfg *Config) { cfg.Regions = []string{"fr-par", "nl-ams"} })
	db := env.createDatabase("db")

	t.Run("invalid ID", func(t *testing.T) {
		_, err := env.api.GetDatabase(&sdb.GetDatabaseRequest{DatabaseID: "db"})
		detail := requireArgumentError(t, err)
		if detail.ArgumentName != "database_id" || detail.Reason != "format" {
			t.Errorf("detail = %+v, want database_id format", detail)
		}
	})

	t.Run("unknown ID", func(t *testing.T) {
		id := uuid.NewString()
		_, err := env.api.GetDatabase(&sdb.GetDatabaseRequest{DatabaseID: id})
		notFound, ok := err.(*scw.ResourceNotFoundError)
		if !ok {
			t.Fatalf("error = %T %v, want *scw.ResourceNotFoundError", err, err)
		}
		if notFound.Resource != "database" || notFound.ResourceID != id {
			t.Errorf("not found = %+v, want database %s", notFound, id)
		}
	})

	t.Run("upper-case ID", func(t *testing.T) {
		got, err := env.api.GetDatabase(&sdb.GetDatabaseRequest{DatabaseID: strings.ToUpper(db.ID)})
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != db.ID {
			t.Errorf("id = %s, want %s", got.ID, db.ID)
		}
	})

	t.Run("other region", func(t *testing.T) {
		_, err := env.api.GetDatabase(&sdb.GetDatabaseRequest{Region: scw.RegionNlAms, DatabaseID: db.ID})
		if _, ok := err.(*scw.ResourceNotFoundError); !ok {
			t.Fatalf("error = %T %v, want *scw.ResourceNotFoundError", err, err)
		}
	})
}

func TestDeleteDatabaseInUnsettledStatus(t *testing.T) {
	env := newTestEnv(t)
	tests := []struct {
		status catalog.DatabaseStatus
		check  func(t *testing.T, id string, err error)
	}{
		{catalog.StatusCreating, func(t *testing.T, id string, err error) {
			transient, ok := err.(*scw.TransientStateError)
			if !ok {
				t.Fatalf("error = %T %v, want *scw.TransientStateError", err, err)
			}
			if transient.ResourceID != id || transient.CurrentState != "creating" {
				t.Errorf("transient state = %+v, want %s creating", transient, id)
			}
		}},
		{catalog.StatusRestoring, func(t *testing.T, id string, err error) {
			transient, ok := err.(*scw.TransientStateError)
			if !ok {
				t.Fatalf("error = %T %v, want *scw.TransientStateError", err, err)
			}
			if transient.CurrentState != "restoring" {
				t.Errorf("current state = %q, want restoring", transient.CurrentState)
			}
		}},
		{catalog.StatusLocked, func(t *testing.T, id string, err error) {
			lockedErr, ok := err.(*scw.ResourceLockedError)
			if !ok {
				t.Fatalf("error = %T %v, want *scw.ResourceLockedError", err, err)
			}
			if lockedErr.ResourceID != id {
				t.Errorf("locked resource = %q, want %s", lockedErr.ResourceID, id)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(string(tt.status), func(t *testing.T) {
			db := env.createDatabase("db-" + string(tt.status))
			if err := env.cat.SetDatabaseStatus(db.ID, tt.status, ""); err != nil {
				t.Fatal(err)
			}
			_, err := env.api.DeleteDatabase(&sdb.DeleteDatabaseRequest{DatabaseID: db.ID})
			tt.check(t, db.ID, err)
			got, err := env.api.GetDatabase(&sdb.GetDatabaseRequest{DatabaseID: db.ID})
			if err != nil {
				t.Fatal(err)
			}
			if string(got.Status) != string(tt.status) {
				t.Errorf("status after rejected delete = %q, want %q", got.Status, tt.status)
			}
		})
	}
	if got := env.inst.removedIDs(); len(got) != 0 {
		t.Errorf("removed = %v, want none", got)
	}
}

func TestDeleteUnknownDatabase(t *testing.T) {
	env := newTestEnv(t)
	id := uuid.NewString()
	_, err := env.api.DeleteDatabase(&sdb.DeleteDatabaseRequest{DatabaseID: id})
	notFound, ok := err.(*scw.ResourceNotFoundError)
	if !ok {
		t.Fatalf("error = %T %v, want *scw.ResourceNotFoundError", err, err)
	}
	if notFound.Resource != "database" || notFound.ResourceID != id {
		t.Errorf("not found = %+v, want database %s", notFound, id)
	}
}

func TestUpdateDatabase(t *testing.T) {
	env := newTestEnv(t)
	db := env.createDatabase("db")

	updated, err := env.api.UpdateDatabase(&sdb.UpdateDatabaseRequest{DatabaseID: db.ID, CPUMin: scw.Uint32Ptr(2)})
	if err != nil {
		t.Fatal(err)
	}
	if updated.CPUMin != 2 || updated.CPUMax != 4 {
		t.Errorf("cpu_min, cpu_max = %d, %d; want 2, 4", updated.CPUMin, updated.CPUMax)
	}
	got, err := env.api.GetDatabase(&sdb.GetDatabaseRequest{DatabaseID: db.ID})
	if err != nil {
		t.Fatal(err)
	}
	if got.CPUMin != 2 || got.CPUMax != 4 {
		t.Errorf("stored cpu_min, cpu_max = %d, %d; want 2, 4", got.CPUMin, got.CPUMax)
	}

	tests := []struct {
		name     string
		req      sdb.UpdateDatabaseRequest
		argument string
	}{
		{"cpu_max below stored cpu_min", sdb.UpdateDatabaseRequest{CPUMax: scw.Uint32Ptr(1)}, "cpu_min"},
		{"cpu_max of 16", sdb.UpdateDatabaseRequest{CPUMax: scw.Uint32Ptr(16)}, "cpu_max"},
		{"cpu_min above stored cpu_max", sdb.UpdateDatabaseRequest{CPUMin: scw.Uint32Ptr(5)}, "cpu_min"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.req
			req.DatabaseID = db.ID
			_, err := env.api.UpdateDatabase(&req)
			detail := requireArgumentError(t, err)
			if detail.ArgumentName != tt.argument || detail.Reason != "constraint" {
				t.Errorf("detail = %+v, want %s constraint", detail, tt.argument)
			}
		})
	}

	// A raw cpu_max of 0 is a real value, not an absent field.
	resp := env.ownerDo(http.MethodPatch, databasesPath+"/"+db.ID, `{"cpu_max":0}`)
	requireRawArgumentError(t, resp, "cpu_max", "constraint")

	if _, err := env.api.DeleteDatabase(&sdb.DeleteDatabaseRequest{DatabaseID: db.ID}); err != nil {
		t.Fatal(err)
	}
	_, err = env.api.UpdateDatabase(&sdb.UpdateDatabaseRequest{DatabaseID: db.ID, CPUMin: scw.Uint32Ptr(1)})
	if _, ok := err.(*scw.TransientStateError); !ok {
		t.Errorf("update while deleting: error = %T %v, want *scw.TransientStateError", err, err)
	}
}

func TestListDatabasesPagination(t *testing.T) {
	env := newTestEnv(t)
	var created []*sdb.Database
	for i := range 25 {
		created = append(created, env.createDatabase(fmt.Sprintf("db-%02d", i)))
	}
	// The catalog orders by creation time, then by ID for equal times.
	slices.SortStableFunc(created, func(a, b *sdb.Database) int {
		return cmp.Or(a.CreatedAt.Compare(*b.CreatedAt), cmp.Compare(a.ID, b.ID))
	})
	wantIDs := databaseIDs(created)

	all, err := env.api.ListDatabases(&sdb.ListDatabasesRequest{}, scw.WithAllPages())
	if err != nil {
		t.Fatal(err)
	}
	if got := databaseIDs(all.Databases); !slices.Equal(got, wantIDs) {
		t.Errorf("all pages = %v, want %v", got, wantIDs)
	}
	if all.TotalCount != 25 {
		t.Errorf("total_count = %d, want 25", all.TotalCount)
	}

	small, err := env.api.ListDatabases(&sdb.ListDatabasesRequest{PageSize: scw.Uint32Ptr(7)}, scw.WithAllPages())
	if err != nil {
		t.Fatal(err)
	}
	if got := databaseIDs(small.Databases); !slices.Equal(got, wantIDs) {
		t.Errorf("all pages of 7 = %v, want %v", got, wantIDs)
	}

	pages := []struct {
		page int32
		want []string
	}{
		{1, wantIDs[:20]},
		{2, wantIDs[20:]},
		{3, nil},
	}
	for _, p := range pages {
		resp, err := env.api.ListDatabases(&sdb.ListDatabasesRequest{Page: scw.Int32Ptr(p.page)})
		if err != nil {
			t.Fatal(err)
		}
		if got := databaseIDs(resp.Databases); !slices.Equal(got, p.want) {
			t.Errorf("page %d = %v, want %v", p.page, got, p.want)
		}
		if resp.TotalCount != 25 {
			t.Errorf("page %d total_count = %d, want 25", p.page, resp.TotalCount)
		}
	}

	// An empty page is [] rather than null.
	raw := env.ownerDo(http.MethodGet, databasesPath+"?page=9", "")
	if !strings.Contains(string(raw.body), `"databases":[]`) {
		t.Errorf("empty page body = %s, want databases []", raw.body)
	}
}

func databaseIDs(dbs []*sdb.Database) []string {
	var ids []string
	for _, db := range dbs {
		ids = append(ids, db.ID)
	}
	return ids
}

func databaseNames(dbs []*sdb.Database) []string {
	var names []string
	for _, db := range dbs {
		names = append(names, db.Name)
	}
	return names
}

func TestListDatabasesFiltersAndOrder(t *testing.T) {
	env := newTestEnv(t)
	for _, name := range []string{"beta", "alpha", "gamma-alpha"} {
		env.createDatabase(name)
	}
	secondProject := env.addProject(env.creds.OrganizationID)
	other, err := env.api.CreateDatabase(&sdb.CreateDatabaseRequest{ProjectID: secondProject, Name: "delta", CPUMax: 1})
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		req  sdb.ListDatabasesRequest
		want []string
	}{
		{"default project, creation order", sdb.ListDatabasesRequest{}, []string{"beta", "alpha", "gamma-alpha"}},
		{"created_at_desc", sdb.ListDatabasesRequest{OrderBy: sdb.ListDatabasesRequestOrderByCreatedAtDesc}, []string{"gamma-alpha", "alpha", "beta"}},
		{"name_asc", sdb.ListDatabasesRequest{OrderBy: sdb.ListDatabasesRequestOrderByNameAsc}, []string{"alpha", "beta", "gamma-alpha"}},
		{"name_desc", sdb.ListDatabasesRequest{OrderBy: sdb.ListDatabasesRequestOrderByNameDesc}, []string{"gamma-alpha", "beta", "alpha"}},
		{"name substring", sdb.ListDatabasesRequest{Name: scw.StringPtr("alpha")}, []string{"alpha", "gamma-alpha"}},
		{"second project", sdb.ListDatabasesRequest{ProjectID: secondProject}, []string{"delta"}},
		{"own organization", sdb.ListDatabasesRequest{OrganizationID: scw.StringPtr(env.creds.OrganizationID)}, []string{"beta", "alpha", "gamma-alpha"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.req
			resp, err := env.api.ListDatabases(&req)
			if err != nil {
				t.Fatal(err)
			}
			if got := databaseNames(resp.Databases); !slices.Equal(got, tt.want) {
				t.Errorf("names = %v, want %v", got, tt.want)
			}
			if resp.TotalCount != uint64(len(tt.want)) {
				t.Errorf("total_count = %d, want %d", resp.TotalCount, len(tt.want))
			}
		})
	}

	t.Run("every project", func(t *testing.T) {
		// The SDK always fills project_id, so only a raw request can list
		// across projects.
		resp := env.ownerDo(http.MethodGet, databasesPath+"?project_id=&order_by=", "")
		if resp.status != http.StatusOK {
			t.Fatalf("status = %d, want 200; body %s", resp.status, resp.body)
		}
		body := resp.decode(t)
		if body["total_count"] != 4.0 {
			t.Errorf("total_count = %v, want 4", body["total_count"])
		}
		if !strings.Contains(string(resp.body), other.ID) {
			t.Errorf("list of every project lacks database %s of the second project", other.ID)
		}
	})

	t.Run("other organization", func(t *testing.T) {
		_, err := env.api.ListDatabases(&sdb.ListDatabasesRequest{OrganizationID: scw.StringPtr(uuid.NewString())})
		requireDenied(t, err, "list")
	})

	t.Run("unknown project", func(t *testing.T) {
		_, err := env.api.ListDatabases(&sdb.ListDatabasesRequest{ProjectID: uuid.NewString()})
		requireDenied(t, err, "list")
	})
}

func TestListDatabasesQueryValidation(t *testing.T) {
	env := newTestEnv(t)
	tests := []struct {
		query    string
		argument string
		reason   string
	}{
		{"page=0", "page", "constraint"},
		{"page=-1", "page", "constraint"},
		{"page=abc", "page", "format"},
		{"page=99999999999", "page", "format"},
		{"page_size=101", "page_size", "constraint"},
		{"page_size=-1", "page_size", "format"},
		{"page_size=ten", "page_size", "format"},
		{"order_by=size_asc", "order_by", "constraint"},
		{"project_id=default", "project_id", "format"},
		{"organization_id=acme", "organization_id", "format"},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			requireRawArgumentError(t, env.ownerDo(http.MethodGet, databasesPath+"?"+tt.query, ""), tt.argument, tt.reason)
		})
	}

	for _, query := range []string{"page_size=0", "page_size=100", "order_by=", "project_id=", "organization_id=", "name="} {
		t.Run(query+" accepted", func(t *testing.T) {
			resp := env.ownerDo(http.MethodGet, databasesPath+"?"+query, "")
			if resp.status != http.StatusOK {
				t.Errorf("status = %d, want 200; body %s", resp.status, resp.body)
			}
		})
	}
}

func TestListDatabasesPageSizeDefault(t *testing.T) {
	env := newTestEnv(t)
	for i := range 21 {
		env.createDatabase(fmt.Sprintf("db-%d", i))
	}
	for _, query := range []string{"", "?page_size=0"} {
		resp := env.ownerDo(http.MethodGet, databasesPath+query, "")
		databases, _ := resp.decode(t)["databases"].([]any)
		if len(databases) != defaultPageSize {
			t.Errorf("GET %q returned %d databases, want the default page size %d", query, len(databases), defaultPageSize)
		}
	}
}
