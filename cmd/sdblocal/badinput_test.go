package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/xdg-go/scram"

	"github.com/sdblocal/sdblocal/auth"
	"github.com/sdblocal/sdblocal/catalog"
)

// These tests send the proxy malformed, stalled or unauthorised connections
// over raw TCP. Each one checks that the client gets one FATAL
// ErrorResponse with the PostgreSQL SQLSTATE and message, that the proxy
// then closes the connection, and that the server still serves a good
// client afterwards without leaking goroutines.

// Values of the version word that opens the first packet, as in
// proxy/startup.go.
const (
	wireSSLRequestCode    = 80877103
	wireCancelRequestCode = 80877102
	wireProtocol30        = 3 << 16
)

// wireIOTimeout bounds every read and write of a raw test connection, so a
// proxy that never responds fails the test instead of hanging it.
const wireIOTimeout = 10 * time.Second

// wireClient is a raw client connection to the proxy, read with pgproto3.
type wireClient struct {
	t    *testing.T
	conn net.Conn
	fe   *pgproto3.Frontend
	// authRequest is the authentication request the proxy sent after the
	// startup packet: AuthenticationSASL or AuthenticationCleartextPassword.
	authRequest pgproto3.BackendMessage
	// pending is a message read ahead by sendPassword, returned by the
	// next receive.
	pending pgproto3.BackendMessage
	// scramClientFinal is the last SCRAM client-final message sent, with
	// the client's proof.
	scramClientFinal string
}

func dialWire(t *testing.T, s *testServer) *wireClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.pgPort), 5*time.Second)
	if err != nil {
		t.Fatalf("dial proxy: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(wireIOTimeout))
	return &wireClient{t: t, conn: conn, fe: pgproto3.NewFrontend(conn, conn)}
}

// dialWireTLS dials the proxy and negotiates TLS without verifying the
// certificate.
func dialWireTLS(t *testing.T, s *testServer) *wireClient {
	t.Helper()
	c := dialWire(t, s)
	c.startTLS(&tls.Config{InsecureSkipVerify: true})
	return c
}

func (c *wireClient) write(raw []byte) {
	c.t.Helper()
	if _, err := c.conn.Write(raw); err != nil {
		c.t.Fatalf("write %d bytes: %v", len(raw), err)
	}
}

// startTLS sends SSLRequest, expects 'S' and runs the TLS handshake.
func (c *wireClient) startTLS(config *tls.Config) {
	c.t.Helper()
	request := binary.BigEndian.AppendUint32(nil, 8)
	request = binary.BigEndian.AppendUint32(request, wireSSLRequestCode)
	c.write(request)
	var reply [1]byte
	if _, err := c.conn.Read(reply[:]); err != nil {
		c.t.Fatalf("read SSLRequest reply: %v", err)
	}
	if reply[0] != 'S' {
		c.t.Fatalf("SSLRequest reply = %q, want 'S'", reply[0])
	}
	tlsConn := tls.Client(c.conn, config)
	if err := tlsConn.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake: %v", err)
	}
	c.conn = tlsConn
	c.fe = pgproto3.NewFrontend(tlsConn, tlsConn)
}

func (c *wireClient) receive() pgproto3.BackendMessage {
	c.t.Helper()
	if msg := c.pending; msg != nil {
		c.pending = nil
		return msg
	}
	msg, err := c.fe.Receive()
	if err != nil {
		c.t.Fatalf("receive: %v", err)
	}
	return msg
}

// login sends a 3.0 StartupMessage with params and expects the proxy to
// ask for the password, with SCRAM or in clear text.
func (c *wireClient) login(params ...string) {
	c.t.Helper()
	c.write(wireStartupPacket(wireProtocol30, params...))
	c.expectPasswordRequest()
}

func (c *wireClient) expectPasswordRequest() {
	c.t.Helper()
	msg := c.receive()
	switch msg.(type) {
	case *pgproto3.AuthenticationSASL, *pgproto3.AuthenticationCleartextPassword:
		c.authRequest = msg
	default:
		c.t.Fatalf("after the startup packet got %T %+v, want AuthenticationSASL or AuthenticationCleartextPassword", msg, msg)
	}
}

// sendPassword replies to the proxy's authentication request with password:
// a PasswordMessage, or a SCRAM-SHA-256 exchange without channel binding.
// An ErrorResponse during the exchange is left for the next receive.
func (c *wireClient) sendPassword(password string) {
	c.t.Helper()
	if _, ok := c.authRequest.(*pgproto3.AuthenticationSASL); ok {
		c.scramLogin(password)
		return
	}
	c.fe.Send(&pgproto3.PasswordMessage{Password: password})
	if err := c.fe.Flush(); err != nil {
		c.t.Fatalf("send password: %v", err)
	}
}

