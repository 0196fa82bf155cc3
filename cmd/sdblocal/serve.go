package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/sdblocal/sdblocal/api"
	"github.com/sdblocal/sdblocal/auth"
	"github.com/sdblocal/sdblocal/autoscale"
	"github.com/sdblocal/sdblocal/backup"
	"github.com/sdblocal/sdblocal/catalog"
	"github.com/sdblocal/sdblocal/proxy"
)

// serveOptions are the flags of `sdblocal serve`.
type serveOptions struct {
	dataDir     string
	apiAddr     string
	pgAddr      string
	idleTimeout time.Duration
	pgDir       string
	user        string
	handshake   time.Duration
	logLevel    string
	logFormat   string

	tlsMode      string
	tlsCert      string
	tlsKey       string
	sniSuffix    string
	routing      string
	passwordAuth string
	maxClients   int

	scale           autoscale.ScaleConfig
	storageInterval time.Duration
	cpuLimits       bool
	clientLimit     int
	coldStartDelay  string
	shutdownTimeout time.Duration

	poolMode         string
	poolSize         int
	queryWaitTimeout time.Duration
	queryWaitNotice  time.Duration
	idleInTxTimeout  time.Duration

	backups backupOptions
}

// backupOptions are the flags of the backup service.
type backupOptions struct {
	enabled         bool
	pgDump          string
	pgRestore       string
	interval        time.Duration
	timeOfDay       string
	retention       time.Duration
	lockWaitTimeout time.Duration
	exportLifetime  time.Duration
}

