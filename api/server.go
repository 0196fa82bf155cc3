// Package api serves Scaleway's serverless-sqldb/v1alpha1 HTTP API over the
// catalog, with the subset of iam/v1alpha1 (applications, users, API keys,
// policies) and account/v3 (projects) that managing databases needs, plus
// /healthz and the Prometheus /metrics endpoint.
package api

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sdblocal/sdblocal/auth"
	"github.com/sdblocal/sdblocal/autoscale"
	"github.com/sdblocal/sdblocal/catalog"
)

// Instances is the part of the instance manager the API calls
// (autoscale.Manager implements it).
type Instances interface {
	// Provision creates the database's instance in the background. It sets
	// the catalog status to ready when the instance is usable, or to error.
	Provision(db catalog.Database)
	// Remove stops the database's instance and deletes its files in the
	// background, then deletes the catalog record.
	Remove(id string)
	// SetCPU applies changed cpu_min and cpu_max: cpu_min >= 1 wakes the
	// instance and keeps it running, 0 lets it suspend when idle.
	SetCPU(id string, cpuMin, cpuMax uint32)
	// State returns whether the instance runs and its allocated vCPUs.
	State(id string) (started bool, cpuCurrent uint32)
	// Usage returns the database's metered usage, or an error wrapping
	// autoscale.ErrNoInstance when it has no instance.
	Usage(id string) (autoscale.Usage, error)
}

// Config holds the API server's settings.
type Config struct {
	// Regions the API accepts in its paths. Default: fr-par.
	Regions []string
	// PGHost and PGPort are the proxy's address, written into each
	// database's endpoint URL. Defaults: localhost and 5432.
	PGHost string
	PGPort int
	// RateLimit is the number of API requests each API key may send per
	// second. Default: 50, the limit api.scaleway.com advertises. A negative
	// value disables the limit.
	RateLimit int
	// Logger receives one line per failed request. Default: slog.Default().
	Logger *slog.Logger
	// Gatherer is served on /metrics. Default: prometheus.DefaultGatherer.
	Gatherer prometheus.Gatherer
	// Registerer receives sdblocal_api_requests_total. Default: nil, which
	// counts requests without exporting them, so that several servers can
	// run in one test process.
	Registerer prometheus.Registerer
	// MaxDatabasesPerProject is the number of databases a project may hold,
	// counting those being deleted. A create beyond it fails with
	// quotas_exceeded. Default: 100. A negative value disables the limit.
	MaxDatabasesPerProject int
	// Backups takes, exports and restores backups. Default: nil, which
	// serves the backup records the catalog holds but rejects taking,
	// exporting, downloading and restoring backups, and creating a
	// database from one.
	Backups Backups
}

// withDefaults returns cfg with every unset field at its default.
func (cfg Config) withDefaults() Config {
	if len(cfg.Regions) == 0 {
		cfg.Regions = []string{"fr-par"}
	}
	if cfg.PGHost == "" {
		cfg.PGHost = "localhost"
	}
	if cfg.PGPort == 0 {
		cfg.PGPort = 5432
	}
	if cfg.RateLimit == 0 {
		cfg.RateLimit = defaultRateLimit
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Gatherer == nil {
		cfg.Gatherer = prometheus.DefaultGatherer
	}
	if cfg.MaxDatabasesPerProject == 0 {
		cfg.MaxDatabasesPerProject = defaultMaxDatabasesPerProject
	}
	return cfg
}

// apiPrefix is the path prefix of every serverless-sqldb call.
const apiPrefix = "/serverless-sqldb/v1alpha1/regions/{region}"

// defaultMaxDatabasesPerProject is sdblocal's choice: Scaleway does not
// publish its serverless-sqldb quota per project.
const defaultMaxDatabasesPerProject = 100

type server struct {
	cfg     Config
	cat     *catalog.Catalog
	authn   *auth.Authenticator
	inst    Instances
	limiter *rateLimiter
	log     *slog.Logger
}

// New returns the HTTP handler of the API. It serves /healthz and /metrics
// without authentication and every serverless-sqldb call with an
// X-Auth-Token secret key.
func New(cfg Config, cat *catalog.Catalog, authn *auth.Authenticator, inst Instances) http.Handler {
	s := newServer(cfg, cat, authn, inst)
	return newRequestMetrics(s.cfg.Registerer).instrument(s.routes())
}

func newServer(cfg Config, cat *catalog.Catalog, authn *auth.Authenticator, inst Instances) *server {
	cfg = cfg.withDefaults()
	s := &server{cfg: cfg, cat: cat, authn: authn, inst: inst, log: cfg.Logger}
	if cfg.RateLimit > 0 {
		s.limiter = newRateLimiter(cfg.RateLimit)
	}
	return s
}

func (s *server) routes() *http.ServeMux {
	mux := http.NewServeMux()

	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Gatherer, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(s.log.Handler(), slog.LevelError),
		ErrorHandling: promhttp.ContinueOnError,
	}))
	mux.HandleFunc("GET /metadata", serveMetadata)

	databases := apiPrefix + "/databases"
	database := databases + "/{database_id}"
	s.handleResource(mux, databases, map[string]apiHandler{
		http.MethodGet:  s.listDatabases,
		http.MethodPost: s.createDatabase,
	})
	s.handleResource(mux, database, map[string]apiHandler{
		http.MethodGet:    s.getDatabase,
		http.MethodPatch:  s.updateDatabase,
		http.MethodDelete: s.deleteDatabase,
	})
	s.backupRoutes(mux)
	s.usageRoutes(mux)
	s.handleResource(mux, apiPrefix+"/versions", map[string]apiHandler{
		http.MethodGet: s.listVersions,
	})
	s.iamRoutes(mux)
	s.accountRoutes(mux)

	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, "", genericError(http.StatusNotFound, "unknown_route",
			fmt.Sprintf("no API route matches %s %s: sdblocal serves serverless-sqldb v1alpha1, and the applications, users, api-keys, policies, rules and permission-sets of iam v1alpha1 and the projects of account v3", r.Method, r.URL.Path)))
	})
	return mux
}