func (c *wireClient) scramLogin(password string) {
	c.t.Helper()
	client, err := scram.SHA256.NewClient("", password, "")
	if err != nil {
		c.t.Fatal(err)
	}
	conv := client.NewConversation()
	clientFirst, err := conv.Step("")
	if err != nil {
		c.t.Fatal(err)
	}

	c.fe.Send(&pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte(clientFirst)})
	if err := c.fe.Flush(); err != nil {
		c.t.Fatalf("send SASLInitialResponse: %v", err)
	}
	msg := c.receive()
	serverFirst, ok := msg.(*pgproto3.AuthenticationSASLContinue)
	if !ok {
		c.pending = msg
		return
	}
	clientFinal, err := conv.Step(string(serverFirst.Data))
	if err != nil {
		c.t.Fatalf("SCRAM server-first message: %v", err)
	}

	c.scramClientFinal = clientFinal
	c.fe.Send(&pgproto3.SASLResponse{Data: []byte(clientFinal)})
	if err := c.fe.Flush(); err != nil {
		c.t.Fatalf("send SASLResponse: %v", err)
	}
	msg = c.receive()
	serverFinal, ok := msg.(*pgproto3.AuthenticationSASLFinal)
	if !ok {
		c.pending = msg
		return
	}
	if _, err := conv.Step(string(serverFinal.Data)); err != nil || !conv.Valid() {
		c.t.Fatalf("SCRAM server-final message rejected: %v", err)
	}
}

// expectFatal reads the next message, checks that it is a FATAL
// ErrorResponse with code and a message equal to message (or starting with
// it when prefix is set), and then checks that the proxy closes the
// connection. It returns the error for further checks.
func (c *wireClient) expectFatal(code, message string, prefix bool) pgproto3.ErrorResponse {
	c.t.Helper()
	msg := c.receive()
	errMsg, ok := msg.(*pgproto3.ErrorResponse)
	if !ok {
		c.t.Fatalf("got %T %+v, want ErrorResponse %s %q", msg, msg, code, message)
	}
	got := *errMsg
	if got.Severity != "FATAL" {
		c.t.Errorf("severity = %q, want FATAL (message %q)", got.Severity, got.Message)
	}
	if got.SeverityUnlocalized != "FATAL" {
		c.t.Errorf("unlocalized severity = %q, want FATAL", got.SeverityUnlocalized)
	}
	if got.Code != code {
		c.t.Errorf("SQLSTATE = %s, want %s (message %q)", got.Code, code, got.Message)
	}
	if prefix && !strings.HasPrefix(got.Message, message) {
		c.t.Errorf("message = %q, want it to start with %q", got.Message, message)
	}
	if !prefix && got.Message != message {
		c.t.Errorf("message = %q, want %q", got.Message, message)
	}
	c.expectClosed()
	return got
}

// expectClosed checks that the proxy sends nothing more and closes the
// connection within 5 seconds.
func (c *wireClient) expectClosed() {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	msg, err := c.fe.Receive()
	if err == nil {
		c.t.Fatalf("got %T %+v, want the connection closed", msg, msg)
	}
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		c.t.Fatalf("connection still open 5s after the error: %v", err)
	}
}

// wireStartupPacket returns a well-formed startup packet: the length, the
// version, the name and value strings each ending in a zero byte, and the
// final zero byte.
func wireStartupPacket(version uint32, params ...string) []byte {
	body := binary.BigEndian.AppendUint32(nil, version)
	for _, p := range params {
		body = append(body, p...)
		body = append(body, 0)
	}
	body = append(body, 0)
	return wireLengthPrefixed(body)
}

// wireLengthPrefixed prepends the 4-byte length word, which counts itself.
func wireLengthPrefixed(body []byte) []byte {
	packet := binary.BigEndian.AppendUint32(nil, uint32(len(body)+4))
	return append(packet, body...)
}

func wireProtocol(major, minor uint32) uint32 { return major<<16 | minor }

func wireWords(words ...uint32) []byte {
	var out []byte
	for _, w := range words {
		out = binary.BigEndian.AppendUint32(out, w)
	}
	return out
}

// psqlURL returns a libpq URL for user and password on the proxy. An empty
// databaseID leaves out the routing option.
func psqlURL(s *testServer, user, password, dbName, databaseID string) string {
	u := url.URL{
		Scheme: "postgresql",
		User:   url.UserPassword(user, password),
		Host:   fmt.Sprintf("%s:%d", s.pgHost, s.pgPort),
		Path:   "/" + dbName,
	}
	query := url.Values{"sslmode": {"require"}}
	if databaseID != "" {
		query.Set("options", "databaseid="+databaseID)
	}
	u.RawQuery = query.Encode()
	return u.String()
}

