package main

import (
	"context"
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
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/sdblocal/sdblocal/api"
	"github.com/sdblocal/sdblocal/auth"
	"github.com/sdblocal/sdblocal/autoscale"
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

	if asRoot {
		if err := autoscale.DropPrivileges(serviceUser); err != nil {
			return err
		}
		logger.Info("dropped root privileges", "user", serviceUser.Name, "uid", serviceUser.UID, "gid", serviceUser.GID)
		if err := unix.Access(filepath.Join(pgDir, "bin", "postgres"), unix.X_OK); err != nil {
			return fmt.Errorf("user %s cannot run %s: %w: every parent directory must be traversable by that user; use --pg-dir under /var/cache or /opt", serviceUser.Name, filepath.Join(pgDir, "bin", "postgres"), err)
		}
	}

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
	tlsConfig, tlsFiles, err := proxy.EnsureCertificates(filepath.Join(dataDir, "tls"))
	if err != nil {
		return err
	}

	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	manager := autoscale.NewManager(autoscale.Config{
		DataDir:     dataDir,
		PGDir:       pgDir,
		IdleTimeout: opts.idleTimeout,
		Logger:      logger,
		Registerer:  registry,
	}, cat)
	if err := manager.Start(); err != nil {
		return err
	}
	// Close runs once: here on an early return, or in the shutdown below.
	defer manager.Close()

	authn := auth.NewAuthenticator(cat)
	pgProxy := proxy.NewServer(proxy.Config{TLS: tlsConfig, HandshakeTimeout: opts.handshake, Logger: logger, Registerer: registry}, cat, authn, manager)
	pgHost, pgPort := splitAddr(pgListener.Addr())
	handler := api.New(api.Config{PGHost: pgHost, PGPort: pgPort, Logger: logger, Gatherer: registry}, cat, authn, manager)
	httpServer := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}

	errs := make(chan error, 2)
	go func() { errs <- pgProxy.Serve(pgListener) }()
	go func() { errs <- httpServer.Serve(apiListener) }()

	addrs := addresses{API: apiListener.Addr().String(), PG: pgListener.Addr().String()}
	if err := writeAddresses(dataDir, addrs); err != nil {
		logger.Warn("could not record listener addresses", "error", err)
	}
	logger.Info("sdblocal ready", "api", "http://"+addrs.API, "pg", addrs.PG, "data_dir", dataDir, "pg_dir", pgDir, "idle_timeout", opts.idleTimeout)
	printWelcome(dataDir, addrs, creds, tlsFiles)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	select {
	case <-ctx.Done():
		logger.Info("shutting down")
	case err := <-errs:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("listener failed; shutting down", "error", err)
		}
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = httpServer.Shutdown(shutdownCtx)
	_ = pgProxy.Close()
	manager.Close()
	_ = os.Remove(filepath.Join(dataDir, addressesFileName))
	logger.Info("stopped")
	return nil
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
func printWelcome(dataDir string, addrs addresses, creds auth.Credentials, tlsFiles proxy.TLSFiles) {
	fmt.Printf(`
sdblocal is running.
  API:          http://%s  (Scaleway serverless-sqldb v1alpha1, region fr-par)
  PostgreSQL:   %s  (TLS; CA certificate %s)
  Principal ID: %s
  Credentials:  %s

Set up your shell for the Scaleway SDK/CLI and psql:
  eval "$(sdblocal env --data-dir %s)"
Create a database, then connect with the endpoint the API returns:
  curl -s -H "X-Auth-Token: $SCW_SECRET_KEY" -H "Content-Type: application/json" -d '{"project_id":"'$SCW_DEFAULT_PROJECT_ID'","name":"mydb","cpu_min":0,"cpu_max":4}' \
    http://%s/serverless-sqldb/v1alpha1/regions/fr-par/databases
  psql "postgresql://%s/mydb?sslmode=require"

`, addrs.API, addrs.PG, tlsFiles.CACert, creds.PrincipalID, filepath.Join(dataDir, auth.CredentialsFileName), dataDir, addrs.API, addrs.PG)
}
