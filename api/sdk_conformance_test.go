package api

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	account "github.com/scaleway/scaleway-sdk-go/api/account/v3"
	iam "github.com/scaleway/scaleway-sdk-go/api/iam/v1alpha1"
	sdb "github.com/scaleway/scaleway-sdk-go/api/serverless_sqldb/v1alpha1"
	"github.com/scaleway/scaleway-sdk-go/scw"

	"github.com/sdblocal/sdblocal/catalog"
)

// These tests drive every serverless-sqldb call of the official Go SDK
// against the API, and check that each error comes back as the SDK's typed
// error, which is what Terraform and other SDK users branch on.

func TestSDKDatabaseCalls(t *testing.T) {
	env := newTestEnv(t)

	created, err := env.api.CreateDatabase(&sdb.CreateDatabaseRequest{Name: "sdk-db", CPUMin: 0, CPUMax: 2})
	if err != nil {
		t.Fatal(err)
	}
	if created.Version == nil || created.Version.Name != "14" || created.Version.Region != scw.RegionFrPar {
		t.Errorf("version = %+v, want name 14 in fr-par", created.Version)
	}

	got, err := env.api.GetDatabase(&sdb.GetDatabaseRequest{DatabaseID: created.ID})
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != created.ID || got.Status != sdb.DatabaseStatusReady {
		t.Errorf("GetDatabase = %s %s, want %s ready", got.ID, got.Status, created.ID)
	}

	updated, err := env.api.UpdateDatabase(&sdb.UpdateDatabaseRequest{DatabaseID: created.ID, CPUMin: scw.Uint32Ptr(1), CPUMax: scw.Uint32Ptr(3)})
	if err != nil {
		t.Fatal(err)
	}
	if updated.CPUMin != 1 || updated.CPUMax != 3 {
		t.Errorf("UpdateDatabase: cpu_min, cpu_max = %d, %d; want 1, 3", updated.CPUMin, updated.CPUMax)
	}

	versions, err := env.api.ListVersions(&sdb.ListVersionsRequest{}, scw.WithAllPages())
	if err != nil {
		t.Fatal(err)
	}
	if versions.TotalCount != 1 || len(versions.Versions) != 1 || versions.Versions[0].Name != "14" {
		t.Errorf("ListVersions = %+v, want one version 14", versions)
	}
	other, err := env.api.ListVersions(&sdb.ListVersionsRequest{Version: scw.StringPtr("16")})
	if err != nil {
		t.Fatal(err)
	}
	if other.TotalCount != 0 || len(other.Versions) != 0 {
		t.Errorf("ListVersions(16) = %+v, want none", other)
	}

	deleted, err := env.api.DeleteDatabase(&sdb.DeleteDatabaseRequest{DatabaseID: created.ID})
	if err != nil {
		t.Fatal(err)
	}
	if deleted.ID != created.ID {
		t.Errorf("DeleteDatabase returned %s, want %s", deleted.ID, created.ID)
	}
}

