package api

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	sdb "github.com/scaleway/scaleway-sdk-go/api/serverless_sqldb/v1alpha1"
	"github.com/scaleway/scaleway-sdk-go/scw"

	"github.com/sdblocal/sdblocal/auth"
	"github.com/sdblocal/sdblocal/catalog"
)

func TestAuthenticationErrors(t *testing.T) {
	env := newTestEnv(t)
	expiredAt := time.Now().Add(-time.Hour)
	expired := env.addMember(env.creds.OrganizationID, &expiredAt)

	tests := []struct {
		name   string
		token  string
		reason string
	}{
		{"missing token", "", "not_found"},
		{"malformed token", "not-a-secret-key", "invalid_argument"},
		{"unknown secret key", uuid.NewString(), "not_found"},
		{"expired key", expired.secretKey, "expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := env.do(http.MethodGet, databasesPath, tt.token, "", nil)
			want := `{"message":"authentication is denied","method":"api_key","reason":"` + tt.reason + `","type":"denied_authentication"}`
			if resp.status != http.StatusUnauthorized || string(resp.body) != want {
				t.Errorf("response = %d %s, want 401 %s", resp.status, resp.body, want)
			}
			if ct := resp.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
		})
	}

	// No secret that was presented may reach the log.
	logs := env.logs.String()
	for _, tt := range tests {
		if tt.token != "" && strings.Contains(logs, tt.token) {
			t.Errorf("log contains the token of case %q:\n%s", tt.name, logs)
		}
	}
}

func TestAuthenticationErrorThroughSDK(t *testing.T) {
	env := newTestEnv(t)
	accessKey, err := auth.NewAccessKey()
	if err != nil {
		t.Fatal(err)
	}
	api := env.sdkClient(accessKey, uuid.NewString(), env.creds.ProjectID)
	_, err = api.ListDatabases(&sdb.ListDatabasesRequest{})
	denied, ok := err.(*scw.DeniedAuthenticationError)
	if !ok {
		t.Fatalf("error = %T %v, want *scw.DeniedAuthenticationError", err, err)
	}
	if denied.Method != "api_key" || denied.Reason != "not_found" {
		t.Errorf("method, reason = %q, %q; want api_key, not_found", denied.Method, denied.Reason)
	}
}

func TestAuthorizationByPermissionSet(t *testing.T) {
	env := newTestEnv(t)
	projectA := env.creds.ProjectID
	projectB := env.addProject(env.creds.OrganizationID)
	dbA := env.createDatabase("in-a")
	dbB, err := env.api.CreateDatabase(&sdb.CreateDatabaseRequest{ProjectID: projectB, Name: "in-b", CPUMax: 1})
	if err != nil {
		t.Fatal(err)
	}

	readOnly := env.addMember(env.creds.OrganizationID, nil,
		catalog.Rule{PermissionSetNames: []string{string(auth.ReadOnly)}, ProjectIDs: []string{projectA}})
	reader := env.sdkClient(readOnly.accessKey, readOnly.secretKey, projectA)

	t.Run("read-only member reads its project", func(t *testing.T) {
		got, err := reader.GetDatabase(&sdb.GetDatabaseRequest{DatabaseID: dbA.ID})
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != dbA.ID {
			t.Errorf("id = %s, want %s", got.ID, dbA.ID)
		}
	})
	t.Run("read-only member lists only its project", func(t *testing.T) {
		resp := env.do(http.MethodGet, databasesPath+"?project_id=", readOnly.secretKey, "", nil)
		if resp.status != http.StatusOK {
			t.Fatalf("status = %d, want 200; body %s", resp.status, resp.body)
		}
		body := resp.decode(t)
		if body["total_count"] != 1.0 || !strings.Contains(string(resp.body), dbA.ID) {
			t.Errorf("list = %s, want only database %s", resp.body, dbA.ID)
		}
	})
	t.Run("read-only member cannot read another project", func(t *testing.T) {
		_, err := reader.GetDatabase(&sdb.GetDatabaseRequest{DatabaseID: dbB.ID})
		requireDenied(t, err, "read")
	})
	t.Run("read-only member cannot list another project", func(t *testing.T) {
		_, err := reader.ListDatabases(&sdb.ListDatabasesRequest{ProjectID: projectB})
		requireDenied(t, err, "list")
	})
	t.Run("read-only member cannot create", func(t *testing.T) {
		_, err := reader.CreateDatabase(&sdb.CreateDatabaseRequest{Name: "db", CPUMax: 1})
		requireDenied(t, err, "create")
	})
	t.Run("read-only member cannot update", func(t *testing.T) {
		_, err := reader.UpdateDatabase(&sdb.UpdateDatabaseRequest{DatabaseID: dbA.ID, CPUMin: scw.Uint32Ptr(1)})
		requireDenied(t, err, "write")
	})
	t.Run("read-only member cannot delete", func(t *testing.T) {
		_, err := reader.DeleteDatabase(&sdb.DeleteDatabaseRequest{DatabaseID: dbA.ID})
		requireDenied(t, err, "delete")
	})

	dataOnly := env.addMember(env.creds.OrganizationID, nil,
		catalog.Rule{PermissionSetNames: []string{string(auth.DataReadWrite)}, OrganizationID: env.creds.OrganizationID})
	dataClient := env.sdkClient(dataOnly.accessKey, dataOnly.secretKey, projectA)
	t.Run("data-only member has no API read right", func(t *testing.T) {
		_, err := dataClient.GetDatabase(&sdb.GetDatabaseRequest{DatabaseID: dbA.ID})
		requireDenied(t, err, "read")
	})

	fullAccess := env.addMember(env.creds.OrganizationID, nil,
		catalog.Rule{PermissionSetNames: []string{string(auth.FullAccess)}, OrganizationID: env.creds.OrganizationID})
	t.Run("organization-wide full access creates anywhere", func(t *testing.T) {
		manager := env.sdkClient(fullAccess.accessKey, fullAccess.secretKey, projectB)
		if _, err := manager.CreateDatabase(&sdb.CreateDatabaseRequest{Name: "by-member", CPUMax: 1}); err != nil {
			t.Fatal(err)
		}
	})

	otherOrganization, otherProject := env.addOrganization()
	outsider := env.addMember(otherOrganization, nil,
		catalog.Rule{PermissionSetNames: []string{string(auth.FullAccess)}, OrganizationID: otherOrganization})
	outsiderClient := env.sdkClient(outsider.accessKey, outsider.secretKey, otherProject)
	t.Run("other organization cannot read", func(t *testing.T) {
		_, err := outsiderClient.GetDatabase(&sdb.GetDatabaseRequest{DatabaseID: dbA.ID})
		requireDenied(t, err, "read")
	})
	t.Run("other organization lists nothing of ours", func(t *testing.T) {
		resp := env.do(http.MethodGet, databasesPath, outsider.secretKey, "", nil)
		if resp.status != http.StatusOK || resp.decode(t)["total_count"] != 0.0 {
			t.Errorf("list = %d %s, want 200 with total_count 0", resp.status, resp.body)
		}
	})
}
