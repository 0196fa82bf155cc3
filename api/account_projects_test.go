package api

import (
	"errors"
	"net/http"
	"slices"
	"testing"

	"github.com/google/uuid"
	account "github.com/scaleway/scaleway-sdk-go/api/account/v3"
	iam "github.com/scaleway/scaleway-sdk-go/api/iam/v1alpha1"
	sdb "github.com/scaleway/scaleway-sdk-go/api/serverless_sqldb/v1alpha1"
	"github.com/scaleway/scaleway-sdk-go/scw"
)

func TestAccountProjects(t *testing.T) {
	env := newTestEnv(t)
	projects := account.NewProjectAPI(env.ownerClient())

	created, err := projects.CreateProject(&account.ProjectAPICreateProjectRequest{Name: "staging", Description: "pre-production"})
	if err != nil {
		t.Fatal(err)
	}
	if created.OrganizationID != env.creds.OrganizationID || created.Status != account.ProjectStatusActive || created.Description != "pre-production" {
		t.Errorf("created project = %+v", created)
	}

	got, err := projects.GetProject(&account.ProjectAPIGetProjectRequest{ProjectID: created.ID})
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "staging" {
		t.Errorf("GetProject name = %q, want staging", got.Name)
	}

	list, err := projects.ListProjects(&account.ProjectAPIListProjectsRequest{OrderBy: account.ListProjectsRequestOrderByNameAsc}, scw.WithAllPages())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range list.Projects {
		names = append(names, p.Name)
	}
	if list.TotalCount != 2 || !slices.Equal(names, []string{"default", "staging"}) {
		t.Errorf("ListProjects(name_asc) = %v (total %d), want default, staging", names, list.TotalCount)
	}
	filtered, err := projects.ListProjects(&account.ProjectAPIListProjectsRequest{Name: scw.StringPtr("stag"), ProjectIDs: []string{created.ID}})
	if err != nil {
		t.Fatal(err)
	}
	if filtered.TotalCount != 1 || filtered.Projects[0].ID != created.ID {
		t.Errorf("ListProjects(name, ids) = %+v, want staging alone", filtered)
	}

	renamed, err := projects.UpdateProject(&account.ProjectAPIUpdateProjectRequest{ProjectID: created.ID, Name: scw.StringPtr("qa")})
	if err != nil {
		t.Fatal(err)
	}
	if renamed.Name != "qa" || renamed.Description != "pre-production" {
		t.Errorf("UpdateProject = %+v, want name qa and the old description", renamed)
	}

	// A database in the project blocks its deletion until it is gone.
	db, err := env.api.CreateDatabase(&sdb.CreateDatabaseRequest{ProjectID: created.ID, Name: "blocker", CPUMax: 1})
	if err != nil {
		t.Fatal(err)
	}
	err = projects.DeleteProject(&account.ProjectAPIDeleteProjectRequest{ProjectID: created.ID})
	var failed *scw.PreconditionFailedError
	if !errors.As(err, &failed) || failed.Precondition != "resource_still_in_use" {
		t.Fatalf("delete a project with a database: %T %v, want precondition_failed resource_still_in_use", err, err)
	}
	if _, err := env.api.DeleteDatabase(&sdb.DeleteDatabaseRequest{DatabaseID: db.ID}); err != nil {
		t.Fatal(err)
	}
	err = projects.DeleteProject(&account.ProjectAPIDeleteProjectRequest{ProjectID: created.ID})
	if !errors.As(err, &failed) {
		t.Fatalf("delete a project with a database being deleted: %T %v, want precondition_failed", err, err)
	}
	env.inst.finishRemove(t, db.ID)

	if err := projects.DeleteProject(&account.ProjectAPIDeleteProjectRequest{ProjectID: created.ID}); err != nil {
		t.Fatal(err)
	}
	_, err = projects.GetProject(&account.ProjectAPIGetProjectRequest{ProjectID: created.ID})
	requireNotFound(t, err, "project", created.ID)

	t.Run("default project of a key is kept", func(t *testing.T) {
		err := projects.DeleteProject(&account.ProjectAPIDeleteProjectRequest{ProjectID: env.creds.ProjectID})
		var failed *scw.PreconditionFailedError
		if !errors.As(err, &failed) || failed.Precondition != "resource_still_in_use" {
			t.Errorf("delete the owner key's default project: %T %v, want precondition_failed resource_still_in_use", err, err)
		}
	})
	t.Run("unknown project", func(t *testing.T) {
		id := uuid.NewString()
		err := projects.DeleteProject(&account.ProjectAPIDeleteProjectRequest{ProjectID: id})
		requireNotFound(t, err, "project", id)
	})
	t.Run("raw delete response", func(t *testing.T) {
		spare, err := projects.CreateProject(&account.ProjectAPICreateProjectRequest{Name: "spare"})
		if err != nil {
			t.Fatal(err)
		}
		resp := env.ownerDo(http.MethodDelete, "/account/v3/projects/"+spare.ID, "")
		if resp.status != http.StatusNoContent || len(resp.body) != 0 {
			t.Errorf("DELETE = %d %q, want 204 with no body", resp.status, resp.body)
		}
	})
}

