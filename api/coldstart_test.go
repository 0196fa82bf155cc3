package api

import (
	"net/http"
	"testing"

	sdb "github.com/scaleway/scaleway-sdk-go/api/serverless_sqldb/v1alpha1"

	"github.com/sdblocal/sdblocal/catalog"
)

func TestColdStartDelayField(t *testing.T) {
	env := newTestEnv(t)

	resp := env.ownerDo(http.MethodPost, databasesPath,
		`{"project_id":"`+env.creds.ProjectID+`","name":"cold","cpu_min":0,"cpu_max":2,"cold_start_delay":"1s - 4s"}`)
	if resp.status != http.StatusOK {
		t.Fatalf("create status = %d, want 200; body %s", resp.status, resp.body)
	}
	created := resp.decode(t)
	if got := created["cold_start_delay"]; got != "1s-4s" {
		t.Errorf("created cold_start_delay = %v, want the normalised 1s-4s", got)
	}
	id := created["id"].(string)
	if got := storedColdStartDelay(t, env, id); got != "1s-4s" {
		t.Errorf("catalog cold_start_delay = %q, want 1s-4s", got)
	}

	got := env.ownerDo(http.MethodGet, databasesPath+"/"+id, "").decode(t)
	if got["cold_start_delay"] != "1s-4s" {
		t.Errorf("GET cold_start_delay = %v, want 1s-4s", got["cold_start_delay"])
	}

	// The SDK ignores the field, so it still reads the database.
	if _, err := env.api.GetDatabase(&sdb.GetDatabaseRequest{DatabaseID: id}); err != nil {
		t.Errorf("SDK GetDatabase: %v", err)
	}

	resp = env.ownerDo(http.MethodPatch, databasesPath+"/"+id, `{"cold_start_delay":"7s"}`)
	if resp.status != http.StatusOK {
		t.Fatalf("PATCH status = %d, want 200; body %s", resp.status, resp.body)
	}
	if got := resp.decode(t)["cold_start_delay"]; got != "7s" {
		t.Errorf("patched cold_start_delay = %v, want 7s", got)
	}

	// A PATCH without the field leaves it alone.
	resp = env.ownerDo(http.MethodPatch, databasesPath+"/"+id, `{"cpu_max":3}`)
	if got := resp.decode(t)["cold_start_delay"]; got != "7s" {
		t.Errorf("cold_start_delay after a PATCH of cpu_max = %v, want 7s", got)
	}

	// The empty string returns the database to the server's delay.
	resp = env.ownerDo(http.MethodPatch, databasesPath+"/"+id, `{"cold_start_delay":""}`)
	if _, present := resp.decode(t)["cold_start_delay"]; present {
		t.Errorf("cold_start_delay after reset: present in %s, want absent", resp.body)
	}
	if got := storedColdStartDelay(t, env, id); got != "" {
		t.Errorf("catalog cold_start_delay after reset = %q, want empty", got)
	}
}

func TestColdStartDelayFieldAbsentByDefault(t *testing.T) {
	env := newTestEnv(t)
	db := env.createDatabase("plain")
	body := env.ownerDo(http.MethodGet, databasesPath+"/"+db.ID, "").decode(t)
	if _, present := body["cold_start_delay"]; present {
		t.Errorf("cold_start_delay present in %v, want absent when the database sets none", body)
	}
}

func TestColdStartDelayFieldRejectsInvalid(t *testing.T) {
	env := newTestEnv(t)
	db := env.createDatabase("strict")
	for _, value := range []string{"soon", "4s-1s", "31s", "-1s", "2"} {
		resp := env.ownerDo(http.MethodPost, databasesPath,
			`{"project_id":"`+env.creds.ProjectID+`","name":"bad","cold_start_delay":"`+value+`"}`)
		requireRawArgumentError(t, resp, "cold_start_delay", string(reasonFormat))

		resp = env.ownerDo(http.MethodPatch, databasesPath+"/"+db.ID, `{"cold_start_delay":"`+value+`"}`)
		requireRawArgumentError(t, resp, "cold_start_delay", string(reasonFormat))
	}
	if got := storedColdStartDelay(t, env, db.ID); got != "" {
		t.Errorf("catalog cold_start_delay after rejected PATCHes = %q, want empty", got)
	}
}

func storedColdStartDelay(t *testing.T, env *testEnv, id string) string {
	t.Helper()
	var db catalog.Database
	err := env.cat.View(func(tx *catalog.Tx) error {
		var err error
		db, err = tx.Database(id)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return db.ColdStartDelay
}