// runPsql runs one psql command on connString, bounded to 60 seconds, and
// returns its combined output.
func runPsql(connString, sql string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql, connString)
	cmd.Env = append(serverEnv(), "PGCONNECT_TIMEOUT=30")
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func goroutineCount(t *testing.T, s *testServer) float64 {
	t.Helper()
	n, ok := s.metric(t, "go_goroutines")
	if !ok {
		t.Fatal("no go_goroutines metric on /metrics")
	}
	return n
}

// expectGoroutinesSettle polls go_goroutines until it is at most 5 above
// baseline, and fails after 10 seconds.
func expectGoroutinesSettle(t *testing.T, s *testServer, baseline float64) {
	t.Helper()
	limit := baseline + 5
	deadline := time.Now().Add(10 * time.Second)
	for {
		current := goroutineCount(t, s)
		if current <= limit {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("go_goroutines = %v 10s after the rejected connections closed, want at most %v (baseline %v + 5)", current, limit, baseline)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// expectStillServing runs a query as the owner with psql.
func expectStillServing(t *testing.T, s *testServer, db string, databaseID string) {
	t.Helper()
	out, err := runPsql(psqlURL(s, s.creds.PrincipalID, s.creds.SecretKey, db, databaseID), "SELECT 40 + 2")
	if err != nil {
		t.Fatalf("psql after the rejected connections: %v\n%s", err, out)
	}
	if out != "42" {
		t.Errorf("psql after the rejected connections printed %q, want 42", out)
	}
}

func TestProxyMalformedStartup(t *testing.T) {
	s := startServer(t)
	db := s.createDatabase(t, "startup", 0, 1)
	baseline := goroutineCount(t, s)

	cases := []struct {
		name    string
		tls     bool
		packet  []byte
		code    string
		message string
		prefix  bool
	}{
		{
			name:    "length 4",
			packet:  wireWords(4),
			code:    "08P01",
			message: "invalid length of startup packet: 4 bytes (expected 8 to 10000)",
		},
		{
			name:    "length 7",
			packet:  append(wireWords(7), 0, 0, 0),
			code:    "08P01",
			message: "invalid length of startup packet: 7 bytes (expected 8 to 10000)",
		},
		{
			// Only the length word is sent: the proxy must reject it
			// before it waits for 10001 bytes.
			name:    "length 10001",
			packet:  wireWords(10001),
			code:    "08P01",
			message: "invalid length of startup packet: 10001 bytes (expected 8 to 10000)",
		},
		{
			name:    "length 2^32-1",
			packet:  wireWords(0xffffffff),
			code:    "08P01",
			message: "invalid length of startup packet: 4294967295 bytes (expected 8 to 10000)",
		},
		{
			name:    "last byte not zero",
			packet:  wireLengthPrefixed(append(wireWords(wireProtocol30), "user\x00x"...)),
			code:    "08P01",
			message: "invalid startup packet layout: expected terminator as last byte",
		},
		{
			// The value's zero byte ends the packet, so the last byte is
			// zero but the list terminator is missing.
			name:    "missing list terminator",
			packet:  wireLengthPrefixed(append(wireWords(wireProtocol30), "user\x00x\x00"...)),
			code:    "08P01",
			message: "invalid startup packet layout",
			prefix:  true,
		},
		{
			name:    "name without value",
			packet:  wireLengthPrefixed(append(wireWords(wireProtocol30), "user\x00x\x00database\x00\x00"...)),
			code:    "08P01",
			message: "invalid startup packet layout",
			prefix:  true,
		},
		{
			name:    "no user",
			packet:  wireStartupPacket(wireProtocol30, "database", "startup"),
			code:    "28000",
			message: "no PostgreSQL user name specified in startup packet",
		},
		{
			name:    "empty user",
			packet:  wireStartupPacket(wireProtocol30, "user", ""),
			code:    "28000",
			message: "no PostgreSQL user name specified in startup packet",
		},
		{
			// PostgreSQL 14.23, tried on a local server, accepts a
			// parameter list that is only the terminator and then
			// rejects the missing user.
			name:    "empty parameter list",
			packet:  wireStartupPacket(wireProtocol30),
			code:    "28000",
			message: "no PostgreSQL user name specified in startup packet",
		},
		{
			name:    "protocol 2.0",
			packet:  wireStartupPacket(wireProtocol(2, 0), "user", s.creds.PrincipalID),
			code:    "0A000",
			message: "unsupported frontend protocol 2.0: server supports 3.0 to 3.0",
		},
		{
			name:    "protocol 4.0",
			packet:  wireStartupPacket(wireProtocol(4, 0), "user", s.creds.PrincipalID),
			code:    "0A000",
			message: "unsupported frontend protocol 4.0: server supports 3.0 to 3.0",
		},
		{
			// 80877105 is in the request-code range (major 1234) but is
			// none of the requests the proxy handles.
			name:    "unknown request code",
			packet:  wireLengthPrefixed(wireWords(80877105)),
			code:    "0A000",
			message: "unsupported frontend protocol 1234.5681: server supports 3.0 to 3.0",
		},
		{
			name:    "SSLRequest of length 12",
			packet:  wireLengthPrefixed(wireWords(wireSSLRequestCode, 0)),
			code:    "08P01",
			message: "invalid length of SSLRequest",
		},
		{
			name:    "SSLRequest inside TLS",
			tls:     true,
			packet:  wireLengthPrefixed(wireWords(wireSSLRequestCode)),
			code:    "08P01",
			message: "SSLRequest received on a connection that already uses TLS",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialWire(t, s)
			if tc.tls {
				c.startTLS(&tls.Config{InsecureSkipVerify: true})
			}
			c.write(tc.packet)
			c.expectFatal(tc.code, tc.message, tc.prefix)
		})
	}

	expectGoroutinesSettle(t, s, baseline)
	expectStillServing(t, s, db.Name, db.ID)
}

func TestProxyProtocolNegotiation(t *testing.T) {
	s := startServer(t)
	db := s.createDatabase(t, "negotiate", 0, 1)

	caPEM, err := os.ReadFile(filepath.Join(s.dataDir, "tls", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("tls/ca.crt contains no PEM certificate")
	}
	verifyFull := &tls.Config{RootCAs: roots, ServerName: "localhost"}
	noVerify := &tls.Config{InsecureSkipVerify: true}

	routing := []string{"user", s.creds.PrincipalID, "database", db.Name, "options", "-c databaseid=" + db.ID}
	cases := []struct {
		name         string
		tls          *tls.Config
		version      uint32
		extra        []string
		unrecognized []string
	}{
		{name: "protocol 3.5", tls: noVerify, version: wireProtocol(3, 5)},
		{name: "protocol 3.0 with _pq_ option", tls: noVerify, version: wireProtocol30, extra: []string{"_pq_.foo", "bar"}, unrecognized: []string{"_pq_.foo"}},
		{name: "protocol 3.5 with _pq_ options verify-full", tls: verifyFull, version: wireProtocol(3, 5), extra: []string{"_pq_.zeta", "1", "_pq_.alpha", "2"}, unrecognized: []string{"_pq_.alpha", "_pq_.zeta"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialWire(t, s)
			c.startTLS(tc.tls)
			c.write(wireStartupPacket(tc.version, append(append([]string{}, routing...), tc.extra...)...))

			msg := c.receive()
			negotiate, ok := msg.(*pgproto3.NegotiateProtocolVersion)
			if !ok {
				t.Fatalf("first reply %T %+v, want NegotiateProtocolVersion", msg, msg)
			}
			if negotiate.NewestMinorProtocol != 0 {
				t.Errorf("NegotiateProtocolVersion newest minor = %d, want 0", negotiate.NewestMinorProtocol)
			}
			if fmt.Sprint(negotiate.UnrecognizedOptions) != fmt.Sprint(tc.unrecognized) {
				t.Errorf("NegotiateProtocolVersion unrecognized options = %q, want %q", negotiate.UnrecognizedOptions, tc.unrecognized)
			}

			c.expectPasswordRequest()
			c.sendPassword(s.creds.SecretKey)
			sawKeyData := false
		login:
			for {
				switch m := c.receive().(type) {
				case *pgproto3.AuthenticationOk, *pgproto3.ParameterStatus:
				case *pgproto3.BackendKeyData:
					sawKeyData = true
				case *pgproto3.ReadyForQuery:
					break login
				default:
					t.Fatalf("during login got %T %+v", m, m)
				}
			}
			if !sawKeyData {
				t.Error("login finished without BackendKeyData")
			}

			c.fe.SendQuery(&pgproto3.Query{String: "SELECT 1"})
			if err := c.fe.Flush(); err != nil {
				t.Fatal(err)
			}
			var rows []string
			var tag string
		query:
			for {
				switch m := c.receive().(type) {
				case *pgproto3.RowDescription:
				case *pgproto3.DataRow:
					rows = append(rows, string(m.Values[0]))
				case *pgproto3.CommandComplete:
					tag = string(m.CommandTag)
				case *pgproto3.ReadyForQuery:
					break query
				default:
					t.Fatalf("during SELECT 1 got %T %+v", m, m)
				}
			}
			if fmt.Sprint(rows) != "[1]" {
				t.Errorf("SELECT 1 rows = %q, want [1]", rows)
			}
			if tag != "SELECT 1" {
				t.Errorf("SELECT 1 command tag = %q, want SELECT 1", tag)
			}

			c.fe.Send(&pgproto3.Terminate{})
			if err := c.fe.Flush(); err != nil {
				t.Fatal(err)
			}
			c.expectClosed()
		})
	}
}

func TestProxyHandshakeTimeout(t *testing.T) {
	const timeout = time.Second
	s := startServer(t, "--handshake-timeout", timeout.String())
	db := s.createDatabase(t, "stall", 0, 1)
	baseline := goroutineCount(t, s)
	const message = "timed out after 1s waiting for the startup packet or password"

	cases := []struct {
		name string
		// stall sends what the client sends before it stops.
		stall func(c *wireClient)
		// closeOnly is set where the client cannot read the error, because
		// the proxy writes it in clear text while the client expects a
		// TLS handshake.
		closeOnly bool
	}{
		{name: "silent", stall: func(c *wireClient) {}},
		{name: "partial length word", stall: func(c *wireClient) { c.write([]byte{0, 0}) }},
		{name: "partial startup packet", stall: func(c *wireClient) {
			packet := wireStartupPacket(wireProtocol30, "user", s.creds.PrincipalID)
			c.write(packet[:len(packet)/2])
		}},
		{name: "after SSLRequest", closeOnly: true, stall: func(c *wireClient) {
			c.write(wireLengthPrefixed(wireWords(wireSSLRequestCode)))
			var reply [1]byte
			if _, err := c.conn.Read(reply[:]); err != nil || reply[0] != 'S' {
				c.t.Fatalf("SSLRequest reply = %q (error %v), want 'S'", reply[0], err)
			}
		}},
		{name: "after password request", stall: func(c *wireClient) {
			c.startTLS(&tls.Config{InsecureSkipVerify: true})
			c.login("user", s.creds.PrincipalID, "database", db.Name)
		}},
	}
	// The parent subtest waits for the parallel stalls, which share one
	// handshake timeout's worth of waiting.
	t.Run("stalls", func(t *testing.T) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				c := dialWire(t, s)
				dialed := time.Now()
				tc.stall(c)

				if tc.closeOnly {
					_ = c.conn.SetReadDeadline(time.Now().Add(timeout + 4*time.Second))
					buf := make([]byte, 512)
					var err error
					for err == nil {
						_, err = c.conn.Read(buf)
					}
					if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
						t.Fatalf("connection still open %s after the handshake timeout", 4*time.Second)
					}
				} else {
					_ = c.conn.SetReadDeadline(time.Now().Add(timeout + 4*time.Second))
					c.expectFatal("08P01", message, false)
				}

				elapsed := time.Since(dialed)
				if elapsed < timeout-50*time.Millisecond {
					t.Errorf("connection closed %s after dial, before the %s handshake timeout", elapsed, timeout)
				}
				if elapsed > timeout+4*time.Second {
					t.Errorf("connection closed %s after dial, want within 4s of the %s handshake timeout", elapsed, timeout)
				}
			})
		}
	})

	rejected, _ := s.metric(t, "sdblocal_proxy_rejected_connections_total", `reason="handshake_timeout"`)
	if int(rejected) != len(cases) {
		t.Errorf("sdblocal_proxy_rejected_connections_total{reason=\"handshake_timeout\"} = %v, want %d", rejected, len(cases))
	}
	expectGoroutinesSettle(t, s, baseline)
	expectStillServing(t, s, db.Name, db.ID)
}

