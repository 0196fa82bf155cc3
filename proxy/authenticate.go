package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/sdblocal/sdblocal/auth"
)

// maxPasswordMessage caps the PasswordMessage body. A secret key is a
// 36-character UUID; PostgreSQL itself reads at most 1000 bytes here.
const maxPasswordMessage = 1000

// authenticate runs the cleartext password exchange: the user name is a
// principal ID and the password one of its secret keys. The password is
// accepted only over TLS, unless the proxy runs without TLS at all.
func (s *Server) authenticate(conn net.Conn, start *startup, logger *slog.Logger) (auth.Identity, error) {
	user := start.params["user"]
	if user == "" {
		return auth.Identity{}, fatalf(codeInvalidAuthorization, "no PostgreSQL user name specified in startup packet")
	}
	if replication, ok := start.params["replication"]; ok && replication != "false" && replication != "0" && replication != "off" && replication != "no" {
		return auth.Identity{}, fatalf(codeFeatureNotSupported, "replication connections are not supported")
	}
	if start.tls == nil && s.cfg.TLS != nil {
		return auth.Identity{}, fatalf(codeInvalidAuthorization, "connection without TLS rejected: the password is sent in clear text").
			withHint("Connect with sslmode=require.")
	}

	if err := writeMessages(conn, &pgproto3.AuthenticationCleartextPassword{}); err != nil {
		return auth.Identity{}, err
	}
	password, err := readPassword(conn)
	if err != nil {
		return auth.Identity{}, err
	}

	identity, err := s.authn.AuthenticatePassword(user, password)
	if errors.Is(err, auth.ErrInvalidCredentials) {
		s.metrics.failedLogins.Inc()
		return auth.Identity{}, fatalf(codeInvalidPassword, "password authentication failed for user %q", user)
	}
	if err != nil {
		logger.Error("authentication error", "principal_id", user, "error", err)
		return auth.Identity{}, fatalf(codeSystemError, "could not check the password for user %q", user)
	}
	return identity, nil
}

// readPassword reads one PasswordMessage and returns its password.
func readPassword(r io.Reader) (string, error) {
	var header [5]byte
	if _, err := io.ReadFull(r, header[:]); err != nil {
		return "", err
	}
	if header[0] != 'p' {
		return "", fatalf(codeProtocolViolation, "expected password response, got message type %q", header[0])
	}
	length := binary.BigEndian.Uint32(header[1:])
	if length < 5 || length-4 > maxPasswordMessage {
		return "", fatalf(codeProtocolViolation, "invalid password packet size: %d bytes (expected 5 to %d)", length, maxPasswordMessage+4)
	}
	body := make([]byte, length-4)
	if _, err := io.ReadFull(r, body); err != nil {
		return "", fmt.Errorf("read password: %w", err)
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
