package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sdblocal/sdblocal/auth"
	"github.com/sdblocal/sdblocal/catalog"
)

// fuzzEnv is one API server over a real catalog, shared by every input of
// a fuzz test because opening a catalog and bootstrapping the owner take
// milliseconds. Requests go straight to the handler, without a listener.
type fuzzEnv struct {
	cat     *catalog.Catalog
	creds   auth.Credentials
	handler http.Handler
	// databaseID is a database created before fuzzing, which "{id}" in a
	// path stands for.
	databaseID string
}

func newFuzzEnv(f *testing.F) *fuzzEnv {
	f.Helper()
	dir := f.TempDir()
	cat, err := catalog.Open(dir)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { cat.Close() })
	creds, err := auth.Bootstrap(cat, dir, nil)
	if err != nil {
		f.Fatal(err)
	}
	inst := &fakeInstances{cat: cat, states: map[string]instanceState{}}
	cfg := Config{RateLimit: -1, MaxDatabasesPerProject: -1, Logger: slog.New(slog.DiscardHandler)}
	env := &fuzzEnv{cat: cat, creds: creds, handler: newServer(cfg, cat, auth.NewAuthenticator(cat), inst).routes()}

	resp := env.serve(http.MethodPost, databasesPath, "application/json", []byte(`{"project_id":"`+creds.ProjectID+`","name":"fixture","cpu_min":0,"cpu_max":2}`))
	if resp.Code != http.StatusOK {
		f.Fatalf("create fixture database: %d %s", resp.Code, resp.Body)
	}
	var db databaseJSON
	if err := json.Unmarshal(resp.Body.Bytes(), &db); err != nil {
		f.Fatal(err)
	}
	env.databaseID = db.ID
	return env
}

// serve sends one request as the owner and returns the recorded response,
// or nil when no client could send a request with that path.
func (e *fuzzEnv) serve(method, path, contentType string, body []byte) *httptest.ResponseRecorder {
	req, err := http.NewRequest(method, "http://127.0.0.1"+path, bytes.NewReader(body))
	if err != nil {
		return nil
	}
	req.RemoteAddr = "127.0.0.1:40000"
	req.Header.Set("X-Auth-Token", e.creds.SecretKey)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, req)
	return rec
}

// checkCatalog fails when a stored database has a name or vCPU range that
// the API would have rejected.
func (e *fuzzEnv) checkCatalog(t *testing.T) {
	t.Helper()
	var dbs []catalog.Database
	err := e.cat.View(func(tx *catalog.Tx) error {
		var err error
		dbs, err = tx.Databases(nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, db := range dbs {
		if detail, ok := validateName(db.Name); !ok {
			t.Errorf("stored database %s has name %q: %s", db.ID, db.Name, detail.HelpMessage)
		}
		if details := validateCPURange(db.CPUMin, db.CPUMax); len(details) > 0 {
			t.Errorf("stored database %s has cpu_min %d and cpu_max %d: %s", db.ID, db.CPUMin, db.CPUMax, details[0].HelpMessage)
		}
	}
}

// checkResponse fails on a server error, or on a body that is not the
// JSON object the SDK decodes.
func checkResponse(t *testing.T, method, path string, rec *httptest.ResponseRecorder) {
	t.Helper()
	if rec.Code >= 500 {
		t.Fatalf("%s %q: status %d, body %s", method, path, rec.Code, rec.Body)
	}
	if rec.Code == http.StatusNoContent || rec.Code == http.StatusMovedPermanently || rec.Code == http.StatusTemporaryRedirect {
		return
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %q: status %d with Content-Type %q, want application/json", method, path, rec.Code, ct)
		return
	}
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Errorf("%s %q: status %d with a body that is not a JSON object: %v", method, path, rec.Code, err)
	}
}

func FuzzDecodeBody(f *testing.F) {
	for _, seed := range []struct {
		body        string
		contentType string
	}{
		{`{"project_id":"3f1b9a52-7c3e-4d41-9a55-0c7f1e2d8b64","name":"app","cpu_min":0,"cpu_max":2}`, "application/json"},
		{`{"name":"app"} {"name":"other"}`, "application/json; charset=utf-8"},
		{`{"cpu_min":-1}`, ""},
		{`{"cpu_max":4294967296}`, ""},
		{`{"name":"\xff\xfe"}`, ""},
		{`{"name":"\ud800"}`, ""},
		{`[1,2,3]`, ""},
		{`{"name":`, ""},
		{`{"name":"app"}` + strings.Repeat(" ", 64), ""},
		{`{}`, "text/plain"},
		{`{}`, "application/json; ==="},
		{"", ""},
		{strings.Repeat("[", 10000), ""},
	} {
		f.Add([]byte(seed.body), seed.contentType)
	}
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		req := httptest.NewRequest(http.MethodPost, "http://127.0.0.1/", bytes.NewReader(body))
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		var dst createDatabaseRequest
		err := decodeBody(httptest.NewRecorder(), req, &dst)
		if err == nil {
			return
		}
		var apiErr *apiError
		if !errors.As(err, &apiErr) {
			t.Fatalf("error %v is not an API error", err)
		}
		if apiErr.status < 400 || apiErr.status >= 500 {
			t.Errorf("status %d for a bad body, want a 4xx status", apiErr.status)
		}
	})
}