// TestProxyBadLogin sends malformed and wrong cleartext passwords, with the
// proxy asking TLS clients for the cleartext password. Malformed SCRAM
// messages are in wireauth_test.go.
func TestProxyBadLogin(t *testing.T) {
	s := startServer(t, "--password-auth", "cleartext")
	db := s.createDatabase(t, "login", 0, 1)
	baseline := goroutineCount(t, s)
	owner := s.creds.PrincipalID
	unknown := uuid.NewString()

	passwordHeader := func(length uint32) []byte {
		return append([]byte{'p'}, wireWords(length)...)
	}
	// A 1000-byte body (999 bytes and the zero byte) is the largest the
	// proxy accepts (maxPasswordMessage in proxy/authenticate.go).
	longest := append(passwordHeader(1004), strings.Repeat("x", 999)+"\x00"...)
	query := append([]byte{'Q'}, wireWords(4+9)...)
	query = append(query, "SELECT 1\x00"...)

	cases := []struct {
		name string
		tls  bool
		user string
		// reply is sent after AuthenticationCleartextPassword; nil means
		// the proxy must reject the startup packet itself.
		reply       []byte
		code        string
		message     string
		prefix      bool
		hint        string
		failedLogin bool
	}{
		{
			name: "query instead of password", tls: true, user: owner, reply: query,
			code: "08P01", message: `expected password response, got message type 'Q'`,
		},
		{
			name: "password length 1005", tls: true, user: owner, reply: passwordHeader(1005),
			code: "08P01", message: "invalid password packet size: 1005 bytes (expected 5 to 1004)",
		},
		{
			name: "password length 2^32-1", tls: true, user: owner, reply: passwordHeader(0xffffffff),
			code: "08P01", message: "invalid password packet size: 4294967295 bytes (expected 5 to 1004)",
		},
		{
			name: "password length 4", tls: true, user: owner, reply: passwordHeader(4),
			code: "08P01", message: "invalid password packet size: 4 bytes (expected 5 to 1004)",
		},
		{
			name: "password length 1004", tls: true, user: owner, reply: longest,
			code: "28P01", message: fmt.Sprintf("password authentication failed for user %q", owner), failedLogin: true,
		},
		{
			name: "empty password", tls: true, user: owner, reply: append(passwordHeader(5), 0),
			code: "28P01", message: "empty password returned by client",
		},
		{
			name: "password without terminator", tls: true, user: owner, reply: append(passwordHeader(8), "abcd"...),
			code: "08P01", message: "invalid password packet: ", prefix: true,
		},
		{
			name: "wrong secret key", tls: true, user: owner, reply: wirePassword(auth.NewSecretKey()),
			code: "28P01", message: fmt.Sprintf("password authentication failed for user %q", owner), failedLogin: true,
		},
		{
			name: "unknown principal", tls: true, user: unknown, reply: wirePassword(s.creds.SecretKey),
			code: "28P01", message: fmt.Sprintf("password authentication failed for user %q", unknown), failedLogin: true,
		},
		{
			name: "user not a UUID", tls: true, user: "postgres", reply: wirePassword(s.creds.SecretKey),
			code: "28P01", message: `password authentication failed for user "postgres"`, failedLogin: true,
		},
		{
			name: "without TLS", tls: false, user: owner,
			code: "28000", message: "connection without TLS rejected: this server requires TLS",
			hint: "Connect with sslmode=require.",
		},
	}
	wantFailedLogins := 0
	for _, tc := range cases {
		if tc.failedLogin {
			wantFailedLogins++
		}
		t.Run(tc.name, func(t *testing.T) {
			c := dialWire(t, s)
			if tc.tls {
				c.startTLS(&tls.Config{InsecureSkipVerify: true})
			}
			params := []string{"user", tc.user, "database", db.Name, "options", "-c databaseid=" + db.ID}
			if tc.reply == nil {
				c.write(wireStartupPacket(wireProtocol30, params...))
			} else {
				c.login(params...)
				c.write(tc.reply)
			}
			got := c.expectFatal(tc.code, tc.message, tc.prefix)
			if got.Hint != tc.hint {
				t.Errorf("hint = %q, want %q", got.Hint, tc.hint)
			}
		})
	}

	failed, _ := s.metric(t, "sdblocal_proxy_failed_logins_total")
	if int(failed) != wantFailedLogins {
		t.Errorf("sdblocal_proxy_failed_logins_total = %v, want %d", failed, wantFailedLogins)
	}

	t.Run("psql wrong password", func(t *testing.T) {
		out, err := runPsql(psqlURL(s, owner, auth.NewSecretKey(), db.Name, db.ID), "SELECT 1")
		if err == nil {
			t.Fatalf("psql with a wrong password succeeded:\n%s", out)
		}
		if exitErr, ok := errors.AsType[*exec.ExitError](err); !ok || exitErr.ExitCode() == 0 {
			t.Errorf("psql with a wrong password: %v, want a non-zero exit", err)
		}
		want := fmt.Sprintf("FATAL:  password authentication failed for user %q", owner)
		if !strings.Contains(out, want) {
			t.Errorf("psql output %q does not contain %q", out, want)
		}
	})

	expectGoroutinesSettle(t, s, baseline)
	expectStillServing(t, s, db.Name, db.ID)
}