func TestSDKWaitForDatabase(t *testing.T) {
	env := newTestEnv(t)
	db := env.createDatabase("waited")
	if err := env.cat.SetDatabaseStatus(db.ID, catalog.StatusCreating, ""); err != nil {
		t.Fatal(err)
	}

	// The database turns ready after a few polls, as the instance manager
	// would mark it once its instance accepts connections.
	ready := make(chan error, 1)
	go func() {
		time.Sleep(150 * time.Millisecond)
		ready <- env.cat.SetDatabaseStatus(db.ID, catalog.StatusReady, "")
	}()

	waited, err := env.api.WaitForDatabase(&sdb.WaitForDatabaseRequest{
		DatabaseID:    db.ID,
		Timeout:       scw.TimeDurationPtr(5 * time.Second),
		RetryInterval: scw.TimeDurationPtr(20 * time.Millisecond),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-ready; err != nil {
		t.Fatal(err)
	}
	if waited.Status != sdb.DatabaseStatusReady {
		t.Errorf("WaitForDatabase status = %s, want ready", waited.Status)
	}
}

func TestSDKListDatabasesAllPages(t *testing.T) {
	env := newTestEnv(t)
	// More than one default page of 20.
	var want []string
	for i := range 25 {
		want = append(want, env.createDatabase(fmt.Sprintf("db-%02d", i)).ID)
	}

	resp, err := env.api.ListDatabases(&sdb.ListDatabasesRequest{}, scw.WithAllPages())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, db := range resp.Databases {
		got = append(got, db.ID)
	}
	if resp.TotalCount != 25 || !slices.Equal(got, want) {
		t.Errorf("ListDatabases with all pages: total %d, ids %v; want 25 in creation order", resp.TotalCount, got)
	}

	desc, err := env.api.ListDatabases(&sdb.ListDatabasesRequest{OrderBy: sdb.ListDatabasesRequestOrderByNameDesc, PageSize: scw.Uint32Ptr(7)}, scw.WithAllPages())
	if err != nil {
		t.Fatal(err)
	}
	if len(desc.Databases) != 25 || desc.Databases[0].Name != "db-24" || desc.Databases[24].Name != "db-00" {
		t.Errorf("ListDatabases name_desc with pages of 7: %d databases, first %s; want 25 from db-24 to db-00", len(desc.Databases), desc.Databases[0].Name)
	}
}

func TestSDKBackupCallsWithoutBackups(t *testing.T) {
	env := newTestEnv(t)
	db := env.createDatabase("no-backups")
	missing := uuid.NewString()

	t.Run("list is empty", func(t *testing.T) {
		for _, req := range []*sdb.ListDatabaseBackupsRequest{
			{},
			{DatabaseID: db.ID},
			{DatabaseID: db.ID, OrderBy: sdb.ListDatabaseBackupsRequestOrderByCreatedAtAsc, ProjectID: &env.creds.ProjectID, OrganizationID: &env.creds.OrganizationID},
		} {
			resp, err := env.api.ListDatabaseBackups(req, scw.WithAllPages())
			if err != nil {
				t.Fatal(err)
			}
			if resp.TotalCount != 0 || len(resp.Backups) != 0 {
				t.Errorf("ListDatabaseBackups(%+v) = %+v, want empty", req, resp)
			}
		}
	})
	t.Run("get is not found", func(t *testing.T) {
		_, err := env.api.GetDatabaseBackup(&sdb.GetDatabaseBackupRequest{BackupID: missing})
		requireNotFound(t, err, "backup", missing)
	})
	t.Run("export is not found", func(t *testing.T) {
		_, err := env.api.ExportDatabaseBackup(&sdb.ExportDatabaseBackupRequest{BackupID: missing})
		requireNotFound(t, err, "backup", missing)
	})
	t.Run("restore is not found", func(t *testing.T) {
		_, err := env.api.RestoreDatabaseFromBackup(&sdb.RestoreDatabaseFromBackupRequest{DatabaseID: db.ID, BackupID: missing})
		requireNotFound(t, err, "backup", missing)
	})
	t.Run("restore into a missing database", func(t *testing.T) {
		databaseID := uuid.NewString()
		_, err := env.api.RestoreDatabaseFromBackup(&sdb.RestoreDatabaseFromBackupRequest{DatabaseID: databaseID, BackupID: missing})
		requireNotFound(t, err, "database", databaseID)
	})
	t.Run("restore without backup_id", func(t *testing.T) {
		_, err := env.api.RestoreDatabaseFromBackup(&sdb.RestoreDatabaseFromBackupRequest{DatabaseID: db.ID})
		detail := requireArgumentError(t, err)
		if detail.ArgumentName != "backup_id" || detail.Reason != "required" {
			t.Errorf("detail = %+v, want backup_id required", detail)
		}
	})
	t.Run("backup_id not a UUID", func(t *testing.T) {
		_, err := env.api.GetDatabaseBackup(&sdb.GetDatabaseBackupRequest{BackupID: "latest"})
		detail := requireArgumentError(t, err)
		if detail.ArgumentName != "backup_id" || detail.Reason != "format" {
			t.Errorf("detail = %+v, want backup_id format", detail)
		}
	})
	if got := env.inst.provisionedIDs(); len(got) != 1 {
		t.Errorf("provisioned = %v, want only the first database", got)
	}
}

func TestListBackupsQueryValidation(t *testing.T) {
	env := newTestEnv(t)
	path := "/serverless-sqldb/v1alpha1/regions/fr-par/backups"
	tests := []struct {
		query    string
		argument string
		reason   string
	}{
		{"?order_by=name_asc", "order_by", "constraint"},
		{"?database_id=db", "database_id", "format"},
		{"?project_id=p", "project_id", "format"},
		{"?page=0", "page", "constraint"},
		{"?page_size=101", "page_size", "constraint"},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			requireRawArgumentError(t, env.ownerDo(http.MethodGet, path+tt.query, ""), tt.argument, tt.reason)
		})
	}
}

