// Package proxy is sdblocal's PostgreSQL-wire front door: it negotiates TLS,
// authenticates principals by their secret key, routes each client to its
// database's instance, waking it when needed, and relays messages between
// the client and a backend connection.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/xdg-go/scram"

	"github.com/sdblocal/sdblocal/auth"
	"github.com/sdblocal/sdblocal/autoscale"
	"github.com/sdblocal/sdblocal/catalog"
)

// Server accepts client connections. It is safe for concurrent use.
type Server struct {
	cfg       Config
	cat       *catalog.Catalog
	authn     *auth.Authenticator
	instances *autoscale.Manager
	metrics   *metrics
	cancels   *cancelKeys
	throttle  *loginThrottle
	pools     *poolRegistry

	// authFailures counts rejected logins by reason (authenticate.go).
	authFailures *prometheus.CounterVec
	// binding is the tls-server-end-point channel binding of the served
	// certificate; without it SCRAM-SHA-256-PLUS is not offered.
	binding scram.ChannelBinding
	// done is closed by Close, to cut short failed-login delays.
	done chan struct{}
	// skippedKeysLogged records the principals whose keys SCRAM cannot
	// all check, once the warning about them is logged.
	skippedKeysLogged sync.Map

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]struct{}
	perDB     map[string]int // client sessions per database ID
	closing   bool
	// draining is set by Shutdown: the listeners are closed and clients
	// that finish logging in are rejected, while sessions already open
	// may finish their transactions.
	draining bool
	wg       sync.WaitGroup
}

// NewServer returns a proxy for the databases in cat. It returns an error
// for settings that contradict each other.
func NewServer(cfg Config, cat *catalog.Catalog, authn *auth.Authenticator, instances *autoscale.Manager) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:       cfg,
		cat:       cat,
		authn:     authn,
		instances: instances,
		metrics:   newMetrics(cfg.Registerer),
		cancels:   newCancelKeys(cfg.CancelRate, cfg.CancelBurst),
		pools:     newPoolRegistry(),
		throttle:  newLoginThrottle(cfg.LoginBackoff, cfg.LoginBackoffMax, cfg.LoginBackoffReset),
		done:      make(chan struct{}),
		listeners: map[net.Listener]struct{}{},
		conns:     map[net.Conn]struct{}{},
		perDB:     map[string]int{},
	}
	s.authFailures = newAuthFailureMetric(cfg.Registerer)
	if cfg.TLSMode != TLSOff {
		binding, err := serverEndPointBinding(cfg.TLS.Certificates[0])
		if err != nil {
			cfg.Logger.Warn("SCRAM-SHA-256-PLUS is not offered: no channel binding for the server certificate", "error", err)
		}
		s.binding = binding
	}
	return s, nil
}

// Serve accepts connections on ln until Close. It returns nil after Close.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return errors.New("proxy is closed")
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()

	for {
		conn, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing || s.draining
			s.mu.Unlock()
			if closing {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return fmt.Errorf("accept: %w", err)
		}
		admission := s.track(conn)
		switch admission {
		case admitClosing:
			conn.Close()
			return nil
		case admitDrop:
			s.metrics.rejected.WithLabelValues("max_clients_exceeded").Inc()
			conn.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			serve := s.handle(conn, admission == admitOverLimit)
			if serve == nil {
				s.untrack(conn)
				s.wg.Done()
				return
			}
			// The session relays on a goroutine of its own, so that the
			// stack the TLS handshake and the login grew is freed: an
			// idle client then costs a small stack.
			go func() {
				defer s.wg.Done()
				defer s.untrack(conn)
				serve()
			}()
		}()
	}
}

// admission is the decision track makes for a new connection.
type admission int

const (
	admitOK admission = iota
	// admitOverLimit connections are past MaxClients. They are served
	// only as far as a CancelRequest, or the startup packet that gets
	// them FATAL 53300, as PostgreSQL rejects clients past
	// max_connections.
	admitOverLimit
	// admitDrop connections are past twice MaxClients and closed at once,
	// so a flood cannot hold unbounded goroutines in the handshake.
	// PostgreSQL likewise caps its dead-end children at about twice
	// max_connections.
	admitDrop
	admitClosing
)

func (s *Server) track(conn net.Conn) admission {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return admitClosing
	}
	open := len(s.conns)
	if open >= 2*s.cfg.MaxClients {
		return admitDrop
	}
	s.conns[conn] = struct{}{}
	if open >= s.cfg.MaxClients {
		return admitOverLimit
	}
	return admitOK
}