// wirePassword encodes a PasswordMessage.
func wirePassword(password string) []byte {
	raw, err := (&pgproto3.PasswordMessage{Password: password}).Encode(nil)
	if err != nil {
		panic(err)
	}
	return raw
}

func TestProxyUnknownDatabase(t *testing.T) {
	s := startServer(t)
	db := s.createDatabase(t, "known", 0, 1)
	baseline := goroutineCount(t, s)
	missing := uuid.NewString()
	nameHint := "Pass the database ID with options=databaseid=<id>, as in the endpoint the API returns."

	cases := []struct {
		name     string
		database string
		options  string
		// beforePassword is set for errors the proxy reports right after
		// the startup packet, because they need no credentials to find.
		beforePassword bool
		code           string
		message        string
		hint           string
	}{
		{
			name: "unknown ID with -c", database: db.Name, options: "-c databaseid=" + missing,
			code: "3D000", message: fmt.Sprintf("database %q does not exist", missing),
		},
		{
			name: "unknown ID without -c", database: db.Name, options: "databaseid=" + missing,
			code: "3D000", message: fmt.Sprintf("database %q does not exist", missing),
		},
		{
			name: "unknown upper-case ID", database: db.Name, options: "-c databaseid=" + strings.ToUpper(missing),
			code: "3D000", message: fmt.Sprintf("database %q does not exist", missing),
		},
		{
			name: "ID not a UUID", database: db.Name, options: "-c databaseid=known", beforePassword: true,
			code: "22023", message: `invalid value for option databaseid: "known" is not a database ID (a UUID)`,
		},
		{
			name: "ID in braces", database: db.Name, options: "-c databaseid={" + db.ID + "}", beforePassword: true,
			code: "22023", message: fmt.Sprintf("invalid value for option databaseid: %q is not a database ID (a UUID)", "{"+db.ID+"}"),
		},
		{
			name: "unknown name", database: "nosuchdb",
			code: "3D000", message: `database "nosuchdb" does not exist`, hint: nameHint,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialWireTLS(t, s)
			params := []string{"user", s.creds.PrincipalID, "database", tc.database}
			if tc.options != "" {
				params = append(params, "options", tc.options)
			}
			if tc.beforePassword {
				c.write(wireStartupPacket(wireProtocol30, params...))
			} else {
				c.login(params...)
				c.sendPassword(s.creds.SecretKey)
			}
			got := c.expectFatal(tc.code, tc.message, false)
			if got.Hint != tc.hint {
				t.Errorf("hint = %q, want %q", got.Hint, tc.hint)
			}
		})
	}

	t.Run("psql unknown ID", func(t *testing.T) {
		out, err := runPsql(psqlURL(s, s.creds.PrincipalID, s.creds.SecretKey, db.Name, missing), "SELECT 1")
		if err == nil {
			t.Fatalf("psql to an unknown database ID succeeded:\n%s", out)
		}
		want := fmt.Sprintf("FATAL:  database %q does not exist", missing)
		if !strings.Contains(out, want) {
			t.Errorf("psql output %q does not contain %q", out, want)
		}
	})

	expectGoroutinesSettle(t, s, baseline)
	expectStillServing(t, s, db.Name, db.ID)
}

