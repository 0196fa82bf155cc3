package api

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	sdb "github.com/scaleway/scaleway-sdk-go/api/serverless_sqldb/v1alpha1"
	"github.com/scaleway/scaleway-sdk-go/scw"
)

func TestHealthAndMetrics(t *testing.T) {
	registry := prometheus.NewRegistry()
	counter := prometheus.NewCounter(prometheus.CounterOpts{Name: "sdblocal_test_events_total", Help: "Events counted by the test."})
	registry.MustRegister(counter)
	counter.Add(3)
	env := newTestEnv(t, func(cfg *Config) { cfg.Gatherer = registry })

	health := env.do(http.MethodGet, "/healthz", "", "", nil)
	if health.status != http.StatusOK || string(health.body) != "ok" {
		t.Errorf("/healthz = %d %q, want 200 ok", health.status, health.body)
	}

	metrics := env.do(http.MethodGet, "/metrics", "", "", nil)
	if metrics.status != http.StatusOK || !strings.Contains(string(metrics.body), "sdblocal_test_events_total 3") {
		t.Errorf("/metrics = %d %s, want 200 with sdblocal_test_events_total 3", metrics.status, metrics.body)
	}

	metadata := env.do(http.MethodGet, "/metadata", "", "", nil)
	if metadata.status != http.StatusOK || metadata.decode(t)["domain"] != "scw.eu" {
		t.Errorf("/metadata = %d %s, want 200 with domain scw.eu", metadata.status, metadata.body)
	}
}

func TestUnknownRoutesAndMethods(t *testing.T) {
	env := newTestEnv(t)
	id := uuid.NewString()
	tests := []struct {
		method    string
		path      string
		status    int
		errorType string
		allow     string
	}{
		{http.MethodGet, "/nowhere", http.StatusNotFound, "unknown_route", ""},
		{http.MethodGet, "/serverless-sqldb/v1alpha1/regions/fr-par/instances", http.StatusNotFound, "unknown_route", ""},
		{http.MethodPost, databasesPath + "/" + id + "/upgrade", http.StatusNotFound, "unknown_route", ""},
		{http.MethodGet, "/iam/v1alpha1/groups", http.StatusNotFound, "unknown_route", ""},
		{http.MethodGet, databasesPath + "/" + id + "/restore", http.StatusMethodNotAllowed, "method_not_allowed", "POST"},
		{http.MethodPut, "/iam/v1alpha1/applications", http.StatusMethodNotAllowed, "method_not_allowed", "GET, HEAD, POST"},
		{http.MethodPost, "/account/v3/projects/" + id, http.StatusMethodNotAllowed, "method_not_allowed", "DELETE, GET, HEAD, PATCH"},
		{http.MethodGet, databasesPath + "/", http.StatusNotFound, "unknown_route", ""},
		{http.MethodPut, databasesPath, http.StatusMethodNotAllowed, "method_not_allowed", "GET, HEAD, POST"},
		{http.MethodPost, databasesPath + "/" + id, http.StatusMethodNotAllowed, "method_not_allowed", "DELETE, GET, HEAD, PATCH"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			resp := env.ownerDo(tt.method, tt.path, "")
			if resp.status != tt.status {
				t.Fatalf("status = %d, want %d; body %s", resp.status, tt.status, resp.body)
			}
			if ct := resp.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			body := resp.decode(t)
			if body["type"] != tt.errorType {
				t.Errorf("type = %v, want %s", body["type"], tt.errorType)
			}
			if message, _ := body["message"].(string); !strings.Contains(message, tt.path) {
				t.Errorf("message %q does not name the path", message)
			}
			if got := resp.header.Get("Allow"); got != tt.allow {
				t.Errorf("Allow = %q, want %q", got, tt.allow)
			}
		})
	}
}

func TestMalformedBodies(t *testing.T) {
	env := newTestEnv(t)
	project := env.creds.ProjectID
	valid := fmt.Sprintf(`{"project_id":%q,"name":"db","cpu_max":1}`, project)
	tests := []struct {
		name     string
		body     string
		argument string
		reason   string
	}{
		{"syntax error", `{`, "body", "format"},
		{"truncated object", `{"name":`, "body", "format"},
		{"array instead of object", `[]`, "body", "format"},
		{"string for an integer", `{"cpu_max":"four"}`, "cpu_max", "format"},
		{"negative integer", `{"cpu_max":-1}`, "cpu_max", "format"},
		{"fractional integer", `{"cpu_min":1.5}`, "cpu_min", "format"},
		{"integer above uint32", `{"cpu_min":4294967296}`, "cpu_min", "format"},
		{"number for a string", `{"name":5}`, "name", "format"},
		{"two objects", valid + `{}`, "body", "format"},
		{"trailing garbage", valid + ` x`, "body", "format"},
		{"oversize value", `{"name":"` + strings.Repeat("a", maxBodyBytes) + `"}`, "body", "constraint"},
		{"oversize trailing space", valid + strings.Repeat(" ", maxBodyBytes), "body", "constraint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			requireRawArgumentError(t, env.ownerDo(http.MethodPost, databasesPath, tt.body), tt.argument, tt.reason)
		})
	}
	if got := env.inst.provisionedIDs(); len(got) != 0 {
		t.Errorf("provisioned = %v after malformed bodies, want none", got)
	}
}