func newServeCommand() *cobra.Command {
	var opts serveOptions
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the API, the PostgreSQL proxy and the database instances",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return serve(opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.dataDir, "data-dir", defaultDataDir(), "directory for the catalog, credentials, certificates and instances")
	f.StringVar(&opts.apiAddr, "api-addr", defaultAPIAddr, "host:port of the HTTP API, /metrics and /healthz")
	f.StringVar(&opts.pgAddr, "pg-addr", defaultPGAddr, "host:port of the PostgreSQL-wire proxy")
	f.DurationVar(&opts.idleTimeout, "idle-timeout", 5*time.Minute, "time without a query after which an instance is suspended (Go duration, e.g. 30s, 5m)")
	f.StringVar(&opts.pgDir, "pg-dir", "", "PostgreSQL 14 tree with bin/, lib/ and share/ (default "+autoscale.DefaultPGDir()+")")
	f.StringVar(&opts.user, "user", "postgres", "unprivileged user to run as when started as root")
	f.DurationVar(&opts.handshake, "handshake-timeout", 15*time.Second, "time a client has to send its startup packet and password (Go duration)")
	f.StringVar(&opts.tlsMode, "tls", string(proxy.TLSRequired), "TLS on the PostgreSQL port: required (clients without TLS are rejected, as in the real service), optional, or off")
	f.StringVar(&opts.tlsCert, "tls-cert", "", "PEM certificate chain for the PostgreSQL port, with --tls-key (default: a certificate from a CA generated in <data-dir>/tls)")
	f.StringVar(&opts.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	f.StringVar(&opts.sniSuffix, "sni-suffix", proxy.DefaultSNISuffix, "domain of the database host names: a client connecting to <database-id>.<suffix> with TLS SNI is routed to that database")
	f.StringVar(&opts.routing, "routing", string(proxy.RoutingRelaxed), "routing of clients that send neither SNI nor options=databaseid=<id>: relaxed (by database name) or strict (rejected, as in the real service)")
	f.StringVar(&opts.passwordAuth, "password-auth", string(proxy.PasswordSCRAM), "password exchange: scram (SCRAM-SHA-256, with channel binding over TLS) or cleartext (over TLS only; clients without TLS still get SCRAM)")
	f.IntVar(&opts.maxClients, "max-clients", 1000, "maximum client connections to the PostgreSQL port, including those still logging in; further clients get SQLSTATE 53300")
	scale := autoscale.DefaultScaleConfig()
	f.DurationVar(&opts.scale.Interval, "scale-interval", scale.Interval, "how often each instance's CPU usage is sampled for autoscaling and metering (Go duration)")
	f.DurationVar(&opts.scale.Window, "scale-window", scale.Window, "how long CPU usage must stay above --scale-up-threshold or below --scale-down-threshold before the allocation changes (Go duration)")
	f.DurationVar(&opts.scale.Cooldown, "scale-cooldown", scale.Cooldown, "least time between two changes of an instance's vCPU allocation (Go duration)")
	f.Float64Var(&opts.scale.UpThreshold, "scale-up-threshold", scale.UpThreshold, "fraction of the allocated vCPUs above which CPU usage counts as high")
	f.Float64Var(&opts.scale.DownThreshold, "scale-down-threshold", scale.DownThreshold, "fraction of the allocated vCPUs below which CPU usage counts as low")
	f.Float64Var(&opts.scale.Step, "scale-step", scale.Step, "fraction of the allocation one step adds (rounded up to a whole vCPU) or removes (rounded down)")
	f.DurationVar(&opts.storageInterval, "storage-sample-interval", time.Minute, "how often each database's data directory is measured for storage metering (Go duration)")
	f.BoolVar(&opts.cpuLimits, "cpu-limits", true, "cap each instance's CPU at its allocation with a cgroup quota; needs root at start and the cgroup cpu controller, and without them sdblocal only measures CPU usage")
	f.StringVar(&opts.coldStartDelay, "cold-start-delay", "0", "extra wait added to every wake, fixed (2s) or drawn uniformly from a range (1s-4s), at most "+autoscale.MaxColdStartDelay.String()+", to reproduce the real service's cold starts; a database's cold_start_delay overrides it")
	f.DurationVar(&opts.shutdownTimeout, "shutdown-timeout", 30*time.Second, "on SIGTERM or SIGINT, how long client transactions may run before their sessions are closed; a second signal closes them at once (Go duration, 0 closes at once)")
	f.IntVar(&opts.clientLimit, "database-client-limit", 0, "client connections allowed per database; 0 means 100 + 60 × cpu_max, capped at 1000, the real service's maximum; in --pool-mode session at most 90, as each client holds its own backend")
	f.StringVar(&opts.poolMode, "pool-mode", string(proxy.PoolTransaction), "when a client's backend connection goes back to its database's pool: transaction (after each transaction, as in the real service) or session (when the client disconnects, then reset with DISCARD ALL)")
	f.IntVar(&opts.poolSize, "pool-size", 0, "backend connections per database; 0 means 10 × max(cpu_current, 1) in transaction mode and 90 in session mode; at most 90, the instance's max_connections (100) minus 10 reserved")
	f.DurationVar(&opts.queryWaitTimeout, "query-wait-timeout", 120*time.Second, "how long a client waits for a backend connection when its database's pool is full; the request then fails with SQLSTATE 53300 and the session continues (Go duration)")
	f.DurationVar(&opts.queryWaitNotice, "query-wait-notice", 5*time.Second, "how long a client waits for a backend connection before it gets a NOTICE saying so (Go duration)")
	f.DurationVar(&opts.idleInTxTimeout, "idle-in-transaction-timeout", time.Hour, "disconnect, with SQLSTATE 25P03, a client idle inside a transaction for longer, as it holds a backend connection and keeps its instance awake; 0 turns it off (Go duration)")
	addBackupFlags(f, &opts.backups)
	f.StringVar(&opts.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.StringVar(&opts.logFormat, "log-format", "text", "log format: text or json")
	bindEnv(cmd)
	return cmd
}

// addressesFileName records the listeners of the running server, so that
// `sdblocal env` prints the right URL and port.
const addressesFileName = "addresses.json"

type addresses struct {
	API string `json:"api"`
	PG  string `json:"pg"`
}

func serve(opts serveOptions) error {
	logger, err := newLogger(opts.logLevel, opts.logFormat)
	if err != nil {
		return err
	}
	if opts.idleTimeout <= 0 {
		return fmt.Errorf("invalid --idle-timeout %s: must be positive", opts.idleTimeout)
	}
	if opts.handshake <= 0 {
		return fmt.Errorf("invalid --handshake-timeout %s: must be positive", opts.handshake)
	}
	if err := opts.scale.Validate(); err != nil {
		return fmt.Errorf("invalid --scale-* flags: %w", err)
	}
	if opts.storageInterval <= 0 {
		return fmt.Errorf("invalid --storage-sample-interval %s: must be positive", opts.storageInterval)
	}
	if opts.shutdownTimeout < 0 {
		return fmt.Errorf("invalid --shutdown-timeout %s: must be 0 or positive", opts.shutdownTimeout)
	}
	if opts.clientLimit < 0 {
		return fmt.Errorf("invalid --database-client-limit %d: must be 0 (the formula) or positive", opts.clientLimit)
	}
	coldStartDelay, err := autoscale.ParseColdStartDelay(opts.coldStartDelay)
	if err != nil {
		return fmt.Errorf("invalid --cold-start-delay: %w", err)
	}
	if err := checkProxyFlags(opts); err != nil {
		return err
	}
	backupConfig, err := backupConfigFromFlags(opts.backups)
	if err != nil {
		return err
	}
	pgDir := autoscale.ResolvePGDir(opts.pgDir)
	if err := autoscale.CheckPGDir(pgDir); err != nil {
		return err
	}
	dataDir, err := filepath.Abs(opts.dataDir)
	if err != nil {
		return fmt.Errorf("invalid --data-dir %q: %w", opts.dataDir, err)
	}

	// As root: prepare the data directory for the service user, open the
	// catalog and bind the listeners, then drop privileges for good.
	// PostgreSQL refuses to run as root.
	asRoot := os.Geteuid() == 0
	var serviceUser autoscale.ServiceUser
	if asRoot {
		serviceUser, err = autoscale.LookupServiceUser(opts.user)
		if err != nil {
			return err
		}
		if err := autoscale.PrepareDir(dataDir, serviceUser); err != nil {
			return err
		}
	} else if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("create --data-dir %s: %w", dataDir, err)
	}

	cat, err := catalog.Open(dataDir)
	if err != nil {
		return err
	}
	defer cat.Close()
	if asRoot {
		if err := os.Chown(cat.Path(), serviceUser.UID, serviceUser.GID); err != nil {
			return fmt.Errorf("chown catalog: %w", err)
		}
	}

	apiListener, err := listen(opts.apiAddr, "--api-addr")
	if err != nil {
		return err
	}
	pgListener, err := listen(opts.pgAddr, "--pg-addr")
	if err != nil {
		apiListener.Close()
		return err
	}

	// Cgroups for CPU limits must be created while still root.
	var cgroups *autoscale.CPUCgroups
	cgroupErr := errors.New("disabled by --cpu-limits=false")
	if opts.cpuLimits {
		var owner *autoscale.ServiceUser
		if asRoot {
			owner = &serviceUser
		}
		cgroups, cgroupErr = autoscale.SetUpCPUCgroups(owner)
	}

	if asRoot {
		if err := autoscale.DropPrivileges(serviceUser); err != nil {
			return err
		}
		logger.Info("dropped root privileges", "user", serviceUser.Name, "uid", serviceUser.UID, "gid", serviceUser.GID)
		if err := unix.Access(filepath.Join(pgDir, "bin", "postgres"), unix.X_OK); err != nil {
			return fmt.Errorf("user %s cannot run %s: %w: every parent directory must be traversable by that user; use --pg-dir under /var/cache or /opt", serviceUser.Name, filepath.Join(pgDir, "bin", "postgres"), err)
		}
	}

	cgroups = checkCPULimits(logger, cgroups, cgroupErr)

	// embedded-postgres writes a log file to the temporary directory at
	// each provisioning and never removes it. A temporary directory inside
	// the data directory belongs to the service user and is emptied here.
	tmpDir := filepath.Join(dataDir, "tmp")
	if err := os.RemoveAll(tmpDir); err != nil {
		return fmt.Errorf("clean %s: %w", tmpDir, err)
	}
	if err := os.Mkdir(tmpDir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", tmpDir, err)
	}
	os.Setenv("TMPDIR", tmpDir)

	fromEnv, err := auth.CredentialsFromEnv(os.Getenv)
	if err != nil {
		return err
	}
	creds, err := auth.Bootstrap(cat, dataDir, fromEnv)
	if err != nil {
		return err
	}
	tlsConfig, tlsFiles, err := loadTLS(opts, dataDir, logger)
	if err != nil {
		return err
	}
	mockAuthSecret, err := proxy.EnsureMockAuthSecret(dataDir)
	if err != nil {
		return err
	}

	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	manager := autoscale.NewManager(autoscale.Config{
		DataDir:               dataDir,
		PGDir:                 pgDir,
		IdleTimeout:           opts.idleTimeout,
		Scale:                 opts.scale,
		Cgroups:               cgroups,
		StorageSampleInterval: opts.storageInterval,
		ClientLimit:           opts.clientLimit,
		ColdStartDelay:        coldStartDelay,
		Logger:                logger,
		Registerer:            registry,
	}, cat)
	var backups *backup.Service
	if opts.backups.enabled {
		backupConfig.DataDir = dataDir
		backupConfig.Logger = logger
		backupConfig.Registerer = registry
		if backups, err = backup.New(backupConfig, cat, manager); err != nil {
			return err
		}
		// Before the manager starts, so that a database being created from
		// a backup when sdblocal stopped is not provisioned empty.
		if err := backups.Recover(); err != nil {
			return err
		}
	}
	if err := manager.Start(); err != nil {
		return err
	}
	// Close runs once: here on an early return, or in the shutdown below.
	defer manager.Close()
	if backups != nil {
		backups.Start()
		// Deferred after manager.Close, so it runs first: dumps and
		// restores stop before the instances do.
		defer backups.Close()
	}

	authn := auth.NewAuthenticator(cat)
	pgProxy, err := proxy.NewServer(proxy.Config{
		TLS:              tlsConfig,
		TLSMode:          proxy.TLSMode(opts.tlsMode),
		SNISuffix:        opts.sniSuffix,
		Routing:          proxy.RoutingMode(opts.routing),
		PasswordAuth:     proxy.PasswordAuth(opts.passwordAuth),
		MockAuthSecret:   mockAuthSecret,
		HandshakeTimeout: opts.handshake,
		MaxClients:       opts.maxClients,
		ClientLimit:      manager.ClientLimit,
		Logger:           logger,
		Registerer:       registry,

		PoolMode:                 proxy.PoolMode(opts.poolMode),
		PoolSize:                 opts.poolSize,
		QueryWaitTimeout:         opts.queryWaitTimeout,
		QueryWaitNotice:          opts.queryWaitNotice,
		IdleInTransactionTimeout: opts.idleInTxTimeout,
	}, cat, authn, manager)
	if err != nil {
		return err
	}
	pgHost, pgPort := splitAddr(pgListener.Addr())
	apiConfig := api.Config{PGHost: pgHost, PGPort: pgPort, Logger: logger, Gatherer: registry, Registerer: registry}
	if backups != nil {
		apiConfig.Backups = backups
	}
	handler := api.New(apiConfig, cat, authn, manager)
	// ReadTimeout bounds a client that sends its body slowly or never;
	// request bodies are at most 1 MiB.
	httpServer := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}

	// The first SIGINT or SIGTERM starts a graceful shutdown and a second
	// one cuts its wait short; the channel keeps the second until then.
	// They are caught before the listeners serve, because a client that
	// has seen the server respond may signal it at once.
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(signals)

	errs := make(chan error, 2)
	go func() { errs <- pgProxy.Serve(pgListener) }()
	go func() { errs <- httpServer.Serve(apiListener) }()

	addrs := addresses{API: apiListener.Addr().String(), PG: pgListener.Addr().String()}
	if err := writeAddresses(dataDir, addrs); err != nil {
		logger.Warn("could not record listener addresses", "error", err)
	}
	logger.Info("sdblocal ready", "api", "http://"+addrs.API, "pg", addrs.PG, "data_dir", dataDir, "pg_dir", pgDir, "idle_timeout", opts.idleTimeout, "cold_start_delay", coldStartDelay.String())
	printWelcome(dataDir, addrs, creds, opts, tlsFiles)

	select {
	case sig := <-signals:
		logger.Info("shutting down", "signal", sig.String(), "shutdown_timeout", opts.shutdownTimeout)
	case err := <-errs:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("listener failed; shutting down", "error", err)
		}
	}
	drainClients(logger, signals, opts.shutdownTimeout, httpServer, pgProxy)
	if backups != nil {
		backups.Close()
	}
	manager.Close()
	_ = os.Remove(filepath.Join(dataDir, addressesFileName))
	logger.Info("stopped")
	return nil
}

