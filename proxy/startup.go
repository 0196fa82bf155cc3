package proxy

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Request codes that take the place of a protocol version in the first
// packet (PostgreSQL's pqcomm.h).
const (
	codeCancelRequest = 80877102
	codeSSLRequest    = 80877103
	codeGSSENCRequest = 80877104
)

// maxStartupPacket is PostgreSQL's MAX_STARTUP_PACKET_LENGTH; the server
// rejects longer startup packets the same way.
const maxStartupPacket = 10000

// protocolMajor and protocolMinor are the newest protocol version the proxy
// speaks. A client asking for a newer 3.x minor is answered with
// NegotiateProtocolVersion, as PostgreSQL 14 does.
const (
	protocolMajor = 3
	protocolMinor = 0
)

// tlsRecordHandshake is the first byte of a TLS ClientHello. PostgreSQL 17
// clients with sslnegotiation=direct open with it instead of SSLRequest.
// No startup packet starts with it, because its length word would then
// exceed maxStartupPacket.
const tlsRecordHandshake = 0x16

// startup is a decoded StartupMessage and what the negotiation learned.
type startup struct {
	params map[string]string
	tls    *tls.ConnectionState // nil for a plain-text connection
	// serverName is the TLS server name (SNI) the client sent, in lower
	// case, or empty.
	serverName string
}

// cancelRequest is a decoded CancelRequest.
type cancelRequest struct {
	pid    uint32
	secret []byte
}

// errDirectTLSWithoutALPN rejects a direct TLS connection that did not
// negotiate ALPN "postgresql". PostgreSQL 17 closes such a connection
// without a message, to keep other protocols from being tunnelled in.
var errDirectTLSWithoutALPN = errors.New("direct TLS connection without ALPN protocol postgresql")

// errDirectTLSDisabled rejects a direct TLS connection while TLS is off.
var errDirectTLSDisabled = errors.New("direct TLS connection while TLS is off")

// negotiate reads the client's first packets and returns either the
// StartupMessage or a CancelRequest. It accepts SSLRequest with TLS unless
// mode is TLSOff, starts TLS at once when the first byte is a TLS
// handshake record (PostgreSQL 17 direct TLS), and declines GSSENCRequest.
// conn is replaced by the TLS connection when TLS is negotiated.
func negotiate(conn *net.Conn, tlsConfig *tls.Config, mode TLSMode) (*startup, *cancelRequest, error) {
	var first [1]byte
	if _, err := io.ReadFull(*conn, first[:]); err != nil {
		return nil, nil, err
	}
	var tlsState *tls.ConnectionState
	var r io.Reader = io.MultiReader(bytes.NewReader(first[:]), *conn)
	if first[0] == tlsRecordHandshake {
		if mode == TLSOff {
			return nil, nil, errDirectTLSDisabled
		}
		tlsConn := tls.Server(&prefixConn{Conn: *conn, prefix: first[:]}, tlsConfig)
		if err := tlsConn.Handshake(); err != nil {
			return nil, nil, fmt.Errorf("TLS handshake: %w", err)
		}
		state := tlsConn.ConnectionState()
		if state.NegotiatedProtocol != alpnProtocol {
			return nil, nil, errDirectTLSWithoutALPN
		}
		tlsState = &state
		*conn = tlsConn
		r = tlsConn
	}

	// A client may send one SSLRequest and one GSSENCRequest. PostgreSQL
	// treats a repeated request as an unknown protocol version, which also
	// keeps a client from looping on 'N' until the handshake times out.
	var sslDone, gssDone bool
	for {
		packet, err := readStartupPacket(r)
		if err != nil {
			return nil, nil, err
		}
		code := binary.BigEndian.Uint32(packet)
		switch {
		case code == codeSSLRequest && tlsState != nil:
			return nil, nil, fatalf(codeProtocolViolation, "SSLRequest received on a connection that already uses TLS")
		case code == codeGSSENCRequest && tlsState != nil:
			return nil, nil, fatalf(codeProtocolViolation, "GSSENCRequest received on a connection that already uses TLS")
		case code == codeSSLRequest && !sslDone:
			sslDone = true
			if len(packet) != 4 {
				return nil, nil, fatalf(codeProtocolViolation, "invalid length of SSLRequest")
			}
			if mode == TLSOff {
				if _, err := (*conn).Write([]byte{'N'}); err != nil {
					return nil, nil, err
				}
				continue
			}
			if _, err := (*conn).Write([]byte{'S'}); err != nil {
				return nil, nil, err
			}
			tlsConn := tls.Server(*conn, tlsConfig)
			if err := tlsConn.Handshake(); err != nil {
				return nil, nil, fmt.Errorf("TLS handshake: %w", err)
			}
			state := tlsConn.ConnectionState()
			tlsState = &state
			*conn = tlsConn
			r = tlsConn
		case code == codeGSSENCRequest && !gssDone:
			gssDone = true
			if len(packet) != 4 {
				return nil, nil, fatalf(codeProtocolViolation, "invalid length of GSSENCRequest")
			}
			if _, err := (*conn).Write([]byte{'N'}); err != nil {
				return nil, nil, err
			}
		case code == codeCancelRequest:
			var msg pgproto3.CancelRequest
			if err := msg.Decode(packet); err != nil {
				return nil, nil, fatalf(codeProtocolViolation, "invalid CancelRequest: %v", err)
			}
			return nil, &cancelRequest{pid: msg.ProcessID, secret: msg.SecretKey}, nil
		default:
			params, err := decodeStartupMessage(*conn, packet)
			if err != nil {
				return nil, nil, err
			}
			start := &startup{params: params, tls: tlsState}
			if tlsState != nil {
				start.serverName = strings.ToLower(tlsState.ServerName)
			}
			return start, nil, nil
		}
	}
}