func TestSDKTypedErrors(t *testing.T) {
	env := newTestEnv(t, func(cfg *Config) { cfg.MaxDatabasesPerProject = 2 })
	db := env.createDatabase("typed-errors")

	t.Run("not found", func(t *testing.T) {
		id := uuid.NewString()
		_, err := env.api.GetDatabase(&sdb.GetDatabaseRequest{DatabaseID: id})
		requireNotFound(t, err, "database", id)
	})

	t.Run("permissions denied", func(t *testing.T) {
		reader := env.addMember(env.creds.OrganizationID, nil,
			catalog.Rule{PermissionSetNames: []string{"ServerlessSQLDatabaseReadOnly"}, ProjectIDs: []string{env.creds.ProjectID}})
		_, err := env.sdkClient(reader.accessKey, reader.secretKey, env.creds.ProjectID).
			CreateDatabase(&sdb.CreateDatabaseRequest{Name: "denied", CPUMax: 1})
		requireDenied(t, err, "create")
	})

	t.Run("invalid arguments", func(t *testing.T) {
		_, err := env.api.CreateDatabase(&sdb.CreateDatabaseRequest{Name: "not valid", CPUMin: 3, CPUMax: 16})
		var invalid *scw.InvalidArgumentsError
		if !errors.As(err, &invalid) {
			t.Fatalf("error = %T %v, want *scw.InvalidArgumentsError", err, err)
		}
		var names []string
		for _, detail := range invalid.Details {
			names = append(names, detail.ArgumentName+":"+detail.Reason)
		}
		slices.Sort(names)
		if want := []string{"cpu_max:constraint", "name:format"}; !slices.Equal(names, want) {
			t.Errorf("details = %v, want %v", names, want)
		}
	})

	t.Run("denied authentication", func(t *testing.T) {
		accessKey := env.addMember(env.creds.OrganizationID, nil).accessKey
		noAuth, err := scw.NewClient(scw.WithAPIURL(env.srv.URL), scw.WithDefaultRegion(scw.RegionFrPar))
		if err != nil {
			t.Fatal(err)
		}
		expiring := createExpiringKey(t, env)
		env.clock.advance(2 * time.Hour)
		t.Cleanup(func() { env.clock.advance(-2 * time.Hour) })

		clients := []struct {
			name   string
			api    *sdb.API
			reason string
		}{
			{"missing key", sdb.NewAPI(noAuth), "not_found"},
			{"unknown key", env.sdkClient(accessKey, uuid.NewString(), env.creds.ProjectID), "not_found"},
			{"expired key", env.sdkClient(expiring.AccessKey, *expiring.SecretKey, env.creds.ProjectID), "expired"},
		}
		for _, c := range clients {
			_, err := c.api.GetDatabase(&sdb.GetDatabaseRequest{DatabaseID: db.ID})
			var denied *scw.DeniedAuthenticationError
			if !errors.As(err, &denied) {
				t.Errorf("%s: error = %T %v, want *scw.DeniedAuthenticationError", c.name, err, err)
				continue
			}
			if denied.Method != "api_key" || denied.Reason != c.reason {
				t.Errorf("%s: method, reason = %s, %s; want api_key, %s", c.name, denied.Method, denied.Reason, c.reason)
			}
		}
	})

	t.Run("transient state", func(t *testing.T) {
		for _, status := range []catalog.DatabaseStatus{catalog.StatusCreating, catalog.StatusDeleting, catalog.StatusRestoring} {
			if err := env.cat.SetDatabaseStatus(db.ID, status, ""); err != nil {
				t.Fatal(err)
			}
			_, err := env.api.UpdateDatabase(&sdb.UpdateDatabaseRequest{DatabaseID: db.ID, CPUMax: scw.Uint32Ptr(2)})
			var transient *scw.TransientStateError
			if !errors.As(err, &transient) {
				t.Errorf("PATCH while %s: error = %T %v, want *scw.TransientStateError", status, err, err)
				continue
			}
			if transient.Resource != "database" || transient.ResourceID != db.ID || transient.CurrentState != string(status) {
				t.Errorf("PATCH while %s: %+v, want database %s in state %s", status, transient, db.ID, status)
			}
		}
		if err := env.cat.SetDatabaseStatus(db.ID, catalog.StatusReady, ""); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("quotas exceeded", func(t *testing.T) {
		env.createDatabase("second")
		_, err := env.api.CreateDatabase(&sdb.CreateDatabaseRequest{Name: "third", CPUMax: 1})
		var quota *scw.QuotasExceededError
		if !errors.As(err, &quota) {
			t.Fatalf("error = %T %v, want *scw.QuotasExceededError", err, err)
		}
		want := scw.QuotasExceededErrorDetail{Resource: "serverless_sql_database", Quota: 2, Current: 2}
		if len(quota.Details) != 1 || quota.Details[0] != want {
			t.Errorf("details = %+v, want [%+v]", quota.Details, want)
		}
		// Another project has its own quota.
		other := env.addProject(env.creds.OrganizationID)
		if _, err := env.api.CreateDatabase(&sdb.CreateDatabaseRequest{ProjectID: other, Name: "elsewhere", CPUMax: 1}); err != nil {
			t.Errorf("create in another project: %v", err)
		}
	})

	t.Run("precondition failed", func(t *testing.T) {
		projects := account.NewProjectAPI(env.ownerClient())
		project, err := projects.CreateProject(&account.ProjectAPICreateProjectRequest{Name: "busy"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := env.api.CreateDatabase(&sdb.CreateDatabaseRequest{ProjectID: project.ID, Name: "keeps-it-busy", CPUMax: 1}); err != nil {
			t.Fatal(err)
		}
		err = projects.DeleteProject(&account.ProjectAPIDeleteProjectRequest{ProjectID: project.ID})
		var failed *scw.PreconditionFailedError
		if !errors.As(err, &failed) {
			t.Fatalf("error = %T %v, want *scw.PreconditionFailedError", err, err)
		}
		if failed.Precondition != "resource_still_in_use" || failed.HelpMessage == "" {
			t.Errorf("precondition, help = %q, %q; want resource_still_in_use with a help message", failed.Precondition, failed.HelpMessage)
		}
	})
}

func TestQuotaStatusAndBody(t *testing.T) {
	env := newTestEnv(t, func(cfg *Config) { cfg.MaxDatabasesPerProject = 1 })
	env.createDatabase("only")
	resp := env.ownerDo(http.MethodPost, databasesPath, `{"project_id":"`+env.creds.ProjectID+`","name":"over","cpu_max":1}`)
	want := `{"details":[{"resource":"serverless_sql_database","quota":1,"current":1}],"message":"quota(s) exceeded for this resource","type":"quotas_exceeded"}`
	if resp.status != http.StatusForbidden || string(resp.body) != want {
		t.Errorf("response = %d %s, want 403 %s", resp.status, resp.body, want)
	}
}

func TestQuotaDisabled(t *testing.T) {
	env := newTestEnv(t, func(cfg *Config) { cfg.MaxDatabasesPerProject = -1 })
	for i := range 3 {
		env.createDatabase(fmt.Sprintf("db-%d", i))
	}
	if env.server.cfg.MaxDatabasesPerProject != -1 {
		t.Errorf("MaxDatabasesPerProject = %d, want -1 kept", env.server.cfg.MaxDatabasesPerProject)
	}
	if def := newTestEnv(t); def.server.cfg.MaxDatabasesPerProject != 100 {
		t.Errorf("default MaxDatabasesPerProject = %d, want 100", def.server.cfg.MaxDatabasesPerProject)
	}
}

// createExpiringKey creates, through the IAM API, a key for a new
// application that expires in one hour on the authenticator's clock.
func createExpiringKey(t *testing.T, env *testEnv) *iam.APIKey {
	t.Helper()
	api := iam.NewAPI(env.ownerClient())
	app, err := api.CreateApplication(&iam.CreateApplicationRequest{Name: "expiring"})
	if err != nil {
		t.Fatal(err)
	}
	key, err := api.CreateAPIKey(&iam.CreateAPIKeyRequest{ApplicationID: &app.ID, ExpiresAt: scw.TimePtr(env.clock.now().Add(time.Hour))})
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// requireNotFound asserts a not_found error naming the resource and ID.
func requireNotFound(t *testing.T, err error, resource, id string) {
	t.Helper()
	var notFound *scw.ResourceNotFoundError
	if !errors.As(err, &notFound) {
		t.Fatalf("error = %T %v, want *scw.ResourceNotFoundError", err, err)
	}
	if notFound.Resource != resource || notFound.ResourceID != id {
		t.Errorf("not found = %s %s, want %s %s", notFound.Resource, notFound.ResourceID, resource, id)
	}
}
