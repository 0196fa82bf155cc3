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

	"github.com/sdblocal/sdblocal/auth"
)

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
		return auth.Identity{}, s.loginFailed(addr, user, method, logger)
	case err != nil:
		return auth.Identity{}, err
	}
	s.throttle.succeeded(addr, user)
	logger.Debug("client authenticated", "principal_id", user, "access_key", identity.AccessKey, "method", method)
	return identity, nil
}

// loginFailed counts a failed login, waits the back-off delay of the
// client's address and principal, and returns the error for the client.
// Delaying the reply, and not the next attempt, keeps correct logins
// from ever waiting.
func (s *Server) loginFailed(addr, user, method string, logger *slog.Logger) error {
	s.metrics.failedLogins.Inc()
	delay := s.throttle.failed(addr, user)
	logger.Info("login failed", "principal_id", user, "method", method, "backoff", delay)
	if delay > 0 {
		timer := time.NewTimer(delay)
		select {
		case <-timer.C:
		case <-s.done:
			timer.Stop()
		}
		s.metrics.loginBackoff.Add(delay.Seconds())
	}
	return fatalf(codeInvalidPassword, "password authentication failed for user %q", user)
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