func TestAccountProjectRights(t *testing.T) {
	env := newTestEnv(t)
	org := env.creds.OrganizationID
	clientOf := func(key *iam.APIKey) *account.ProjectAPI {
		return account.NewProjectAPI(env.scwClient(key.AccessKey, *key.SecretKey, env.creds.ProjectID, org))
	}
	_, databaseKey := env.newApplication("db-admin", organizationRule(org, "ServerlessSQLDatabaseFullAccess"))
	_, readerKey := env.newApplication("project-reader", organizationRule(org, "ProjectReadOnly"))
	_, managerKey := env.newApplication("project-manager", organizationRule(org, "ProjectManager"))

	t.Run("database rights give no project rights", func(t *testing.T) {
		_, err := clientOf(databaseKey).ListProjects(&account.ProjectAPIListProjectsRequest{})
		requireDeniedOn(t, err, "account_project", "list")
	})
	t.Run("ProjectReadOnly reads but cannot create", func(t *testing.T) {
		reader := clientOf(readerKey)
		if _, err := reader.GetProject(&account.ProjectAPIGetProjectRequest{ProjectID: env.creds.ProjectID}); err != nil {
			t.Errorf("GetProject: %v", err)
		}
		_, err := reader.CreateProject(&account.ProjectAPICreateProjectRequest{Name: "nope"})
		requireDeniedOn(t, err, "account_project", "create")
	})
	t.Run("ProjectManager creates and deletes", func(t *testing.T) {
		manager := clientOf(managerKey)
		project, err := manager.CreateProject(&account.ProjectAPICreateProjectRequest{Name: "managed"})
		if err != nil {
			t.Fatal(err)
		}
		if err := manager.DeleteProject(&account.ProjectAPIDeleteProjectRequest{ProjectID: project.ID}); err != nil {
			t.Errorf("DeleteProject: %v", err)
		}
	})
	t.Run("another organization is denied", func(t *testing.T) {
		otherOrganization, otherProject := env.addOrganization()
		_, err := clientOf(managerKey).GetProject(&account.ProjectAPIGetProjectRequest{ProjectID: otherProject})
		requireDeniedOn(t, err, "account_project", "read")
		_, err = account.NewProjectAPI(env.ownerClient()).CreateProject(&account.ProjectAPICreateProjectRequest{Name: "x", OrganizationID: otherOrganization})
		requireDeniedOn(t, err, "account_project", "create")
	})
}

// TestReadOnlyApplicationScope sets up access the way a user would, with
// the IAM and Account APIs only: an application holding
// ServerlessSQLDatabaseReadOnly on project A.
func TestReadOnlyApplicationScope(t *testing.T) {
	env := newTestEnv(t)
	projectA := env.creds.ProjectID
	projectB, err := account.NewProjectAPI(env.ownerClient()).CreateProject(&account.ProjectAPICreateProjectRequest{Name: "b"})
	if err != nil {
		t.Fatal(err)
	}
	inA := env.createDatabase("in-a")
	inB, err := env.api.CreateDatabase(&sdb.CreateDatabaseRequest{ProjectID: projectB.ID, Name: "in-b", CPUMax: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, key := env.newApplication("reader", projectRule(projectA, "ServerlessSQLDatabaseReadOnly"))
	// No default project, so ListDatabases sends an empty project_id and
	// the result depends on the caller's rights alone.
	reader := sdb.NewAPI(env.scwClient(key.AccessKey, *key.SecretKey, "", ""))

	t.Run("lists only project A", func(t *testing.T) {
		resp, err := reader.ListDatabases(&sdb.ListDatabasesRequest{}, scw.WithAllPages())
		if err != nil {
			t.Fatal(err)
		}
		if resp.TotalCount != 1 || len(resp.Databases) != 1 || resp.Databases[0].ID != inA.ID {
			t.Errorf("ListDatabases = %d databases (total %d), want only %s", len(resp.Databases), resp.TotalCount, inA.ID)
		}
		inProjectA, err := reader.ListDatabases(&sdb.ListDatabasesRequest{ProjectID: projectA})
		if err != nil || inProjectA.TotalCount != 1 {
			t.Errorf("ListDatabases(project A) = %v, %v; want 1 database", inProjectA, err)
		}
	})
	t.Run("reads project A", func(t *testing.T) {
		if _, err := reader.GetDatabase(&sdb.GetDatabaseRequest{DatabaseID: inA.ID}); err != nil {
			t.Errorf("GetDatabase(A): %v", err)
		}
	})
	t.Run("cannot create", func(t *testing.T) {
		_, err := reader.CreateDatabase(&sdb.CreateDatabaseRequest{ProjectID: projectA, Name: "nope", CPUMax: 1})
		requireDenied(t, err, "create")
	})
	t.Run("cannot read project B", func(t *testing.T) {
		_, err := reader.GetDatabase(&sdb.GetDatabaseRequest{DatabaseID: inB.ID})
		requireDenied(t, err, "read")
		_, err = reader.ListDatabases(&sdb.ListDatabasesRequest{ProjectID: projectB.ID})
		requireDenied(t, err, "list")
		_, err = reader.ListDatabaseBackups(&sdb.ListDatabaseBackupsRequest{ProjectID: &projectB.ID})
		requireDenied(t, err, "list")
	})
	t.Run("cannot restore", func(t *testing.T) {
		_, err := reader.RestoreDatabaseFromBackup(&sdb.RestoreDatabaseFromBackupRequest{DatabaseID: inA.ID, BackupID: uuid.NewString()})
		requireDenied(t, err, "restore")
	})
}
