package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	sdb "github.com/scaleway/scaleway-sdk-go/api/serverless_sqldb/v1alpha1"
	"github.com/scaleway/scaleway-sdk-go/scw"

	"github.com/sdblocal/sdblocal/auth"
	"github.com/sdblocal/sdblocal/autoscale"
	"github.com/sdblocal/sdblocal/catalog"
)

// fakeInstances replaces the instance manager at the Instances boundary.
// Provision marks the database ready at once, and Remove only records the
// call until finishRemove deletes the record, so tests can look at the
// deleting status in between.
type fakeInstances struct {
	cat *catalog.Catalog

	mu          sync.Mutex
	provisioned []catalog.Database
	removed     []string
	cpuChanges  []string
	states      map[string]instanceState
	usage       map[string]autoscale.Usage
}

type instanceState struct {
	started    bool
	cpuCurrent uint32
}

func (f *fakeInstances) Provision(db catalog.Database) {
	f.mu.Lock()
	f.provisioned = append(f.provisioned, db)
	f.mu.Unlock()
	if err := f.cat.SetDatabaseStatus(db.ID, catalog.StatusReady, ""); err != nil {
		panic(err)
	}
}

func (f *fakeInstances) Remove(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removed = append(f.removed, id)
}

func (f *fakeInstances) SetCPU(id string, cpuMin, cpuMax uint32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cpuChanges = append(f.cpuChanges, fmt.Sprintf("%s %d-%d", id, cpuMin, cpuMax))
}

func (f *fakeInstances) State(id string) (bool, uint32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	state := f.states[id]
	return state.started, state.cpuCurrent
}

// Usage returns the usage set by setUsage, or ErrNoInstance.
func (f *fakeInstances) Usage(id string) (autoscale.Usage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	usage, ok := f.usage[id]
	if !ok {
		return autoscale.Usage{}, fmt.Errorf("database %s: %w", id, autoscale.ErrNoInstance)
	}
	return usage, nil
}

func (f *fakeInstances) setUsage(id string, usage autoscale.Usage) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.usage == nil {
		f.usage = map[string]autoscale.Usage{}
	}
	f.usage[id] = usage
}

func (f *fakeInstances) setState(id string, started bool, cpuCurrent uint32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.states[id] = instanceState{started: started, cpuCurrent: cpuCurrent}
}

func (f *fakeInstances) provisionedIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []string
	for _, db := range f.provisioned {
		ids = append(ids, db.ID)
	}
	return ids
}

func (f *fakeInstances) removedIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.removed...)
}

// finishRemove deletes the record, as the manager does once the instance
// is gone.
func (f *fakeInstances) finishRemove(t *testing.T, id string) {
	t.Helper()
	err := f.cat.Update(func(tx *catalog.Tx) error { return tx.DeleteDatabase(id) })
	if err != nil {
		t.Fatalf("delete database record %s: %v", id, err)
	}
}

// lockedBuffer is a bytes.Buffer safe for the server's goroutines to log into.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testClock is the authenticator's clock in tests: the real time moved
// forward by an offset the test controls, so key expiry needs no sleep.
type testClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

// advance moves the clock forward by d.
func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// testEnv is a real catalog with bootstrapped owner credentials, served by
// the API on a loopback httptest server.
type testEnv struct {
	t      *testing.T
	cat    *catalog.Catalog
	creds  auth.Credentials
	inst   *fakeInstances
	srv    *httptest.Server
	logs   *lockedBuffer
	server *server
	clock  *testClock
	// api is an SDK client acting as the organization owner.
	api *sdb.API
}

