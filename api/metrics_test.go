package api

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRequestMetricsByRouteAndCode(t *testing.T) {
	env := newTestEnv(t)
	registry := prometheus.NewRegistry()
	cfg := env.server.cfg
	cfg.Registerer, cfg.Gatherer = registry, registry
	srv := httptest.NewServer(New(cfg, env.cat, env.server.authn, env.inst))
	t.Cleanup(srv.Close)

	send := func(method, path string, token bool) int {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token {
			req.Header.Set("X-Auth-Token", env.creds.SecretKey)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	const unknownID = "6a2c8f4e-0d3b-4f5a-9c1e-7b8d9e0f1a2b"
	send(http.MethodGet, "/healthz", false)
	send(http.MethodGet, "/healthz", false)
	send(http.MethodGet, databasesPath, true)
	send(http.MethodGet, databasesPath, false)
	send(http.MethodGet, databasesPath+"/"+unknownID, true)
	send(http.MethodPut, databasesPath+"/"+unknownID, true)
	send(http.MethodGet, "/no/such/route", false)

	cases := []struct {
		route, code string
		want        float64
	}{
		{"GET /healthz", "200", 2},
		{"GET " + apiPrefix + "/databases", "200", 1},
		{"GET " + apiPrefix + "/databases", "401", 1},
		{"GET " + apiPrefix + "/databases/{database_id}", "404", 1},
		{apiPrefix + "/databases/{database_id}", "405", 1},
		{"/", "404", 1},
	}
	for _, tc := range cases {
		if got := requestCount(t, registry, tc.route, tc.code); got != tc.want {
			t.Errorf("sdblocal_api_requests_total{route=%q,code=%q} = %v, want %v", tc.route, tc.code, got, tc.want)
		}
	}

	// The database ID must never become a label value.
	families, err := registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, family := range families {
		for _, metric := range family.GetMetric() {
			for _, label := range metric.GetLabel() {
				if label.GetName() == "route" && (label.GetValue() == "" || strings.Contains(label.GetValue(), unknownID)) {
					t.Errorf("route label %q: want a registered pattern", label.GetValue())
				}
			}
		}
	}
}

func TestRequestMetricsConnectHasNoRoute(t *testing.T) {
	registry := prometheus.NewRegistry()
	metrics := newRequestMetrics(registry)
	mux := http.NewServeMux()
	mux.HandleFunc("/tree/", func(w http.ResponseWriter, r *http.Request) {})
	handler := metrics.instrument(mux)

	// ServeMux redirects CONNECT /tree to /tree/ and sets Pattern to the
	// request's own path, which the label must not take.
	req := httptest.NewRequest(http.MethodConnect, "/tree", nil)
	req.URL.Path = "/tree"
	handler.ServeHTTP(httptest.NewRecorder(), req)

	if got := requestCount(t, registry, routeNone, "307"); got != 1 {
		t.Errorf("CONNECT counted as route %q = %v, want 1", routeNone, got)
	}
	families, err := registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(families) != 1 || len(families[0].GetMetric()) != 1 {
		t.Errorf("series after one request: %v, want one", families)
	}
}

func TestStatusRecorderDefaultsTo200(t *testing.T) {
	recorder := &statusRecorder{ResponseWriter: httptest.NewRecorder()}
	if got := recorder.status(); got != http.StatusOK {
		t.Errorf("status with nothing written = %d, want 200", got)
	}
	recorder.WriteHeader(http.StatusContinue)
	recorder.WriteHeader(http.StatusTeapot)
	recorder.WriteHeader(http.StatusInternalServerError)
	if got := recorder.status(); got != http.StatusTeapot {
		t.Errorf("status after 100, 418, 500 = %d, want the first final code 418", got)
	}
}

// requestCount returns the value of sdblocal_api_requests_total for the
// route and code, and 0 when the series does not exist.
func requestCount(t *testing.T, registry *prometheus.Registry, route, code string) float64 {
	t.Helper()
	families, err := registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, family := range families {
		if family.GetName() != "sdblocal_api_requests_total" {
			continue
		}
		for _, metric := range family.GetMetric() {
			labels := map[string]string{}
			for _, label := range metric.GetLabel() {
				labels[label.GetName()] = label.GetValue()
			}
			if labels["route"] == route && labels["code"] == code {
				return metric.GetCounter().GetValue()
			}
		}
	}
	return 0
}