func TestBodyContentType(t *testing.T) {
	env := newTestEnv(t)
	body := fmt.Sprintf(`{"project_id":%q,"name":"db","cpu_max":1}`, env.creds.ProjectID)
	tests := []struct {
		contentType string
		status      int
	}{
		{"", http.StatusOK},
		{"application/json", http.StatusOK},
		{"application/json; charset=utf-8", http.StatusOK},
		{"text/plain", http.StatusUnsupportedMediaType},
		{"application/x-www-form-urlencoded", http.StatusUnsupportedMediaType},
		{"not a media type;;", http.StatusUnsupportedMediaType},
	}
	for _, tt := range tests {
		t.Run(tt.contentType, func(t *testing.T) {
			resp := env.do(http.MethodPost, databasesPath, env.creds.SecretKey, tt.contentType, strings.NewReader(body))
			if resp.status != tt.status {
				t.Fatalf("status = %d, want %d; body %s", resp.status, tt.status, resp.body)
			}
			if resp.status != http.StatusOK && resp.decode(t)["type"] != "unsupported_media_type" {
				t.Errorf("body = %s, want type unsupported_media_type", resp.body)
			}
		})
	}
}

func TestEmptyCreateBody(t *testing.T) {
	env := newTestEnv(t)
	resp := env.ownerDo(http.MethodPost, databasesPath, "")
	if resp.status != http.StatusBadRequest {
		t.Fatalf("status = %d, want 400; body %s", resp.status, resp.body)
	}
	for _, argument := range []string{`"project_id"`, `"name"`} {
		if !strings.Contains(string(resp.body), argument) {
			t.Errorf("body %s does not name %s as required", resp.body, argument)
		}
	}
}

func TestUnknownRegion(t *testing.T) {
	env := newTestEnv(t)
	_, err := env.api.ListDatabases(&sdb.ListDatabasesRequest{Region: scw.RegionNlAms})
	detail := requireArgumentError(t, err)
	if detail.ArgumentName != "region" || detail.Reason != "constraint" {
		t.Errorf("detail = %+v, want region constraint", detail)
	}
	if !strings.Contains(detail.HelpMessage, "fr-par") {
		t.Errorf("help message %q does not list fr-par", detail.HelpMessage)
	}
}

func TestFailedRequestsLoggedOnce(t *testing.T) {
	env := newTestEnv(t)
	unknown := uuid.NewString()
	env.do(http.MethodGet, databasesPath, unknown, "", nil)
	env.ownerDo(http.MethodGet, databasesPath+"/"+uuid.NewString(), "")
	env.ownerDo(http.MethodGet, databasesPath, "")

	logs := env.logs.String()
	if n := strings.Count(logs, "request failed"); n != 2 {
		t.Errorf("log has %d failed requests, want 2:\n%s", n, logs)
	}
	if !strings.Contains(logs, "status=401") || !strings.Contains(logs, "status=404") {
		t.Errorf("log lacks the 401 or the 404:\n%s", logs)
	}
	if !strings.Contains(logs, "principal_id="+env.creds.PrincipalID) {
		t.Errorf("log lacks principal_id=%s:\n%s", env.creds.PrincipalID, logs)
	}
	if !strings.Contains(logs, "method=GET path="+databasesPath) {
		t.Errorf("log lacks the method and path:\n%s", logs)
	}
	for _, secret := range []string{unknown, env.creds.SecretKey} {
		if strings.Contains(logs, secret) {
			t.Errorf("log contains a secret key:\n%s", logs)
		}
	}
}

func TestEndpointURL(t *testing.T) {
	id := "3f8a0b1a-c09e-474d-8181-c81951f12cf2"
	tests := []struct {
		host string
		want string
	}{
		{"localhost", "postgresql://localhost:5432/app?sslmode=require&options=databaseid%3D" + id},
		{"127.0.0.1", "postgresql://127.0.0.1:5432/app?sslmode=require&options=databaseid%3D" + id},
		{"::1", "postgresql://[::1]:5432/app?sslmode=require&options=databaseid%3D" + id},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			got := endpointURL(tt.host, 5432, "app", id)
			if got != tt.want {
				t.Errorf("endpoint = %q, want %q", got, tt.want)
			}
			parsed, err := url.Parse(got)
			if err != nil {
				t.Fatal(err)
			}
			if parsed.Hostname() != tt.host || parsed.Query().Get("options") != "databaseid="+id {
				t.Errorf("parsed host %q, options %q; want %q, databaseid=%s", parsed.Hostname(), parsed.Query().Get("options"), tt.host, id)
			}
		})
	}
}