// newTestEnv starts the API. configure, when given, changes the Config
// before the server is built.
func newTestEnv(t *testing.T, configure ...func(*Config)) *testEnv {
	t.Helper()
	dir := t.TempDir()
	cat, err := catalog.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close() })
	creds, err := auth.Bootstrap(cat, dir, nil)
	if err != nil {
		t.Fatal(err)
	}

	logs := &lockedBuffer{}
	cfg := Config{
		PGHost:    "127.0.0.1",
		PGPort:    15432,
		RateLimit: -1,
		Logger:    slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, fn := range configure {
		fn(&cfg)
	}
	inst := &fakeInstances{cat: cat, states: map[string]instanceState{}}
	clock := &testClock{}
	s := newServer(cfg, cat, auth.NewAuthenticatorWithClock(cat, clock.now), inst)
	srv := httptest.NewServer(s.routes())
	t.Cleanup(srv.Close)

	env := &testEnv{t: t, cat: cat, creds: creds, inst: inst, srv: srv, logs: logs, server: s, clock: clock}
	env.api = env.sdkClient(creds.AccessKey, creds.SecretKey, creds.ProjectID)
	return env
}

// sdkClient returns an SDK client for the given key whose default project
// is projectID.
func (e *testEnv) sdkClient(accessKey, secretKey, projectID string) *sdb.API {
	e.t.Helper()
	return sdb.NewAPI(e.scwClient(accessKey, secretKey, projectID, ""))
}

// scwClient returns a generic SDK client for the given key, with the given
// default project and default organization when they are not empty.
func (e *testEnv) scwClient(accessKey, secretKey, projectID, organizationID string) *scw.Client {
	e.t.Helper()
	options := []scw.ClientOption{
		scw.WithAPIURL(e.srv.URL),
		scw.WithAuth(accessKey, secretKey),
		scw.WithDefaultRegion(scw.RegionFrPar),
		scw.WithHTTPClient(&http.Client{Timeout: 10 * time.Second}),
	}
	if projectID != "" {
		options = append(options, scw.WithDefaultProjectID(projectID))
	}
	if organizationID != "" {
		options = append(options, scw.WithDefaultOrganizationID(organizationID))
	}
	client, err := scw.NewClient(options...)
	if err != nil {
		e.t.Fatal(err)
	}
	return client
}

// ownerClient returns a generic SDK client acting as the organization owner,
// with the default project and organization set as `sdblocal env` sets them.
func (e *testEnv) ownerClient() *scw.Client {
	e.t.Helper()
	return e.scwClient(e.creds.AccessKey, e.creds.SecretKey, e.creds.ProjectID, e.creds.OrganizationID)
}

