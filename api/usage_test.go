package api

import (
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/sdblocal/sdblocal/auth"
	"github.com/sdblocal/sdblocal/autoscale"
	"github.com/sdblocal/sdblocal/catalog"
)

func TestDatabaseUsage(t *testing.T) {
	env := newTestEnv(t)
	db := env.createDatabase("metered")
	path := databasesPath + "/" + db.ID + "/usage"
	since := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	env.inst.setUsage(db.ID, autoscale.Usage{
		ProvisionedVCPUSeconds: 120.5,
		CPUSeconds:             30.25,
		StorageByteSeconds:     4096e3,
		StorageBytes:           4096,
		Since:                  since,
	})

	resp := env.ownerDo(http.MethodGet, path, "")
	if resp.status != http.StatusOK {
		t.Fatalf("status = %d, want 200; body %s", resp.status, resp.body)
	}
	body := resp.decode(t)
	want := map[string]any{
		"database_id":              db.ID,
		"provisioned_vcpu_seconds": 120.5,
		"cpu_seconds":              30.25,
		"storage_byte_seconds":     4096e3,
		"storage_bytes":            4096.0,
		"since":                    "2026-03-01T12:00:00.000000Z",
	}
	for key, value := range want {
		if body[key] != value {
			t.Errorf("%s = %v, want %v", key, body[key], value)
		}
	}
	if len(body) != len(want) {
		t.Errorf("body has %d fields, want %d: %s", len(body), len(want), resp.body)
	}
}

func TestDatabaseUsageWithoutInstance(t *testing.T) {
	env := newTestEnv(t)
	db := env.createDatabase("no-instance")

	resp := env.ownerDo(http.MethodGet, databasesPath+"/"+db.ID+"/usage", "")
	if resp.status != http.StatusOK {
		t.Fatalf("status = %d, want 200; body %s", resp.status, resp.body)
	}
	body := resp.decode(t)
	if body["provisioned_vcpu_seconds"] != 0.0 || body["cpu_seconds"] != 0.0 || body["storage_byte_seconds"] != 0.0 {
		t.Errorf("counters = %s, want zeros", resp.body)
	}
	since, err := time.Parse(time.RFC3339Nano, body["since"].(string))
	if err != nil || time.Since(since) > time.Minute {
		t.Errorf("since = %v (%v), want about now", body["since"], err)
	}
}

func TestDatabaseUsageAuthorization(t *testing.T) {
	env := newTestEnv(t)
	db := env.createDatabase("private")
	path := databasesPath + "/" + db.ID + "/usage"
	env.inst.setUsage(db.ID, autoscale.Usage{Since: time.Now()})

	reader := env.addMember(env.creds.OrganizationID, nil,
		catalog.Rule{PermissionSetNames: []string{string(auth.ReadOnly)}, OrganizationID: env.creds.OrganizationID})
	if resp := env.do(http.MethodGet, path, reader.secretKey, "", nil); resp.status != http.StatusOK {
		t.Errorf("read-only member: status %d, want 200; body %s", resp.status, resp.body)
	}

	dataOnly := env.addMember(env.creds.OrganizationID, nil,
		catalog.Rule{PermissionSetNames: []string{string(auth.DataReadWrite)}, OrganizationID: env.creds.OrganizationID})
	if resp := env.do(http.MethodGet, path, dataOnly.secretKey, "", nil); resp.status != http.StatusForbidden {
		t.Errorf("data-only member: status %d, want 403; body %s", resp.status, resp.body)
	}

	if resp := env.do(http.MethodGet, path, "", "", nil); resp.status != http.StatusUnauthorized {
		t.Errorf("no token: status %d, want 401; body %s", resp.status, resp.body)
	}

	unknown := databasesPath + "/" + uuid.NewString() + "/usage"
	if resp := env.ownerDo(http.MethodGet, unknown, ""); resp.status != http.StatusNotFound {
		t.Errorf("unknown database: status %d, want 404; body %s", resp.status, resp.body)
	}

	if resp := env.ownerDo(http.MethodPost, path, "{}"); resp.status != http.StatusMethodNotAllowed {
		t.Errorf("POST: status %d, want 405; body %s", resp.status, resp.body)
	}
}