func (s *Server) untrack(conn net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, conn)
}

// Shutdown stops accepting connections, rejects clients that finish
// logging in from then on, and waits until no session is inside a query
// or a transaction, or until ctx ends. It then closes every connection as
// Close does. It returns ctx's error when sessions were still active.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	for ln := range s.listeners {
		ln.Close()
	}
	s.mu.Unlock()

	active, err := s.instances.WaitIdle(ctx)
	if err != nil {
		s.cfg.Logger.Warn("closing client sessions that are still inside a query or transaction", "sessions", active, "error", err)
	}
	s.Close()
	return err
}

// isDraining reports whether Shutdown has begun.
func (s *Server) isDraining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining
}

// Close stops accepting, closes every client connection and waits for
// their goroutines to end.
func (s *Server) Close() error {
	s.mu.Lock()
	if !s.closing {
		s.closing = true
		close(s.done)
	}
	for ln := range s.listeners {
		ln.Close()
	}
	s.mu.Unlock()

	// Clients past login hear why they are disconnected, in PostgreSQL's
	// words for a server shutdown; the rest are simply closed.
	var wg sync.WaitGroup
	for _, sess := range s.cancels.all() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sess.Terminate(codeAdminShutdown, "terminating connection due to administrator command")
		}()
	}
	wg.Wait()

	s.mu.Lock()
	for conn := range s.conns {
		conn.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// handle runs one client connection from the first packet to the end:
// TLS and startup negotiation, the checks that need no credentials,
// authentication, routing, and then the session. overLimit marks a
// connection past MaxClients. After a successful login it returns the
// rest of the session, for the caller to run; it closes the connection
// otherwise.
func (s *Server) handle(conn net.Conn, overLimit bool) (serve func()) {
	clientAddr := conn.RemoteAddr().String()
	logger := s.cfg.Logger.With("client_addr", clientAddr)
	raw := conn
	defer func() {
		if serve == nil {
			raw.Close()
		}
	}()

	_ = conn.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	start, cancel, err := negotiate(&conn, s.cfg.TLS, s.cfg.TLSMode)
	if err != nil {
		s.rejectHandshake(conn, logger, err)
		return
	}
	if cancel != nil {
		s.forwardCancel(cancel, clientHost(conn), logger)
		return
	}
	if overLimit {
		s.reject(conn, logger, fatalf(codeTooManyConnections, "sorry, too many clients already").
			withHint(fmt.Sprintf("The proxy accepts at most %d client connections; close idle connections or raise --max-clients.", s.cfg.MaxClients)))
		return
	}

	user, werr := s.checkStartup(start)
	if werr != nil {
		s.reject(conn, logger, werr)
		return
	}
	if werr := s.checkTLS(start); werr != nil {
		s.rejectLogin(conn, logger, authFailureTLSRequired, werr)
		return
	}
	opts := parseOptions(start.params["options"])
	target, werr := s.resolveTarget(start.serverName, opts.databaseID)
	if werr != nil {
		s.reject(conn, logger, werr)
		return
	}

	identity, err := s.authenticate(conn, start, user, logger)
	if err != nil {
		s.rejectHandshake(conn, logger, err)
		return
	}
	logger = logger.With("principal_id", identity.Principal.ID)

	if werr := checkClientEncoding(start.params, opts); werr != nil {
		s.reject(conn, logger, werr)
		return
	}
	dbName := start.params["database"]
	if dbName == "" {
		dbName = user
	}
	db, werr := s.route(identity, target, dbName)
	if werr == nil {
		werr = checkReady(db)
	}
	if werr != nil {
		s.rejectRoute(conn, logger, werr)
		return
	}
	s.metrics.routed.WithLabelValues(string(target.method)).Inc()
	logger = logger.With("database_id", db.ID)
	role, werr := s.backendRole(identity, db)
	if werr != nil {
		s.rejectRoute(conn, logger, werr)
		return
	}
	logger = logger.With("role", role)
	_ = conn.SetDeadline(time.Time{})

	if s.isDraining() {
		s.reject(conn, logger, fatalf(codeCannotConnectNow, "the database system is shutting down"))
		return
	}
	inst, err := s.instances.Instance(db.ID)
	if err != nil {
		s.reject(conn, logger, fatalf(codeObjectNotInState, "database %s is not ready: its instance is not provisioned", db.ID))
		return
	}
	limit := s.clientLimit(db)
	if !s.acquireSlot(db.ID, limit) {
		s.reject(conn, logger, fatalf(codeTooManyConnections, "too many connections for database %s (limit %d)", db.ID, limit).
			withHint("Close idle connections or raise the per-database client limit."))
		return
	}

	sess := newSession(s, conn, inst, role, start.params, opts.rest, logger)
	if !sess.start() {
		s.releaseSlot(db.ID)
		return nil
	}
	return func() {
		defer raw.Close()
		defer s.releaseSlot(db.ID)
		sess.serve()
	}
}

// checkStartup checks the startup parameters that PostgreSQL checks before
// authentication. It returns the user name.
func (s *Server) checkStartup(start *startup) (string, *wireError) {
	user := start.params["user"]
	if user == "" {
		return "", fatalf(codeInvalidAuthorization, "no PostgreSQL user name specified in startup packet")
	}
	if replication, ok := start.params["replication"]; ok && replication != "false" && replication != "0" && replication != "off" && replication != "no" {
		return "", fatalf(codeFeatureNotSupported, "replication connections are not supported")
	}
	return user, nil
}

// checkTLS rejects a client without TLS when TLS is required.
func (s *Server) checkTLS(start *startup) *wireError {
	if start.tls == nil && s.cfg.TLSMode == TLSRequired {
		return fatalf(codeInvalidAuthorization, "connection without TLS rejected: this server requires TLS").
			withHint("Connect with sslmode=require.")
	}
	return nil
}

// rejectHandshake reports a failed negotiation or login. A client that
// timed out or hung up gets no message, since it would not read it.
func (s *Server) rejectHandshake(conn net.Conn, logger *slog.Logger, err error) {
	var login *loginError
	if errors.As(err, &login) {
		logger = logger.With(login.logAttrs...)
	}
	if werr, ok := asWireError(err); ok {
		s.reject(conn, logger, werr)
		return
	}
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		s.metrics.rejected.WithLabelValues("handshake_timeout").Inc()
		s.authFailures.WithLabelValues(authFailureHandshakeTimeout).Inc()
		logger.Info("client rejected", "reason", "handshake timed out", "auth_failure", authFailureHandshakeTimeout, "timeout", s.cfg.HandshakeTimeout)
		// The deadline has passed; give the message a moment of its own.
		_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
		werr := fatalf(codeProtocolViolation, "timed out after %s waiting for the startup packet or password", s.cfg.HandshakeTimeout)
		_ = writeMessages(conn, werr.toMessage())
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed), errors.Is(err, os.ErrDeadlineExceeded):
		logger.Debug("client left during the handshake", "error", err)
	default:
		s.metrics.rejected.WithLabelValues("handshake_error").Inc()
		logger.Info("client rejected", "reason", "handshake failed", "error", err)
	}
}

