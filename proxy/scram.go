package proxy

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"net"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/xdg-go/scram"

	"github.com/sdblocal/sdblocal/auth"
)

// SASL mechanism names, in the order PostgreSQL lists them.
const (
	mechanismSCRAMPlus = "SCRAM-SHA-256-PLUS"
	mechanismSCRAM     = "SCRAM-SHA-256"
)

// maxSASLMessage caps SASLInitialResponse and SASLResponse bodies, as
// PostgreSQL's PG_MAX_AUTH_TOKEN_LENGTH does. Real SCRAM messages are
// under 200 bytes.
const maxSASLMessage = 65535

// authenticateSCRAM runs SCRAM-SHA-256 for user over the SASL messages of
// the PostgreSQL protocol. Over TLS it offers SCRAM-SHA-256-PLUS too, with
// tls-server-end-point channel binding to the served certificate. It
// returns the mechanism the client chose. Neither the messages nor the
// errors of xdg-go/scram are logged, as they contain the client's proof.
func (s *Server) authenticateSCRAM(conn net.Conn, start *startup, user string, logger *slog.Logger) (auth.Identity, string, error) {
	var binding scram.ChannelBinding
	mechanisms := []string{mechanismSCRAM}
	if start.tls != nil && s.binding.IsSupported() {
		binding = s.binding
		mechanisms = []string{mechanismSCRAMPlus, mechanismSCRAM}
	}
	method := strings.ToLower(mechanismSCRAM)
	if err := writeMessages(conn, &pgproto3.AuthenticationSASL{AuthMechanisms: mechanisms}); err != nil {
		return auth.Identity{}, method, err
	}

	body, err := readAuthMessage(conn, "SASL", maxSASLMessage)
	if err != nil {
		return auth.Identity{}, method, err
	}
	mechanism, clientFirst, werr := decodeSASLInitialResponse(body)
	if werr != nil {
		return auth.Identity{}, method, werr
	}
	if !slices.Contains(mechanisms, mechanism) {
		return auth.Identity{}, method, fatalf(codeProtocolViolation, "client selected an invalid SASL authentication mechanism")
	}
	method = strings.ToLower(mechanism)
	if werr := checkChannelBindingFlag(clientFirst, mechanism, binding.IsSupported()); werr != nil {
		return auth.Identity{}, method, werr
	}

	exchange, err := s.authn.NewSCRAMExchange(user, binding, s.cfg.MockAuthSecret)
	if err != nil {
		logger.Error("authentication error", "principal_id", user, "error", err)
		return auth.Identity{}, method, fatalf(codeSystemError, "could not check the password for user %q", user)
	}
	if n := exchange.Skipped(); n > 0 {
		// Logged once per principal and process, as every login of the
		// principal would repeat it.
		if _, seen := s.skippedKeysLogged.LoadOrStore(user, true); !seen {
			logger.Warn("API keys of the principal cannot log in with SCRAM because their salt differs from the newest key's; use --password-auth cleartext or recreate them",
				"principal_id", user, "keys", n)
		}
	}
	serverFirst, err := exchange.ServerFirst(string(clientFirst))
	if err != nil {
		return auth.Identity{}, method, scramWireError(err)
	}
	if err := writeMessages(conn, &pgproto3.AuthenticationSASLContinue{Data: []byte(serverFirst)}); err != nil {
		return auth.Identity{}, method, err
	}

	clientFinal, err := readAuthMessage(conn, "SASL", maxSASLMessage)
	if err != nil {
		return auth.Identity{}, method, err
	}
	serverFinal, identity, err := exchange.ServerFinal(string(clientFinal))
	if errors.Is(err, auth.ErrInvalidCredentials) {
		return auth.Identity{}, method, err
	}
	if err != nil {
		return auth.Identity{}, method, scramWireError(err)
	}
	if err := writeMessages(conn, &pgproto3.AuthenticationSASLFinal{Data: []byte(serverFinal)}); err != nil {
		return auth.Identity{}, method, err
	}
	return identity, method, nil
}

// decodeSASLInitialResponse splits a SASLInitialResponse body into the
// mechanism name and the client-first message. pgproto3's decoder does
// not check the data length, so the body is parsed here.
func decodeSASLInitialResponse(body []byte) (string, []byte, *wireError) {
	name, rest, ok := bytes.Cut(body, []byte{0})
	if !ok || len(rest) < 4 {
		return "", nil, fatalf(codeProtocolViolation, "invalid SASLInitialResponse message: expected a mechanism name and a data length")
	}
	length := int32(binary.BigEndian.Uint32(rest))
	data := rest[4:]
	if length < 0 || int(length) != len(data) {
		// A length of -1 means no data, which SCRAM cannot start without.
		return "", nil, fatalf(codeProtocolViolation, "invalid SASLInitialResponse message: data length %d does not match the %d bytes that follow", length, len(data))
	}
	return string(name), data, nil
}