// FuzzDatabaseRequests sends arbitrary methods, paths and bodies to the
// databases resource as the owner. No request may fail with a server
// error, every response must be JSON, and the catalog must hold only
// databases that the API's rules accept.
func FuzzDatabaseRequests(f *testing.F) {
	env := newFuzzEnv(f)
	for _, seed := range []struct {
		method      byte
		suffix      string
		body        string
		contentType string
	}{
		{0, "", `{"project_id":"{project}","name":"app","cpu_min":1,"cpu_max":3}`, "application/json"},
		{0, "", `{"project_id":"{project}","name":"caf\xc3","cpu_max":1}`, "application/json"},
		{0, "", `{"project_id":"{project}","name":"app","cpu_min":16,"cpu_max":15}`, "application/json"},
		{0, "", `{"project_id":"{project}","name":"` + strings.Repeat("a", 64) + `"}`, "application/json"},
		{0, "", `{"project_id":"{project}","name":"app","from_backup_id":"{id}"}`, "application/json"},
		{0, "", `{"project_id":"{project}","name":"app","version":"15"}`, ""},
		{1, "/{id}", `{"cpu_min":2,"cpu_max":1}`, "application/json"},
		{1, "/{id}", `{"cpu_max":0}`, ""},
		{1, "/{id}", `{"cpu_min":null}`, ""},
		{1, "/{id}", `{"cpu_min":"1"}`, ""},
		{2, "/{id}", "", ""},
		{2, "/..%2f..%2fetc%2fpasswd", "", ""},
		{2, "/%2e%2e/%2e%2e/etc/passwd", "", ""},
		{2, "?page_size=100000&order_by=x", "", ""},
		{2, "?name=%ff&project_id=..", "", ""},
		{3, "/{ID}", "", ""},
		{3, "/00000000-0000-0000-0000-000000000000", "", ""},
	} {
		f.Add(seed.method, seed.suffix, []byte(seed.body), seed.contentType)
	}
	methods := []string{http.MethodPost, http.MethodPatch, http.MethodGet, http.MethodDelete}
	f.Fuzz(func(t *testing.T, methodIndex byte, suffix string, body []byte, contentType string) {
		method := methods[int(methodIndex)%len(methods)]
		replacer := strings.NewReplacer("{id}", env.databaseID, "{ID}", strings.ToUpper(env.databaseID), "{project}", env.creds.ProjectID)
		path := databasesPath + replacer.Replace(suffix)
		body = []byte(replacer.Replace(string(body)))
		if method == http.MethodDelete && strings.Contains(path, env.databaseID) {
			// Deleting the fixture would leave later inputs nothing to
			// update; a DELETE of it is still checked once.
			method = http.MethodGet
		}
		rec := env.serve(method, path, contentType, body)
		if rec == nil {
			return
		}
		checkResponse(t, method, path, rec)
		if method == http.MethodPost && rec.Code == http.StatusOK {
			var db databaseJSON
			if err := json.Unmarshal(rec.Body.Bytes(), &db); err != nil {
				t.Fatal(err)
			}
			if detail, ok := validateName(db.Name); !ok {
				t.Errorf("created database named %q: %s", db.Name, detail.HelpMessage)
			}
		}
		env.checkCatalog(t)
	})
}