// drainClients stops the API and the proxy from accepting connections,
// gives API requests and the clients' open transactions up to timeout to
// finish, and then closes every client session. A signal on signals ends
// the wait at once.
func drainClients(logger *slog.Logger, signals <-chan os.Signal, timeout time.Duration, httpServer *http.Server, pgProxy *proxy.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	go func() {
		select {
		case sig := <-signals:
			logger.Warn("second signal: closing client sessions without waiting for their transactions", "signal", sig.String())
			cancel()
		case <-ctx.Done():
		}
	}()

	var wg sync.WaitGroup
	wg.Go(func() {
		if err := httpServer.Shutdown(ctx); err != nil {
			_ = httpServer.Close()
		}
	})
	started := time.Now()
	if err := pgProxy.Shutdown(ctx); err == nil {
		logger.Info("client transactions finished", "duration", time.Since(started).Round(time.Millisecond))
	}
	wg.Wait()
}

// checkProxyFlags rejects proxy flag values that name no mode or
// contradict each other, naming the flag to fix.
func checkProxyFlags(opts serveOptions) error {
	switch proxy.TLSMode(opts.tlsMode) {
	case proxy.TLSRequired, proxy.TLSOptional, proxy.TLSOff:
	default:
		return fmt.Errorf("invalid --tls %q: expected required, optional or off", opts.tlsMode)
	}
	if (opts.tlsCert == "") != (opts.tlsKey == "") {
		return errors.New("--tls-cert and --tls-key must be given together")
	}
	if opts.tlsCert != "" && proxy.TLSMode(opts.tlsMode) == proxy.TLSOff {
		return errors.New("--tls-cert and --tls-key are not used with --tls off: drop them or choose --tls required or optional")
	}
	if err := proxy.ValidSNISuffix(opts.sniSuffix); err != nil {
		return fmt.Errorf("invalid --sni-suffix: %w", err)
	}
	switch proxy.RoutingMode(opts.routing) {
	case proxy.RoutingRelaxed, proxy.RoutingStrict:
	default:
		return fmt.Errorf("invalid --routing %q: expected relaxed or strict", opts.routing)
	}
	switch proxy.PasswordAuth(opts.passwordAuth) {
	case proxy.PasswordSCRAM, proxy.PasswordCleartext:
	default:
		return fmt.Errorf("invalid --password-auth %q: expected scram or cleartext", opts.passwordAuth)
	}
	if opts.maxClients <= 0 {
		return fmt.Errorf("invalid --max-clients %d: must be positive", opts.maxClients)
	}
	switch proxy.PoolMode(opts.poolMode) {
	case proxy.PoolTransaction, proxy.PoolSession:
	default:
		return fmt.Errorf("invalid --pool-mode %q: expected transaction or session", opts.poolMode)
	}
	if opts.poolSize < 0 {
		return fmt.Errorf("invalid --pool-size %d: must be 0 (sized from cpu_current) or positive", opts.poolSize)
	}
	if opts.queryWaitTimeout <= 0 {
		return fmt.Errorf("invalid --query-wait-timeout %s: must be positive", opts.queryWaitTimeout)
	}
	if opts.queryWaitNotice <= 0 {
		return fmt.Errorf("invalid --query-wait-notice %s: must be positive", opts.queryWaitNotice)
	}
	if opts.idleInTxTimeout < 0 {
		return fmt.Errorf("invalid --idle-in-transaction-timeout %s: must be 0 (off) or positive", opts.idleInTxTimeout)
	}
	return nil
}

