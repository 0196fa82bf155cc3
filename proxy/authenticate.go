package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sdblocal/sdblocal/auth"
	"github.com/sdblocal/sdblocal/catalog"
)

// Reasons a login is rejected, the values of the reason label of
// sdblocal_proxy_authentication_failures_total and of auth_failure in the
// log. They are for the operator: the client gets PostgreSQL's message,
// which does not tell an unknown principal from a wrong secret key.
const (
	// authFailureInvalidCredentials: the principal exists, but none of its
	// unexpired keys matches the password or SCRAM proof.
	authFailureInvalidCredentials = "invalid_credentials"
	// authFailureUnknownPrincipal: the user name is no principal's ID.
	authFailureUnknownPrincipal = "unknown_principal"
	// authFailureExpiredKey: every API key of the principal has expired.
	authFailureExpiredKey = "expired_key"
	// authFailureNoPermission: the login succeeded, but no policy lets the
	// principal connect to the database.
	authFailureNoPermission = "no_permission"
	// authFailureTLSRequired: a client without TLS while --tls is required.
	authFailureTLSRequired = "tls_required"
	// authFailureHandshakeTimeout: no startup packet or password within
	// --handshake-timeout.
	authFailureHandshakeTimeout = "handshake_timeout"
	// authFailureProtocolViolation: a malformed password or SASL message,
	// or a SCRAM channel binding that does not match.
	authFailureProtocolViolation = "protocol_violation"
)

func newAuthFailureMetric(reg prometheus.Registerer) *prometheus.CounterVec {
	failures := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sdblocal_proxy_authentication_failures_total",
		Help: "Client logins rejected, by reason: invalid_credentials, unknown_principal, expired_key, no_permission, tls_required, handshake_timeout or protocol_violation.",
	}, []string{"reason"})
	// Every reason is exported from the start, at 0, so that rate() and
	// increase() see the first failure.
	for _, reason := range []string{authFailureInvalidCredentials, authFailureUnknownPrincipal, authFailureExpiredKey,
		authFailureNoPermission, authFailureTLSRequired, authFailureHandshakeTimeout, authFailureProtocolViolation} {
		failures.WithLabelValues(reason)
	}
	if reg != nil {
		reg.MustRegister(failures)
	}
	return failures
}

// loginError is a rejected login: the error the client gets, and the
// attributes that rejectHandshake adds to its single log line.
type loginError struct {
	wire     *wireError
	logAttrs []any
}

func (e *loginError) Error() string { return e.wire.Error() }
func (e *loginError) Unwrap() error { return e.wire }

// maxPasswordMessage caps the PasswordMessage body. A secret key is a
// 36-character UUID; PostgreSQL itself reads at most 1000 bytes here.
const maxPasswordMessage = 1000

// authenticate runs the password exchange: the user name is a principal
// ID and the password one of its secret keys. It requests SCRAM, or the
// cleartext password when PasswordAuth is cleartext and the connection
// uses TLS. A wrong secret key or an unknown principal gets FATAL 28P01
// after the failed-login delay.
func (s *Server) authenticate(conn net.Conn, start *startup, user string, logger *slog.Logger) (auth.Identity, error) {
	method := "scram-sha-256"
	var identity auth.Identity
	var err error
	if s.cfg.PasswordAuth == PasswordCleartext && start.tls != nil {
		method = "password"
		identity, err = s.authenticateCleartext(conn, user)
	} else {
		identity, method, err = s.authenticateSCRAM(conn, start, user, logger)
	}

	addr := clientHost(conn)
	switch {
	case errors.Is(err, auth.ErrInvalidCredentials):
		return auth.Identity{}, s.loginFailed(addr, user, method, s.invalidCredentialsReason(user, logger))
	case err != nil:
		if werr, ok := asWireError(err); ok && werr.code == codeProtocolViolation {
			s.authFailures.WithLabelValues(authFailureProtocolViolation).Inc()
			return auth.Identity{}, &loginError{
				wire:     werr,
				logAttrs: []any{"principal_id", user, "method", method, "auth_failure", authFailureProtocolViolation},
			}
		}
		return auth.Identity{}, err
	}
	s.throttle.succeeded(addr, user)
	logger.Debug("client authenticated", "principal_id", user, "access_key", identity.AccessKey, "method", method)
	return identity, nil
}

// loginFailed counts a failed login, waits the back-off delay of the
// client's address and principal, and returns the error for the client.
// Delaying the reply, and not the next attempt, keeps correct logins
// from ever waiting. The login is logged once, when the error is sent.
func (s *Server) loginFailed(addr, user, method, reason string) error {
	s.metrics.failedLogins.Inc()
	s.authFailures.WithLabelValues(reason).Inc()
	delay := s.throttle.failed(addr, user)
	if delay > 0 {
		timer := time.NewTimer(delay)
		select {
		case <-timer.C:
		case <-s.done:
			timer.Stop()
		}
		s.metrics.loginBackoff.Add(delay.Seconds())
	}
	return &loginError{
		wire:     fatalf(codeInvalidPassword, "password authentication failed for user %q", user),
		logAttrs: []any{"principal_id", user, "method", method, "auth_failure", reason, "backoff", delay},
	}
}