// TestAPIPathTraversal sends paths that climb out of the databases
// resource, encoded in the ways a proxy or a client library might leave
// them. None may reach another resource, and a database ID that is not a
// UUID is rejected with invalid_arguments.
func TestAPIPathTraversal(t *testing.T) {
	e := newTestEnv(t)
	db := e.createDatabase("app")
	for _, path := range []string{
		databasesPath + "/..%2f..%2fetc",
		databasesPath + "/..%2f..%2f..%2f..%2fetc%2fpasswd",
		databasesPath + "/%2e%2e%2f%2e%2e%2fcatalog.db",
		databasesPath + "/" + db.ID + "%2f..%2f..%2fbackups",
		databasesPath + "/" + db.ID + "%00",
		databasesPath + "/%ff%fe",
		databasesPath + "/" + strings.Repeat("a", 8192),
	} {
		resp := e.ownerDo(http.MethodGet, path, "")
		if resp.status != http.StatusBadRequest {
			t.Errorf("GET %s: status %d, want 400; body %s", path, resp.status, resp.body)
			continue
		}
		requireRawArgumentError(t, resp, "database_id", "format")
	}

	// Dot segments the client did not encode are removed before routing,
	// because ServeMux redirects to the cleaned path: the request lands on
	// a route, never on a file.
	for _, path := range []string{
		databasesPath + "/../../../../../../etc/passwd",
		databasesPath + "/./" + db.ID,
	} {
		req, err := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Auth-Token", e.creds.SecretKey)
		client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK && !strings.HasSuffix(path, db.ID) {
			t.Errorf("GET %s: status 200", path)
		}
		if resp.StatusCode >= 500 {
			t.Errorf("GET %s: status %d", path, resp.StatusCode)
		}
	}
}

// TestAPIInvalidUTF8Name checks that a name with bytes that are not UTF-8
// is rejected, whether the JSON carries them raw or as a lone surrogate
// escape, and that the message quotes the name in printable form.
func TestAPIInvalidUTF8Name(t *testing.T) {
	e := newTestEnv(t)
	for _, name := range []string{"caf\xc3", "\xff\xfe", `\ud800x`, "a\x00b", "tab\tname"} {
		body := `{"project_id":"` + e.creds.ProjectID + `","name":"` + name + `"}`
		resp := e.ownerDo(http.MethodPost, databasesPath, body)
		if resp.status != http.StatusBadRequest {
			t.Errorf("name %q: status %d, want 400; body %s", name, resp.status, resp.body)
			continue
		}
		if !json.Valid(resp.body) {
			t.Errorf("name %q: response %q is not valid JSON", name, resp.body)
		}
	}
	list := e.ownerDo(http.MethodGet, databasesPath, "")
	if got := list.decode(t)["total_count"]; got != float64(0) {
		t.Errorf("total_count after the rejected creates = %v, want 0", got)
	}
}

// TestAPIOversizedBody sends a create body just over the 1 MiB limit and
// one that declares a larger Content-Length than it sends.
func TestAPIOversizedBody(t *testing.T) {
	e := newTestEnv(t)
	padding := strings.Repeat(" ", maxBodyBytes)
	body := `{"project_id":"` + e.creds.ProjectID + `","name":"big"` + padding + `}`
	resp := e.ownerDo(http.MethodPost, databasesPath, body)
	requireRawArgumentError(t, resp, "body", "constraint")

	req, err := http.NewRequest(http.MethodPost, e.srv.URL+databasesPath, strings.NewReader(`{"name":"short"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = 1000
	req.Header.Set("X-Auth-Token", e.creds.SecretKey)
	req.Header.Set("Content-Type", "application/json")
	if got, err := e.srv.Client().Do(req); err == nil {
		got.Body.Close()
		if got.StatusCode >= 500 || got.StatusCode == http.StatusOK {
			t.Errorf("body shorter than its Content-Length: status %d, want a 4xx or a closed connection", got.StatusCode)
		}
	}
}