// loadTLS returns the proxy's TLS configuration: nil with --tls off, the
// certificate of --tls-cert when given, and otherwise the generated one.
func loadTLS(opts serveOptions, dataDir string, logger *slog.Logger) (*tls.Config, proxy.TLSFiles, error) {
	switch {
	case proxy.TLSMode(opts.tlsMode) == proxy.TLSOff:
		return nil, proxy.TLSFiles{}, nil
	case opts.tlsCert != "":
		return proxy.LoadCertificate(opts.tlsCert, opts.tlsKey)
	}
	config, files, err := proxy.EnsureCertificates(filepath.Join(dataDir, "tls"), opts.sniSuffix)
	if err == nil && files.Renewed {
		logger.Info("replaced the generated server certificate", "path", files.ServerCert, "dns_names", "localhost, *."+opts.sniSuffix)
	}
	return config, files, err
}

// checkCPULimits proves, as the service user, that cgroups set up earlier
// can be used, and logs once whether CPU limits are enforced. It returns
// nil when they are not.
func checkCPULimits(logger *slog.Logger, cgroups *autoscale.CPUCgroups, setUpErr error) *autoscale.CPUCgroups {
	err := setUpErr
	if cgroups != nil {
		err = cgroups.Check()
	}
	if err != nil {
		logger.Warn("CPU limits are not enforced: instances may use more CPU than their allocation, which is still measured and scaled", "reason", err)
		return nil
	}
	logger.Info("CPU limits enforced", "cgroup", cgroups.String())
	return cgroups
}