// checkChannelBindingFlag checks the gs2 channel-binding flag that opens
// the client-first message against the mechanism the client chose, and
// reports a mismatch with PostgreSQL's messages. SCRAM-SHA-256-PLUS needs
// "p=tls-server-end-point" and SCRAM-SHA-256 must not use "p". The flag
// "y" means the client could bind but believes the server cannot, which is
// a downgrade when the server offered PLUS.
func checkChannelBindingFlag(clientFirst []byte, mechanism string, offeredPlus bool) *wireError {
	flag, _, _ := strings.Cut(string(clientFirst), ",")
	malformed := func(detail string) *wireError {
		e := fatalf(codeProtocolViolation, "malformed SCRAM message")
		e.detail = detail
		return e
	}
	switch {
	case flag == "":
		return malformed("The message is empty.")
	case mechanism == mechanismSCRAMPlus && !strings.HasPrefix(flag, "p="):
		return malformed("The client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not include channel binding data.")
	case mechanism == mechanismSCRAM && strings.HasPrefix(flag, "p"):
		return malformed("The client selected SCRAM-SHA-256 without channel binding, but the SCRAM message includes channel binding data.")
	case flag == "y" && offeredPlus:
		e := fatalf(codeProtocolViolation, "SCRAM channel binding negotiation error")
		e.detail = "The client supports SCRAM channel binding but thinks the server does not.  However, this server does support channel binding."
		return e
	case strings.HasPrefix(flag, "p=") && flag != "p="+string(scram.ChannelBindingTLSServerEndpoint):
		return fatalf(codeProtocolViolation, "unsupported SCRAM channel-binding type %q", truncate(strings.TrimPrefix(flag, "p="), 32))
	case flag != "n" && flag != "y" && !strings.HasPrefix(flag, "p="):
		return malformed(fmt.Sprintf("Unexpected channel-binding flag %q.", truncate(flag, 16)))
	}
	return nil
}

// scramWireError maps an error of auth.SCRAMExchange to the client's error.
func scramWireError(err error) error {
	switch {
	case errors.Is(err, auth.ErrSCRAMChannelBinding):
		return fatalf(codeProtocolViolation, "SCRAM channel binding check failed")
	case errors.Is(err, auth.ErrSCRAMMalformed):
		return fatalf(codeProtocolViolation, "malformed SCRAM message")
	}
	return fatalf(codeSystemError, "SCRAM authentication failed: %v", err)
}

// serverEndPointBinding returns the tls-server-end-point channel binding
// of cert (RFC 5929 section 4.1): the hash of the DER certificate, with
// the hash of its signature algorithm, and SHA-256 in place of MD5 and
// SHA-1. The binding is undefined for other algorithms, such as Ed25519.
func serverEndPointBinding(cert tls.Certificate) (scram.ChannelBinding, error) {
	leaf := cert.Leaf
	if leaf == nil {
		if len(cert.Certificate) == 0 {
			return scram.ChannelBinding{}, errors.New("no certificate")
		}
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return scram.ChannelBinding{}, fmt.Errorf("parse certificate: %w", err)
		}
	}
	var h hash.Hash
	switch leaf.SignatureAlgorithm {
	case x509.MD5WithRSA, x509.SHA1WithRSA, x509.ECDSAWithSHA1, x509.DSAWithSHA1,
		x509.SHA256WithRSA, x509.SHA256WithRSAPSS, x509.ECDSAWithSHA256, x509.DSAWithSHA256:
		h = sha256.New()
	case x509.SHA384WithRSA, x509.SHA384WithRSAPSS, x509.ECDSAWithSHA384:
		h = sha512.New384()
	case x509.SHA512WithRSA, x509.SHA512WithRSAPSS, x509.ECDSAWithSHA512:
		h = sha512.New()
	default:
		return scram.ChannelBinding{}, fmt.Errorf("tls-server-end-point is undefined for signature algorithm %v", leaf.SignatureAlgorithm)
	}
	h.Write(leaf.Raw)
	return scram.ChannelBinding{Type: scram.ChannelBindingTLSServerEndpoint, Data: h.Sum(nil)}, nil
}

// truncate shortens s to at most n bytes for an error message.
func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
