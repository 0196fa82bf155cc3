// Package proxy is sdblocal's PostgreSQL-wire front door: it negotiates TLS,
// authenticates principals by their secret key, routes each client to its
// database's instance, waking it when needed, and relays messages between
// the client and a backend connection.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sdblocal/sdblocal/auth"
	"github.com/sdblocal/sdblocal/autoscale"
	"github.com/sdblocal/sdblocal/catalog"
)

// Config holds the proxy's settings. Zero values take the defaults given on
// each field.
type Config struct {
	// TLS is the configuration for SSLRequest. When it is nil, the proxy
	// declines TLS and accepts cleartext passwords without it.
	TLS *tls.Config
	// HandshakeTimeout bounds the time from accept until the client has
	// sent its startup packet and password. Default 15s.
	HandshakeTimeout time.Duration
	// WakeTimeout bounds how long a client waits for its instance to wake
	// and a backend connection to open. Default 60s.
	WakeTimeout time.Duration
	// MaxClientsPerDatabase caps client connections per database. Each
	// client holds one backend, so the default, 90, stays under the
	// instance's max_connections (100) minus its 3 superuser slots, with
	// room for sdblocal's own probes.
	MaxClientsPerDatabase int
	Logger                *slog.Logger
	Registerer            prometheus.Registerer
}

func (c *Config) setDefaults() {
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 15 * time.Second
	}
	if c.WakeTimeout <= 0 {
		c.WakeTimeout = 60 * time.Second
	}
	if c.MaxClientsPerDatabase <= 0 {
		c.MaxClientsPerDatabase = 90
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Server accepts client connections. It is safe for concurrent use.
type Server struct {
	cfg       Config
	cat       *catalog.Catalog
	authn     *auth.Authenticator
	instances *autoscale.Manager
	metrics   *metrics
	cancels   *cancelKeys

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]struct{}
	perDB     map[string]int // client sessions per database ID
	closing   bool
	wg        sync.WaitGroup
}

// NewServer returns a proxy for the databases in cat.
func NewServer(cfg Config, cat *catalog.Catalog, authn *auth.Authenticator, instances *autoscale.Manager) *Server {
	cfg.setDefaults()
	return &Server{
		cfg:       cfg,
		cat:       cat,
		authn:     authn,
		instances: instances,
		metrics:   newMetrics(cfg.Registerer),
		cancels:   newCancelKeys(),
		listeners: map[net.Listener]struct{}{},
		conns:     map[net.Conn]struct{}{},
		perDB:     map[string]int{},
	}
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
			closing := s.closing
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
		if !s.track(conn) {
			conn.Close()
			return nil
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.untrack(conn)
			s.handle(conn)
		}()
	}
}

func (s *Server) track(conn net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.conns[conn] = struct{}{}
	return true
}

func (s *Server) untrack(conn net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, conn)
}

// Close stops accepting, closes every client connection and waits for
// their goroutines to end.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closing = true
	for ln := range s.listeners {
		ln.Close()
	}
	for conn := range s.conns {
		conn.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// handle runs one client connection from the first packet to the end.
func (s *Server) handle(conn net.Conn) {
	clientAddr := conn.RemoteAddr().String()
	logger := s.cfg.Logger.With("client_addr", clientAddr)
	defer conn.Close()

	_ = conn.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	start, cancel, err := negotiate(&conn, s.cfg.TLS)
	if err != nil {
		s.rejectHandshake(conn, logger, err)
		return
	}
	if cancel != nil {
		s.forwardCancel(cancel, logger)
		return
	}

	identity, err := s.authenticate(conn, start, logger)
	if err != nil {
		s.rejectHandshake(conn, logger, err)
		return
	}
	logger = logger.With("principal_id", identity.Principal.ID)

	opts := parseOptions(start.params["options"])
	dbName := start.params["database"]
	if dbName == "" {
		dbName = start.params["user"]
	}
	db, werr := s.route(identity, opts.databaseID, dbName)
	if werr == nil {
		werr = checkReady(db)
	}
	if werr != nil {
		s.reject(conn, logger, werr)
		return
	}
	logger = logger.With("database_id", db.ID)
	_ = conn.SetDeadline(time.Time{})

	inst, err := s.instances.Instance(db.ID)
	if err != nil {
		s.reject(conn, logger, fatalf(codeObjectNotInState, "database %s is not ready: its instance is not provisioned", db.ID))
		return
	}
	if !s.acquireSlot(db.ID) {
		s.reject(conn, logger, fatalf(codeTooManyConnections, "too many connections for database %s (limit %d)", db.ID, s.cfg.MaxClientsPerDatabase).
			withHint("Close idle connections or raise the per-database client limit."))
		return
	}
	defer s.releaseSlot(db.ID)

	sess := newSession(s, conn, inst, start.params, opts.rest, logger)
	sess.run()
}

// rejectHandshake reports a failed negotiation or login. A client that
// timed out or hung up gets no message, since it would not read it.
func (s *Server) rejectHandshake(conn net.Conn, logger *slog.Logger, err error) {
	if werr, ok := asWireError(err); ok {
		s.reject(conn, logger, werr)
		return
	}
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		s.metrics.rejected.WithLabelValues("handshake_timeout").Inc()
		logger.Info("client rejected", "reason", "handshake timed out", "timeout", s.cfg.HandshakeTimeout)
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

// reject sends err to the client and logs it once.
func (s *Server) reject(conn net.Conn, logger *slog.Logger, err *wireError) {
	s.metrics.rejected.WithLabelValues(err.code).Inc()
	logger.Info("client rejected", "sqlstate", err.code, "reason", err.message)
	_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
	_ = writeMessages(conn, err.toMessage())
}

func (s *Server) acquireSlot(databaseID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perDB[databaseID] >= s.cfg.MaxClientsPerDatabase {
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