// listen binds addr and names the flag to change when that fails.
func listen(addr, flag string) (net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("invalid %s %q: expected host:port, for example 127.0.0.1:5433", flag, addr)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return nil, fmt.Errorf("invalid %s %q: port %q is not a number from 0 to 65535", flag, addr, port)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, port))
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("cannot listen on %s: address already in use: stop the other server or pass another %s", addr, flag)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot listen on %s (%s): %w", addr, flag, err)
	}
	return ln, nil
}

func splitAddr(addr net.Addr) (string, int) {
	tcp := addr.(*net.TCPAddr)
	host := tcp.IP.String()
	if tcp.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	return host, tcp.Port
}

func writeAddresses(dataDir string, addrs addresses) error {
	raw, err := json.Marshal(addrs)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dataDir, addressesFileName), raw, 0o600)
}

func readAddresses(dataDir string) (addresses, bool) {
	raw, err := os.ReadFile(filepath.Join(dataDir, addressesFileName))
	if err != nil {
		return addresses{}, false
	}
	var addrs addresses
	if json.Unmarshal(raw, &addrs) != nil {
		return addresses{}, false
	}
	return addrs, true
}

func newLogger(level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("invalid --log-level %q: expected debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("invalid --log-format %q: expected text or json", format)
}

// printWelcome prints how to connect. It names the credentials
// file instead of printing the secret key.
func printWelcome(dataDir string, addrs addresses, creds auth.Credentials, opts serveOptions, tlsFiles proxy.TLSFiles) {
	sslmode := "require"
	if opts.tlsMode == string(proxy.TLSOff) {
		sslmode = "disable"
	}
	tlsNote := "TLS " + opts.tlsMode
	switch {
	case opts.tlsMode == string(proxy.TLSOff):
	case tlsFiles.CACert != "":
		tlsNote += "; CA certificate " + tlsFiles.CACert
	default:
		tlsNote += "; certificate " + tlsFiles.ServerCert
	}
	bin := os.Args[0]
	fmt.Printf(`
sdblocal is running.
  API:          http://%s  (Scaleway serverless-sqldb v1alpha1, region fr-par)
  PostgreSQL:   %s  (%s)
  Host names:   <database-id>.%s, routed by TLS SNI (add hostaddr=127.0.0.1 where it does not resolve)
  Principal ID: %s
  Credentials:  %s

Set up your shell for the Scaleway SDK and psql:
  eval "$(%s env --data-dir %s)"
Create a database and open psql on it:
  %s db create mydb --data-dir %s
  %s db connect <database-id> --data-dir %s
or paste its endpoint into psql, with sslmode=%s.

`, addrs.API, addrs.PG, tlsNote, opts.sniSuffix, creds.PrincipalID, filepath.Join(dataDir, auth.CredentialsFileName),
		bin, dataDir, bin, dataDir, bin, dataDir, sslmode)
}