// addProject stores a new project in the organization and returns its ID.
func (e *testEnv) addProject(organizationID string) string {
	e.t.Helper()
	id := uuid.NewString()
	err := e.cat.Update(func(tx *catalog.Tx) error {
		return tx.PutProject(catalog.Project{ID: id, OrganizationID: organizationID, Name: "p-" + id[:8], CreatedAt: time.Now().UTC()})
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

// addOrganization stores a new organization with one project and returns
// both IDs.
func (e *testEnv) addOrganization() (organizationID, projectID string) {
	e.t.Helper()
	organizationID = uuid.NewString()
	err := e.cat.Update(func(tx *catalog.Tx) error {
		return tx.PutOrganization(catalog.Organization{ID: organizationID, Name: "other", CreatedAt: time.Now().UTC()})
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return organizationID, e.addProject(organizationID)
}

// member is a non-owner principal with one API key.
type member struct {
	principalID string
	accessKey   string
	secretKey   string
}

// addMember stores a non-owner principal of the organization with one API
// key expiring at expiresAt (never when nil) and a policy made of rules.
func (e *testEnv) addMember(organizationID string, expiresAt *time.Time, rules ...catalog.Rule) member {
	e.t.Helper()
	accessKey, err := auth.NewAccessKey()
	if err != nil {
		e.t.Fatal(err)
	}
	m := member{principalID: uuid.NewString(), accessKey: accessKey, secretKey: auth.NewSecretKey()}
	verifier, err := auth.NewVerifier(m.secretKey)
	if err != nil {
		e.t.Fatal(err)
	}
	now := time.Now().UTC()
	err = e.cat.Update(func(tx *catalog.Tx) error {
		err := tx.PutPrincipal(catalog.Principal{ID: m.principalID, OrganizationID: organizationID, Kind: catalog.PrincipalApplication, Name: "app", CreatedAt: now})
		if err != nil {
			return err
		}
		err = tx.PutAPIKey(catalog.APIKey{
			AccessKey: accessKey, PrincipalID: m.principalID, OrganizationID: organizationID,
			TokenHash: auth.TokenHash(m.secretKey), Verifier: verifier, CreatedAt: now, ExpiresAt: expiresAt,
		})
		if err != nil {
			return err
		}
		if len(rules) == 0 {
			return nil
		}
		return tx.PutPolicy(catalog.Policy{ID: uuid.NewString(), Name: "test", OrganizationID: organizationID, PrincipalID: m.principalID, Rules: rules, CreatedAt: now})
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

// createDatabase creates a database as the owner through the SDK.
func (e *testEnv) createDatabase(name string) *sdb.Database {
	e.t.Helper()
	db, err := e.api.CreateDatabase(&sdb.CreateDatabaseRequest{Name: name, CPUMin: 0, CPUMax: 4})
	if err != nil {
		e.t.Fatalf("create database %s: %v", name, err)
	}
	return db
}

// rawResponse is an HTTP response read in full.
type rawResponse struct {
	status int
	header http.Header
	body   []byte
}

// decode returns the body as a generic JSON object.
func (r rawResponse) decode(t *testing.T) map[string]any {
	t.Helper()
	var out map[string]any
	if err := json.Unmarshal(r.body, &out); err != nil {
		t.Fatalf("response body %q is not a JSON object: %v", r.body, err)
	}
	return out
}

// do sends a raw request. token is sent as X-Auth-Token when not empty,
// and contentType as Content-Type when not empty.
func (e *testEnv) do(method, path, token, contentType string, body io.Reader) rawResponse {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("X-Auth-Token", token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return rawResponse{status: resp.StatusCode, header: resp.Header, body: raw}
}

// ownerDo sends a raw request as the owner with a JSON body.
func (e *testEnv) ownerDo(method, path, body string) rawResponse {
	e.t.Helper()
	var reader io.Reader
	contentType := ""
	if body != "" {
		reader = strings.NewReader(body)
		contentType = "application/json"
	}
	return e.do(method, path, e.creds.SecretKey, contentType, reader)
}

const databasesPath = "/serverless-sqldb/v1alpha1/regions/fr-par/databases"

// requireArgumentError asserts that err is an invalid_arguments error with
// exactly one detail, and returns that detail.
func requireArgumentError(t *testing.T, err error) scw.InvalidArgumentsErrorDetail {
	t.Helper()
	invalid, ok := err.(*scw.InvalidArgumentsError)
	if !ok {
		t.Fatalf("error = %T %v, want *scw.InvalidArgumentsError", err, err)
	}
	if len(invalid.Details) != 1 {
		t.Fatalf("details = %+v, want exactly one", invalid.Details)
	}
	return invalid.Details[0]
}

// requireRawArgumentError asserts a 400 invalid_arguments response whose
// only detail names the argument with the reason.
func requireRawArgumentError(t *testing.T, resp rawResponse, argument, reason string) {
	t.Helper()
	if resp.status != http.StatusBadRequest {
		t.Fatalf("status = %d, want 400; body %s", resp.status, resp.body)
	}
	if ct := resp.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var body struct {
		Type    string                            `json:"type"`
		Message string                            `json:"message"`
		Details []scw.InvalidArgumentsErrorDetail `json:"details"`
	}
	if err := json.Unmarshal(resp.body, &body); err != nil {
		t.Fatalf("body %s: %v", resp.body, err)
	}
	if body.Type != "invalid_arguments" || body.Message != "invalid argument(s)" {
		t.Errorf("type, message = %q, %q; want invalid_arguments, invalid argument(s)", body.Type, body.Message)
	}
	if len(body.Details) != 1 {
		t.Fatalf("details = %+v, want exactly one", body.Details)
	}
	if body.Details[0].ArgumentName != argument || body.Details[0].Reason != reason {
		t.Errorf("detail = %+v, want argument %q reason %q", body.Details[0], argument, reason)
	}
	if body.Details[0].HelpMessage == "" {
		t.Errorf("detail %+v has no help message", body.Details[0])
	}
}