// handleResource registers one handler per method on path, and a pattern
// without a method that rejects every other method with a JSON 405. The
// method patterns are more specific, so ServeMux prefers them.
func (s *server) handleResource(mux *http.ServeMux, path string, handlers map[string]apiHandler) {
	regional := strings.Contains(path, "{region}")
	var allowed []string
	for method, handler := range handlers {
		mux.Handle(method+" "+path, s.serveAPI(handler, regional))
		allowed = append(allowed, method)
		if method == http.MethodGet {
			allowed = append(allowed, http.MethodHead)
		}
	}
	slices.Sort(allowed)
	allow := strings.Join(allowed, ", ")
	mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		s.writeError(w, r, "", genericError(http.StatusMethodNotAllowed, "method_not_allowed",
			fmt.Sprintf("method %s is not allowed on %s: use %s", r.Method, r.URL.Path, allow)))
	})
}

// serveMetadata serves GET /metadata. The SDK requests it after every call
// to build resource SRNs and caches it only on success, so without this
// route each call would cost a second, failing request. The values are
// those of api.scaleway.com.
func serveMetadata(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"domain": "scw.eu", "partition": "scw", "platform": "external"})
}

// apiCall is the context of one authenticated API call: the caller and the
// region from the path, empty for the global IAM and Account calls.
type apiCall struct {
	identity auth.Identity
	region   string
}

func (c *apiCall) principal() catalog.Principal { return c.identity.Principal }

// apiHandler handles one authenticated API call. It returns the response
// body, sent with status 200, or noContent for a 204, or an error: an
// *apiError is sent as it is, any other error becomes a 500.
type apiHandler func(w http.ResponseWriter, r *http.Request, call *apiCall) (any, error)

// noContent is the body of a successful IAM or Account delete, which the
// real API returns as a 204 with an application/json Content-Type and no
// body.
type noContent struct{}

// serveAPI wraps an API handler with authentication, rate limiting and, for
// a regional path, the region check, in that order, so an unauthenticated
// client learns nothing about the regions.
func (s *server) serveAPI(handler apiHandler, regional bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		call := &apiCall{}
		var body any
		err := s.prepareCall(w, r, call, regional)
		if err == nil {
			body, err = handler(w, r, call)
		}
		if err != nil {
			s.writeError(w, r, call.identity.Principal.ID, err)
			return
		}
		if _, ok := body.(noContent); ok {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		writeJSON(w, http.StatusOK, body)
	})
}

func (s *server) prepareCall(w http.ResponseWriter, r *http.Request, call *apiCall, regional bool) error {
	identity, err := s.authenticate(r)
	if err != nil {
		return err
	}
	call.identity = identity

	if s.limiter != nil {
		if err := s.limiter.limitRequest(w, identity.AccessKey); err != nil {
			return err
		}
	}

	if !regional {
		return nil
	}
	region := r.PathValue("region")
	if !slices.Contains(s.cfg.Regions, region) {
		return invalidArgument("region", reasonConstraint,
			fmt.Sprintf("region %q is not served: use one of %s", region, strings.Join(s.cfg.Regions, ", ")))
	}
	call.region = region
	return nil
}

// authenticate resolves the X-Auth-Token header to the caller's identity.
// The token is a secret key and is never logged.
func (s *server) authenticate(r *http.Request) (auth.Identity, error) {
	token := r.Header.Get("X-Auth-Token")
	if token == "" {
		return auth.Identity{}, deniedAuthentication(authReasonNotFound)
	}
	if !auth.ValidSecretKey(token) {
		return auth.Identity{}, deniedAuthentication(authReasonInvalidArgument)
	}
	identity, err := s.authn.AuthenticateToken(token)
	switch {
	case errors.Is(err, auth.ErrExpiredKey):
		return auth.Identity{}, deniedAuthentication(authReasonExpired)
	case errors.Is(err, auth.ErrInvalidCredentials):
		return auth.Identity{}, deniedAuthentication(authReasonNotFound)
	case err != nil:
		return auth.Identity{}, internalError(fmt.Errorf("authenticate API request: %w", err))
	}
	return identity, nil
}
