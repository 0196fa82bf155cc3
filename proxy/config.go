package proxy

import (
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sdblocal/sdblocal/autoscale"
)

// TLSMode is the TLS policy for clients: required, optional or off.
type TLSMode string

const (
	// TLSRequired rejects a client without TLS with FATAL 28000 before it
	// is asked for a password, as the real service does. CancelRequest
	// is still accepted in plain text, because libpq before 17 and psql
	// send it that way.
	TLSRequired TLSMode = "required"
	// TLSOptional accepts TLS and plain-text clients. A plain-text client
	// always gets SCRAM, never the cleartext password exchange.
	TLSOptional TLSMode = "optional"
	// TLSOff declines SSLRequest with 'N' and closes direct TLS
	// connections.
	TLSOff TLSMode = "off"
)

// RoutingMode is the routing rule for a client that names no database ID.
type RoutingMode string

const (
	// RoutingRelaxed routes a client that sends neither a TLS server name
	// nor a databaseid option by its database name, when exactly one
	// database the principal may use has that name or ID.
	RoutingRelaxed RoutingMode = "relaxed"
	// RoutingStrict rejects such a client, as the real service does,
	// with "Database hostname wasn't sent to server".
	RoutingStrict RoutingMode = "strict"
)

// PasswordAuth is the password exchange the proxy requests from TLS
// clients.
type PasswordAuth string

const (
	// PasswordSCRAM requests SCRAM-SHA-256, and offers
	// SCRAM-SHA-256-PLUS with tls-server-end-point channel binding over TLS.
	PasswordSCRAM PasswordAuth = "scram"
	// PasswordCleartext requests the secret key in clear from TLS clients
	// (AuthenticationCleartextPassword), for clients without SCRAM.
	// Plain-text clients still get SCRAM.
	PasswordCleartext PasswordAuth = "cleartext"
)

// PoolMode is when a client's backend goes back to its database's pool.
type PoolMode string

const (
	// PoolTransaction lends a client a backend from its first message
	// after ReadyForQuery with status idle until the next such
	// ReadyForQuery: for one transaction, or one statement outside a
	// transaction. Settings made with SET outside a transaction are
	// shared with the backend's next clients, as in the real service.
	PoolTransaction PoolMode = "transaction"
	// PoolSession gives a client one backend from login to disconnect (or
	// until a suspend), then resets it with DISCARD ALL before reuse.
	PoolSession PoolMode = "session"
)

// defaultMaxBackends is the default of MaxBackendsPerDatabase: the
// instance's max_connections minus its 3 superuser-reserved slots minus 7
// left for sdblocal's own connections to the instance.
const defaultMaxBackends = autoscale.MaxConnections - 3 - 7

// Config holds the proxy's settings. Zero values take the defaults given on
// each field.
type Config struct {
	// TLS serves SSLRequest and direct TLS connections. It must be set
	// unless TLSMode is TLSOff. Its first certificate is the one
	// SCRAM-SHA-256-PLUS binds to.
	TLS *tls.Config
	// TLSMode defaults to TLSRequired when TLS is set and to TLSOff
	// otherwise.
	TLSMode TLSMode
	// SNISuffix is the domain that database host names end in: a client
	// whose TLS server name is <database-id>.<SNISuffix> is routed to that
	// database. Default DefaultSNISuffix.
	SNISuffix string
	// Routing defaults to RoutingRelaxed.
	Routing RoutingMode
	// PasswordAuth defaults to PasswordSCRAM.
	PasswordAuth PasswordAuth
	// MockAuthSecret seeds the salt sent to unknown principals, so that
	// they cannot be distinguished from known ones. Keep it across restarts, as
	// PostgreSQL keeps its mock authentication nonce. Default: 32 random
	// bytes drawn at start.
	MockAuthSecret []byte
	// HandshakeTimeout bounds the time from accept until the client has
	// sent its startup packet and finished authenticating. Default 15s.
	HandshakeTimeout time.Duration
	// WakeTimeout bounds how long a client waits for its instance to wake
	// and a backend connection to open. Default 60s.
	WakeTimeout time.Duration
	// MaxClients caps client connections across all databases, counted
	// from accept to close, so connections still in the handshake count
	// too. A client over the cap gets FATAL 53300 after its startup
	// packet. Default 1000.
	MaxClients int
	// MaxClientsPerDatabase caps client connections per database in
	// session mode, where each client holds one backend, and when
	// ClientLimit is nil. The default, 90, is MaxBackendsPerDatabase's.
	MaxClientsPerDatabase int
	// ClientLimit, when set, gives a database's client limit from its
	// cpu_max. In transaction mode it is the limit; in session mode the
	// proxy applies the smaller of it and MaxClientsPerDatabase.
	ClientLimit func(cpuMax uint32) int

	// PoolMode is when a client gives its backend back to the pool.
	// Default PoolTransaction, as the real service pools.
	PoolMode PoolMode
	// PoolSize fixes the number of backends per database. Zero sizes the
	// pool from the instance's allocation: 10 × max(cpu_current, 1) in
	// transaction mode, MaxBackendsPerDatabase in session mode. Either way
	// it is at most MaxBackendsPerDatabase.
	PoolSize int
	// MaxBackendsPerDatabase caps the backends the proxy opens to one
	// instance. Default autoscale.MaxConnections (100) minus the 3
	// superuser-reserved slots minus 7 for sdblocal's own connections
	// (backups, probes): 90.
	MaxBackendsPerDatabase int
	// QueryWaitTimeout bounds how long a client waits for a backend when
	// the pool is full; the waiting request then fails with ERROR 53300
	// and the session continues. Default 120s, as PgBouncer's
	// query_wait_timeout.
	QueryWaitTimeout time.Duration
	// QueryWaitNotice is how long a client waits for a backend before it
	// gets a NOTICE saying so. Default 5s.
	QueryWaitNotice time.Duration
	// IdleInTransactionTimeout disconnects, with FATAL 25P03, a client
	// that stays idle inside a transaction for longer, so that it cannot
	// hold a backend and keep its instance awake for ever. Zero or
	// negative turns it off. serve sets 1h.
	IdleInTransactionTimeout time.Duration
	// CancelRate and CancelBurst limit CancelRequests per client IP
	// address, in requests per second and bucket size. Defaults 10 and 20.
	CancelRate  float64
	CancelBurst int
	// LoginBackoff is the delay before the reply to a failed login, doubled
	// for each further failure from the same client address or for the
	// same principal, up to LoginBackoffMax. Successful logins are never
	// delayed. Default 100ms.
	LoginBackoff time.Duration
	// LoginBackoffMax caps the delay. Default 5s.
	LoginBackoffMax time.Duration
	// LoginBackoffReset is the quiet period after which an address or a
	// principal starts again at LoginBackoff. A successful login resets at
	// once. Default 1m.
	LoginBackoffReset time.Duration
	Logger            *slog.Logger
	Registerer        prometheus.Registerer
}