// invalidCredentialsReason returns, for the operator, the reason a login's
// credentials matched no key: an unknown principal, a principal whose keys
// have all expired, or a wrong secret key. Both catalog reads run whether
// or not the principal exists, so that the time this step adds does not
// reveal which principal IDs exist.
func (s *Server) invalidCredentialsReason(principalID string, logger *slog.Logger) string {
	var principalErr error
	var keys []catalog.APIKey
	err := s.cat.View(func(tx *catalog.Tx) error {
		_, principalErr = tx.Principal(principalID)
		var err error
		keys, err = tx.APIKeysOfPrincipal(principalID)
		return err
	})
	switch {
	case err != nil:
		logger.Warn("read the principal of a failed login failed", "principal_id", principalID, "error", err)
		return authFailureInvalidCredentials
	case errors.Is(principalErr, catalog.ErrNotFound):
		return authFailureUnknownPrincipal
	case principalErr != nil:
		logger.Warn("read the principal of a failed login failed", "principal_id", principalID, "error", principalErr)
		return authFailureInvalidCredentials
	}
	now := s.authn.Now()
	for _, key := range keys {
		if !key.Expired(now) {
			return authFailureInvalidCredentials
		}
	}
	if len(keys) > 0 {
		return authFailureExpiredKey
	}
	return authFailureInvalidCredentials
}

// rejectLogin counts a login rejected for reason, then sends werr to the
// client and logs it once.
func (s *Server) rejectLogin(conn net.Conn, logger *slog.Logger, reason string, werr *wireError) {
	s.authFailures.WithLabelValues(reason).Inc()
	s.reject(conn, logger.With("auth_failure", reason), werr)
}

// authenticateCleartext requests the secret key in clear and checks it
// against each of the principal's keys.
func (s *Server) authenticateCleartext(conn net.Conn, user string) (auth.Identity, error) {
	if err := writeMessages(conn, &pgproto3.AuthenticationCleartextPassword{}); err != nil {
		return auth.Identity{}, err
	}
	password, err := readPassword(conn)
	if err != nil {
		return auth.Identity{}, err
	}
	identity, err := s.authn.AuthenticatePassword(user, password)
	if err != nil && !errors.Is(err, auth.ErrInvalidCredentials) {
		s.cfg.Logger.Error("authentication error", "principal_id", user, "error", err)
		return auth.Identity{}, fatalf(codeSystemError, "could not check the password for user %q", user)
	}
	return identity, err
}

// readPassword reads one PasswordMessage and returns its password.
func readPassword(r io.Reader) (string, error) {
	body, err := readAuthMessage(r, "password", maxPasswordMessage)
	if err != nil {
		return "", err
	}
	var msg pgproto3.PasswordMessage
	if err := msg.Decode(body); err != nil {
		return "", fatalf(codeProtocolViolation, "invalid password packet: %v", err)
	}
	// The body is the password and its terminator, and nothing after it,
	// as PostgreSQL's recv_password_packet requires.
	if len(msg.Password)+1 != len(body) {
		return "", fatalf(codeProtocolViolation, "invalid password packet size")
	}
	if msg.Password == "" {
		return "", fatalf(codeInvalidPassword, "empty password returned by client")
	}
	return msg.Password, nil
}

// readAuthMessage reads one message of type 'p', the type of
// PasswordMessage, SASLInitialResponse and SASLResponse, and returns its
// body. kind names the expected message in errors; bodies longer than max
// bytes are rejected before they are read.
func readAuthMessage(r io.Reader, kind string, max int) ([]byte, error) {
	var header [5]byte
	if _, err := io.ReadFull(r, header[:]); err != nil {
		return nil, err
	}
	if header[0] != 'p' {
		return nil, fatalf(codeProtocolViolation, "expected %s response, got message type %q", kind, header[0])
	}
	length := binary.BigEndian.Uint32(header[1:])
	if length < 5 || length-4 > uint32(max) {
		return nil, fatalf(codeProtocolViolation, "invalid %s packet size: %d bytes (expected 5 to %d)", kind, length, max+4)
	}
	body := make([]byte, length-4)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, fmt.Errorf("read %s: %w", kind, err)
	}
	return body, nil
}

// clientHost returns the IP address of the connection's peer, without
// the port, as the key of the failed-login back-off.
func clientHost(conn net.Conn) string {
	addr := conn.RemoteAddr().String()
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}