// editCatalog opens the catalog of a stopped server in this process and
// runs fn in one transaction.
func editCatalog(t *testing.T, dataDir string, fn func(tx *catalog.Tx) error) {
	t.Helper()
	cat, err := catalog.Open(dataDir)
	if err != nil {
		t.Fatalf("open catalog: %v", err)
	}
	defer cat.Close()
	if err := cat.Update(fn); err != nil {
		t.Fatalf("edit catalog: %v", err)
	}
}

func TestProxyPrincipalWithoutPolicy(t *testing.T) {
	first := startServer(t)
	db := first.createDatabase(t, "owned", 0, 1)
	dataDir, creds := first.dataDir, first.creds
	first.stop()

	principalID := uuid.NewString()
	secret := auth.NewSecretKey()
	accessKey, err := auth.NewAccessKey()
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := auth.NewVerifier(secret)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	editCatalog(t, dataDir, func(tx *catalog.Tx) error {
		if err := tx.PutPrincipal(catalog.Principal{
			ID: principalID, OrganizationID: creds.OrganizationID, Kind: catalog.PrincipalApplication,
			Name: "no-policy", Owner: false, CreatedAt: now,
		}); err != nil {
			return err
		}
		return tx.PutAPIKey(catalog.APIKey{
			AccessKey: accessKey, PrincipalID: principalID, OrganizationID: creds.OrganizationID,
			DefaultProjectID: creds.ProjectID, Description: "principal without a policy",
			TokenHash: auth.TokenHash(secret), Verifier: verifier, CreatedAt: now,
		})
	})

	second := startServerIn(t, dataDir)
	baseline := goroutineCount(t, second)
	cases := []struct {
		name    string
		params  []string
		code    string
		message string
	}{
		{
			name:    "by ID",
			params:  []string{"user", principalID, "database", db.Name, "options", "-c databaseid=" + db.ID},
			code:    "28000",
			message: fmt.Sprintf("principal %s does not have permission to access database %s", principalID, db.ID),
		},
		{
			// Routing by name lists only the databases the principal may
			// use, so an existing name reads as missing.
			name:    "by name",
			params:  []string{"user", principalID, "database", db.Name},
			code:    "3D000",
			message: fmt.Sprintf("database %q does not exist", db.Name),
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialWireTLS(t, second)
			c.login(tc.params...)
			c.sendPassword(secret)
			c.expectFatal(tc.code, tc.message, false)
		})
	}
	t.Run("psql by ID", func(t *testing.T) {
		out, err := runPsql(psqlURL(second, principalID, secret, db.Name, db.ID), "SELECT 1")
		if err == nil {
			t.Fatalf("psql as a principal without a policy succeeded:\n%s", out)
		}
		want := fmt.Sprintf("FATAL:  principal %s does not have permission to access database %s", principalID, db.ID)
		if !strings.Contains(out, want) {
			t.Errorf("psql output %q does not contain %q", out, want)
		}
	})
	expectGoroutinesSettle(t, second, baseline)
	expectStillServing(t, second, db.Name, db.ID)
	second.stop()

	editCatalog(t, dataDir, func(tx *catalog.Tx) error {
		return tx.PutPolicy(catalog.Policy{
			ID: uuid.NewString(), Name: "full access to the default project", OrganizationID: creds.OrganizationID,
			PrincipalID: principalID, CreatedAt: now,
			Rules: []catalog.Rule{{PermissionSetNames: []string{string(auth.FullAccess)}, ProjectIDs: []string{creds.ProjectID}}},
		})
	})

	third := startServerIn(t, dataDir)
	out, err := runPsql(psqlURL(third, principalID, secret, db.Name, db.ID), "SELECT current_database()")
	if err != nil {
		t.Fatalf("psql as the principal with a policy: %v\n%s", err, out)
	}
	if out != db.Name {
		t.Errorf("current_database() = %q, want %q", out, db.Name)
	}
}