// prefixConn is a connection whose first bytes were already read: Read
// returns prefix before reading the connection.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// readStartupPacket reads one length-prefixed startup packet and returns
// its body, after the length word.
func readStartupPacket(r io.Reader) ([]byte, error) {
	var header [4]byte
	if _, err := io.ReadFull(r, header[:]); err != nil {
		return nil, err
	}
	length := binary.BigEndian.Uint32(header[:])
	if length < 8 || length > maxStartupPacket {
		return nil, fatalf(codeProtocolViolation, "invalid length of startup packet: %d bytes (expected 8 to %d)", length, maxStartupPacket)
	}
	body := make([]byte, length-4)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, fmt.Errorf("read startup packet: %w", err)
	}
	return body, nil
}

// decodeStartupMessage checks the protocol version and decodes the
// parameters. A 3.x minor newer than 3.0, or options named _pq_.*, get a
// NegotiateProtocolVersion listing what the proxy does not support.
func decodeStartupMessage(w io.Writer, packet []byte) (map[string]string, error) {
	version := binary.BigEndian.Uint32(packet)
	major, minor := version>>16, version&0xffff
	if major != protocolMajor {
		return nil, fatalf(codeFeatureNotSupported, "unsupported frontend protocol %d.%d: server supports %d.0 to %d.%d",
			major, minor, protocolMajor, protocolMajor, protocolMinor)
	}
	if packet[len(packet)-1] != 0 {
		return nil, fatalf(codeProtocolViolation, "invalid startup packet layout: expected terminator as last byte")
	}

	// An empty parameter list is valid; the missing user is reported later,
	// as PostgreSQL reports it. pgproto3 requires at least one pair.
	if len(packet) == 5 {
		return map[string]string{}, nil
	}

	// pgproto3 decodes versions it implements; the parameter layout is the
	// same in every 3.x, so the copy is decoded as 3.0.
	normalized := append([]byte(nil), packet...)
	binary.BigEndian.PutUint32(normalized, pgproto3.ProtocolVersion30)
	var msg pgproto3.StartupMessage
	if err := msg.Decode(normalized); err != nil {
		return nil, fatalf(codeProtocolViolation, "invalid startup packet layout: %v", err)
	}

	var unrecognized []string
	for name := range msg.Parameters {
		if strings.HasPrefix(name, "_pq_.") {
			unrecognized = append(unrecognized, name)
			delete(msg.Parameters, name)
		}
	}
	if minor > protocolMinor || len(unrecognized) > 0 {
		sort.Strings(unrecognized)
		reply := &pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: protocolMinor, UnrecognizedOptions: unrecognized}
		if err := writeMessages(w, reply); err != nil {
			return nil, err
		}
	}
	return msg.Parameters, nil
}

// writeMessages encodes messages and writes them in one call.
func writeMessages(w io.Writer, msgs ...pgproto3.BackendMessage) error {
	var buf []byte
	for _, msg := range msgs {
		var err error
		buf, err = msg.Encode(buf)
		if err != nil {
			return fmt.Errorf("encode %T: %w", msg, err)
		}
	}
	_, err := w.Write(buf)
	return err
}

// asWireError returns err as the error the client should see, if it is one.
func asWireError(err error) (*wireError, bool) {
	var we *wireError
	ok := errors.As(err, &we)
	return we, ok
}

// checkClientEncoding rejects a client_encoding other than UTF8, in the
// startup packet or in the options value, as the real service accepts
// only UTF8 and UNICODE. Names are compared the way PostgreSQL's
// clean_encoding_name does, ignoring case and every character that is not
// a letter or digit, so "utf-8" is UTF8 too.
func checkClientEncoding(params map[string]string, opts parsedOptions) *wireError {
	for _, value := range []string{params["client_encoding"], opts.settings["client_encoding"]} {
		if value == "" {
			continue
		}
		if name := cleanEncodingName(value); name != "utf8" && name != "unicode" {
			return fatalf(codeInvalidParameterValue, "invalid value for parameter \"client_encoding\": %q", value).
				withHint("Only UTF8 is supported: set client_encoding or PGCLIENTENCODING to UTF8.")
		}
	}
	return nil
}

func cleanEncodingName(name string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(name) {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' {
			b.WriteRune(c)
		}
	}
	return b.String()
}