func (c *Config) setDefaults() {
	if c.TLSMode == "" {
		c.TLSMode = TLSRequired
		if c.TLS == nil {
			c.TLSMode = TLSOff
		}
	}
	if c.SNISuffix == "" {
		c.SNISuffix = DefaultSNISuffix
	}
	if c.Routing == "" {
		c.Routing = RoutingRelaxed
	}
	if c.PasswordAuth == "" {
		c.PasswordAuth = PasswordSCRAM
	}
	if len(c.MockAuthSecret) == 0 {
		c.MockAuthSecret = make([]byte, 32)
		if _, err := rand.Read(c.MockAuthSecret); err != nil {
			panic(err)
		}
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 15 * time.Second
	}
	if c.WakeTimeout <= 0 {
		c.WakeTimeout = 60 * time.Second
	}
	if c.MaxClients <= 0 {
		c.MaxClients = 1000
	}
	if c.MaxClientsPerDatabase <= 0 {
		c.MaxClientsPerDatabase = defaultMaxBackends
	}
	if c.PoolMode == "" {
		c.PoolMode = PoolTransaction
	}
	if c.MaxBackendsPerDatabase <= 0 {
		c.MaxBackendsPerDatabase = defaultMaxBackends
	}
	if c.QueryWaitTimeout <= 0 {
		c.QueryWaitTimeout = 120 * time.Second
	}
	if c.QueryWaitNotice <= 0 {
		c.QueryWaitNotice = 5 * time.Second
	}
	if c.CancelRate <= 0 {
		c.CancelRate = 10
	}
	if c.CancelBurst <= 0 {
		c.CancelBurst = 20
	}
	if c.LoginBackoff <= 0 {
		c.LoginBackoff = 100 * time.Millisecond
	}
	if c.LoginBackoffMax <= 0 {
		c.LoginBackoffMax = 5 * time.Second
	}
	if c.LoginBackoffReset <= 0 {
		c.LoginBackoffReset = time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// validate reports settings that contradict each other or name no mode.
func (c *Config) validate() error {
	switch c.TLSMode {
	case TLSRequired, TLSOptional:
		if c.TLS == nil || len(c.TLS.Certificates) == 0 {
			return fmt.Errorf("TLS mode %s needs a TLS configuration with a certificate", c.TLSMode)
		}
	case TLSOff:
	default:
		return fmt.Errorf("invalid TLS mode %q: expected %s, %s or %s", c.TLSMode, TLSRequired, TLSOptional, TLSOff)
	}
	switch c.Routing {
	case RoutingRelaxed, RoutingStrict:
	default:
		return fmt.Errorf("invalid routing mode %q: expected %s or %s", c.Routing, RoutingRelaxed, RoutingStrict)
	}
	switch c.PasswordAuth {
	case PasswordSCRAM, PasswordCleartext:
	default:
		return fmt.Errorf("invalid password exchange %q: expected %s or %s", c.PasswordAuth, PasswordSCRAM, PasswordCleartext)
	}
	switch c.PoolMode {
	case PoolTransaction, PoolSession:
	default:
		return fmt.Errorf("invalid pool mode %q: expected %s or %s", c.PoolMode, PoolTransaction, PoolSession)
	}
	if c.PoolSize < 0 {
		return fmt.Errorf("invalid pool size %d: expected 0 (sized from cpu_current) or a positive number", c.PoolSize)
	}
	return ValidSNISuffix(c.SNISuffix)
}

// MockAuthSecretFileName is the file in the data directory that keeps
// Config.MockAuthSecret across restarts, mode 0600.
const MockAuthSecretFileName = "mock_auth_secret"

// EnsureMockAuthSecret reads the mock authentication secret from dataDir,
// creating it with 32 random bytes the first time.
func EnsureMockAuthSecret(dataDir string) ([]byte, error) {
	path := filepath.Join(dataDir, MockAuthSecretFileName)
	secret, err := os.ReadFile(path)
	if err == nil && len(secret) >= 16 {
		return secret, nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	secret = make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("generate mock authentication secret: %w", err)
	}
	if err := os.WriteFile(path, secret, 0o600); err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return secret, nil
}