func TestProxyCancelRequest(t *testing.T) {
	s := startServer(t)
	db := s.createDatabase(t, "cancel", 0, 1)

	config, err := pgx.ParseConfig(s.connString(db))
	if err != nil {
		t.Fatal(err)
	}
	// On a cancelled context pgx by default breaks the connection with a
	// deadline. This handler sends a CancelRequest instead, and sets the
	// deadline only if the query has not ended 8s later.
	config.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, DeadlineDelay: 8 * time.Second}
	}
	connectCtx, cancelConnect := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelConnect()
	conn, err := pgx.ConnectConfig(connectCtx, config)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(context.Background())
	baseline := goroutineCount(t, s)

	// A CancelRequest with a key the proxy never issued gets no reply.
	t.Run("unknown key", func(t *testing.T) {
		c := dialWire(t, s)
		c.write(wireLengthPrefixed(wireWords(wireCancelRequestCode, 1, 0)))
		c.expectClosed()
	})
	waitFor(t, 5*time.Second, "the unknown-key CancelRequest to be counted", func() bool {
		n, _ := s.metric(t, "sdblocal_proxy_cancel_requests_total", `outcome="unknown_key"`)
		return n == 1
	})

	queryCtx, cancelQuery := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelQuery()
	start := time.Now()
	_, err = conn.Exec(queryCtx, "SELECT pg_sleep(30)")
	elapsed := time.Since(start)
	if err == nil {
		t.Fatal("SELECT pg_sleep(30) with a 300ms context succeeded")
	}
	pgErr, ok := errors.AsType[*pgconn.PgError](err)
	if !ok {
		t.Fatalf("SELECT pg_sleep(30) with a 300ms context: %v, want a PostgreSQL error", err)
	}
	if pgErr.Code != "57014" {
		t.Errorf("SQLSTATE = %s (%s), want 57014", pgErr.Code, pgErr.Message)
	}
	if elapsed > 10*time.Second {
		t.Errorf("cancelled query returned after %s, want within 10s", elapsed)
	}
	if n, _ := s.metric(t, "sdblocal_proxy_cancel_requests_total", `outcome="forwarded"`); n != 1 {
		t.Errorf(`sdblocal_proxy_cancel_requests_total{outcome="forwarded"} = %v, want 1`, n)
	}

	var one int
	if err := conn.QueryRow(context.Background(), "SELECT 1").Scan(&one); err != nil {
		t.Fatalf("SELECT 1 after the cancel: %v", err)
	}
	if one != 1 {
		t.Errorf("SELECT 1 after the cancel returned %d", one)
	}
	expectGoroutinesSettle(t, s, baseline)
}