// rejectRoute rejects a client that route, checkReady or backendRole
// turned away. Those return SQLSTATE 28000 only when no policy lets the
// principal connect to the database, which counts as a failed login.
func (s *Server) rejectRoute(conn net.Conn, logger *slog.Logger, werr *wireError) {
	if werr.code == codeInvalidAuthorization {
		s.rejectLogin(conn, logger, authFailureNoPermission, werr)
		return
	}
	s.reject(conn, logger, werr)
}

// reject sends err to the client and logs it once.
func (s *Server) reject(conn net.Conn, logger *slog.Logger, err *wireError) {
	s.metrics.rejected.WithLabelValues(err.code).Inc()
	logger.Info("client rejected", "sqlstate", err.code, "reason", err.message)
	_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
	_ = writeMessages(conn, err.toMessage())
}

// clientLimit is the client limit of db: the one its cpu_max gives. In
// session mode, where each client holds a backend, it is never more than
// MaxClientsPerDatabase.
func (s *Server) clientLimit(db catalog.Database) int {
	if s.cfg.ClientLimit == nil {
		return s.cfg.MaxClientsPerDatabase
	}
	limit := s.cfg.ClientLimit(db.CPUMax)
	if s.cfg.PoolMode == PoolSession {
		limit = min(limit, s.cfg.MaxClientsPerDatabase)
	}
	return limit
}

func (s *Server) acquireSlot(databaseID string, limit int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perDB[databaseID] >= limit {
		return false
	}
	s.perDB[databaseID]++
	s.metrics.clients.Inc()
	return true
}

func (s *Server) releaseSlot(databaseID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.perDB[databaseID]--
	if s.perDB[databaseID] == 0 {
		delete(s.perDB, databaseID)
	}
	s.metrics.clients.Dec()
}

// wakeContext bounds a wake started on behalf of a client.
func (s *Server) wakeContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.cfg.WakeTimeout)
}
