package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// The fuzz tests below feed the parsers that read what a client sends
// before it has logged in. Their seed corpora run as ordinary tests under
// `go test`; `go test -fuzz FuzzName ./proxy` explores further. Each
// failure found by fuzzing is kept as a seed, so it stays a regression
// test.

// startupSeeds are first packets of real and broken clients.
func startupSeeds() [][]byte {
	packet := func(body []byte) []byte {
		return append(binary.BigEndian.AppendUint32(nil, uint32(len(body)+4)), body...)
	}
	words := func(ws ...uint32) []byte {
		var out []byte
		for _, w := range ws {
			out = binary.BigEndian.AppendUint32(out, w)
		}
		return out
	}
	startup := func(version uint32, params ...string) []byte {
		body := words(version)
		for _, p := range params {
			body = append(append(body, p...), 0)
		}
		return packet(append(body, 0))
	}
	sslRequest := packet(words(codeSSLRequest))
	return [][]byte{
		startup(3<<16, "user", "alice", "database", "app"),
		startup(3<<16, "user", "alice", "options", `-c databaseid=3f1b9a52-7c3e-4d41-9a55-0c7f1e2d8b64 -c search_path=a\ b`),
		startup(3<<16|2, "user", "alice", "_pq_.feature", "on"),
		startup(3 << 16),
		startup(2<<16, "user", "alice"),
		startup(3<<16, "user", "\xff\xfe", "application_name", "caf\xc3"),
		append(slices.Clone(sslRequest), startup(3<<16, "user", "alice")...),
		append(slices.Clone(sslRequest), sslRequest...),
		append(packet(words(codeGSSENCRequest)), startup(3<<16, "user", "alice")...),
		append(packet(words(codeGSSENCRequest)), packet(words(codeGSSENCRequest))...),
		packet(words(codeCancelRequest, 42, 7)),
		packet(words(codeCancelRequest, 42)),
		packet(words(codeSSLRequest, 0)),
		words(0xffffffff),
		words(4),
		packet(append(words(3<<16), "user\x00x"...)),
		{tlsRecordHandshake, 3, 1, 0, 5, 1, 0, 0, 1, 0},
		{},
	}
}

func FuzzReadStartupPacket(f *testing.F) {
	for _, seed := range startupSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		body, err := readStartupPacket(bytes.NewReader(data))
		if err != nil {
			if body != nil {
				t.Errorf("error %v with a body of %d bytes", err, len(body))
			}
			return
		}
		length := binary.BigEndian.Uint32(data)
		if length < 8 || length > maxStartupPacket {
			t.Fatalf("accepted a packet whose length word is %d", length)
		}
		if !bytes.Equal(body, data[4:length]) {
			t.Errorf("body %q, want the %d bytes after the length word", body, length-4)
		}
	})
}

func FuzzDecodeStartupMessage(f *testing.F) {
	for _, seed := range startupSeeds() {
		if len(seed) >= 8 {
			f.Add(seed[4:])
		}
	}
	f.Fuzz(func(t *testing.T, packet []byte) {
		// readStartupPacket never returns fewer than 4 bytes.
		if len(packet) < 4 || len(packet) > maxStartupPacket-4 {
			return
		}
		var out bytes.Buffer
		params, err := decodeStartupMessage(&out, packet)
		if err != nil {
			if _, ok := asWireError(err); !ok {
				t.Errorf("error %v is not sent to the client as an ErrorResponse", err)
			}
			return
		}
		for name, value := range params {
			if strings.HasPrefix(name, "_pq_.") {
				t.Errorf("protocol option %q passed on as a parameter", name)
			}
			if strings.IndexByte(name, 0) >= 0 || strings.IndexByte(value, 0) >= 0 {
				t.Errorf("parameter %q=%q contains a zero byte", name, value)
			}
		}
		if out.Len() > 0 {
			// The only reply before authentication is NegotiateProtocolVersion.
			be := pgproto3.NewFrontend(bytes.NewReader(out.Bytes()), io.Discard)
			msg, err := be.Receive()
			if err != nil {
				t.Fatalf("reply %q does not decode: %v", out.Bytes(), err)
			}
			if _, ok := msg.(*pgproto3.NegotiateProtocolVersion); !ok {
				t.Errorf("reply %T, want NegotiateProtocolVersion", msg)
			}
		}
	})
}

// scriptedConn is a connection whose client side is a fixed byte string.
// What the proxy writes is kept in out.
type scriptedConn struct {
	in  *bytes.Reader
	out bytes.Buffer
}

func (c *scriptedConn) Read(p []byte) (int, error)  { return c.in.Read(p) }
func (c *scriptedConn) Write(p []byte) (int, error) { return c.out.Write(p) }
func (c *scriptedConn) Close() error                { return nil }
func (c *scriptedConn) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5432}
}
func (c *scriptedConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
}
func (c *scriptedConn) SetDeadline(t time.Time) error      { return nil }
func (c *scriptedConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *scriptedConn) SetWriteDeadline(t time.Time) error { return nil }

func FuzzNegotiate(f *testing.F) {
	tlsConfig, _, err := EnsureCertificates(f.TempDir(), DefaultSNISuffix)
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range startupSeeds() {
		f.Add(seed, false)
		f.Add(seed, true)
	}
	f.Fuzz(func(t *testing.T, data []byte, tlsOn bool) {
		mode := TLSOff
		if tlsOn {
			mode = TLSOptional
		}
		script := &scriptedConn{in: bytes.NewReader(data)}
		var conn net.Conn = script
		start, cancel, err := negotiate(&conn, tlsConfig, mode)
		switch {
		case err != nil:
			if start != nil || cancel != nil {
				t.Errorf("error %v returned with a result", err)
			}
		case start != nil:
			if cancel != nil {
				t.Error("both a StartupMessage and a CancelRequest returned")
			}
			for name := range start.params {
				if strings.HasPrefix(name, "_pq_.") {
					t.Errorf("protocol option %q passed on as a parameter", name)
				}
			}
		case cancel == nil:
			t.Fatal("no error and no result")
		}
		// A client may ask for encryption once: every reply byte is one
		// answer, so more than two (one SSLRequest, one GSSENCRequest)
		// means the proxy kept answering a client that repeats itself.
		replies := 0
		for _, b := range script.out.Bytes() {
			if b == 'N' || b == 'S' {
				replies++
			} else {
				break
			}
		}
		if replies > 2 {
			t.Errorf("answered %d encryption requests on one connection, want at most 2", replies)
		}
	})
}

// pgSplitOpts is PostgreSQL 14's pg_split_opts (src/backend/utils/init/
// postinit.c), which splits the startup options value into the words the
// backend parses: words end at isspace() in the C locale unless escaped
// by a backslash, and a backslash always escapes the next byte.
func pgSplitOpts(s string) []string {
	isSpace := func(c byte) bool { return c == ' ' || (c >= '\t' && c <= '\r') }
	var words []string
	i := 0
	for i < len(s) {
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		if i == len(s) {
			break
		}
		var word []byte
		escaped := false
		for ; i < len(s); i++ {
			c := s[i]
			if isSpace(c) && !escaped {
				break
			}
			if !escaped && c == '\\' {
				escaped = true
				continue
			}
			escaped = false
			word = append(word, c)
		}
		words = append(words, string(word))
	}
	return words
}

// nonEmpty drops empty words, which only a lone trailing backslash makes.
func nonEmpty(words []string) []string {
	return slices.DeleteFunc(slices.Clone(words), func(w string) bool { return w == "" })
}

func FuzzParseOptions(f *testing.F) {
	const id = "3f1b9a52-7c3e-4d41-9a55-0c7f1e2d8b64"
	for _, seed := range []string{
		"",
		"databaseid=" + id,
		"-c databaseid=" + id + " -c search_path=app",
		"--databaseid=" + id + " -cwork_mem=8MB",
		`-c application_name=a\ b\\c`,
		"-c\vclient_encoding=LATIN1",
		"-c\fclient_encoding=LATIN1",
		"-c client-encoding=LATIN1",
		"-ecclient_encoding=LATIN1",
		"-e -c client_encoding=LATIN1",
		`trailing\`,
		"a\\\nb",
		"-c",
		"-c -c databaseid=" + id,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, options string) {
		if strings.IndexByte(options, 0) >= 0 {
			return // a startup parameter ends at its first zero byte
		}
		if got, want := splitOptions(options), nonEmpty(pgSplitOpts(options)); !slices.Equal(got, want) {
			t.Fatalf("splitOptions(%q) = %q, but PostgreSQL splits it into %q", options, got, want)
		}
		parsed := parseOptions(options)
		if got, want := pgSplitOpts(parsed.rest), splitOptions(parsed.rest); !slices.Equal(got, want) {
			t.Fatalf("rest %q reaches PostgreSQL as %q, but the proxy checked %q", parsed.rest, got, want)
		}
		again := parseOptions(parsed.rest)
		if again.databaseID != "" {
			t.Errorf("rest %q of %q still names database %q", parsed.rest, options, again.databaseID)
		}
		if again.rest != parsed.rest {
			t.Errorf("rest %q of %q parses to rest %q", parsed.rest, options, again.rest)
		}
	})
}

func FuzzReadPassword(f *testing.F) {
	message := func(body string) []byte {
		out := []byte{'p'}
		out = binary.BigEndian.AppendUint32(out, uint32(len(body)+4))
		return append(out, body...)
	}
	for _, seed := range [][]byte{
		message("secret\x00"),
		message("secret\x00trailing"),
		message("\x00"),
		message("no terminator"),
		message(""),
		{'p', 0, 0, 0, 4},
		{'p', 0xff, 0xff, 0xff, 0xff},
		{'Q', 0, 0, 0, 5, 0},
		{'p', 0, 0},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		password, err := readPassword(bytes.NewReader(data))
		if err != nil {
			if _, ok := asWireError(err); !ok && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("error %v is neither an ErrorResponse nor a short read", err)
			}
			return
		}
		length := binary.BigEndian.Uint32(data[1:])
		body := data[5 : 1+length]
		if want := password + "\x00"; string(body) != want {
			t.Errorf("password %q accepted from body %q: PostgreSQL accepts only the password and one zero byte", password, body)
		}
	})
}

func FuzzDecodeSASLInitialResponse(f *testing.F) {
	encode := func(name string, length int32, data string) []byte {
		body := append([]byte(name), 0)
		body = binary.BigEndian.AppendUint32(body, uint32(length))
		return append(body, data...)
	}
	f.Add(encode(mechanismSCRAM, 20, "n,,n=,r=abcdefghijkl"))
	f.Add(encode(mechanismSCRAMPlus, 35, "p=tls-server-end-point,,n=,r=abcdef"))
	f.Add(encode(mechanismSCRAM, -1, ""))
	f.Add(encode(mechanismSCRAM, 1<<30, "n"))
	f.Add([]byte(mechanismSCRAM))
	f.Fuzz(func(t *testing.T, body []byte) {
		mechanism, clientFirst, werr := decodeSASLInitialResponse(body)
		if werr != nil {
			if werr.code != codeProtocolViolation {
				t.Errorf("SQLSTATE %s, want %s", werr.code, codeProtocolViolation)
			}
			return
		}
		if want := len(mechanism) + 1 + 4 + len(clientFirst); want != len(body) {
			t.Errorf("mechanism %q and %d data bytes do not account for the %d-byte body", mechanism, len(clientFirst), len(body))
		}
		for _, offeredPlus := range []bool{false, true} {
			if werr := checkChannelBindingFlag(clientFirst, mechanism, offeredPlus); werr != nil && werr.code != codeProtocolViolation {
				t.Errorf("channel-binding flag check: SQLSTATE %s, want %s", werr.code, codeProtocolViolation)
			}
		}
	})
}

// TestNegotiateRepeatedEncryptionRequest checks that a client may ask for
// TLS once and for GSSAPI encryption once, as PostgreSQL 14 allows: a
// second request of either kind is rejected the way PostgreSQL rejects an
// unknown protocol version, instead of being answered again until the
// handshake times out.
func TestNegotiateRepeatedEncryptionRequest(t *testing.T) {
	request := func(code uint32) []byte {
		return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 8), code)
	}
	cases := []struct {
		name    string
		packets [][]byte
		message string
	}{
		{"SSLRequest twice", [][]byte{request(codeSSLRequest), request(codeSSLRequest)}, "unsupported frontend protocol 1234.5679: server supports 3.0 to 3.0"},
		{"GSSENCRequest twice", [][]byte{request(codeGSSENCRequest), request(codeGSSENCRequest)}, "unsupported frontend protocol 1234.5680: server supports 3.0 to 3.0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			script := &scriptedConn{in: bytes.NewReader(bytes.Join(tc.packets, nil))}
			var conn net.Conn = script
			_, _, err := negotiate(&conn, nil, TLSOff)
			werr, ok := asWireError(err)
			if !ok {
				t.Fatalf("error %v, want an ErrorResponse", err)
			}
			if werr.code != codeFeatureNotSupported {
				t.Errorf("SQLSTATE %s, want %s", werr.code, codeFeatureNotSupported)
			}
			if werr.message != tc.message {
				t.Errorf("message %q, want %q", werr.message, tc.message)
			}
			if got := script.out.String(); got != "N" {
				t.Errorf("replies %q, want one N", got)
			}
		})
	}

	// GSSENCRequest then SSLRequest is what libpq sends with
	// gssencmode=prefer and sslmode=prefer: both are answered.
	script := &scriptedConn{in: bytes.NewReader(append(request(codeGSSENCRequest), request(codeSSLRequest)...))}
	var conn net.Conn = script
	_, _, err := negotiate(&conn, nil, TLSOff)
	if !errors.Is(err, io.EOF) {
		t.Errorf("GSSENCRequest then SSLRequest: error %v, want EOF after both are answered", err)
	}
	if got := script.out.String(); got != "NN" {
		t.Errorf("GSSENCRequest then SSLRequest: replies %q, want NN", got)
	}
}

// TestParseOptionsHidesNoSetting checks the settings that PostgreSQL
// applies from options words the proxy used to read differently: words
// split at any isspace() byte, dashes in a setting name, and -c bundled
// after another switch.
func TestParseOptionsHidesNoSetting(t *testing.T) {
	for _, options := range []string{
		"-c\vclient_encoding=LATIN1",
		"-c\fclient_encoding=LATIN1",
		"-c\nclient_encoding=LATIN1",
		"-c client-encoding=LATIN1",
		"--client-encoding=LATIN1",
		"-ecclient_encoding=LATIN1",
		"-e -c CLIENT_ENCODING=LATIN1",
		"-Ec client_encoding=LATIN1",
	} {
		if werr := checkClientEncoding(nil, parseOptions(options)); werr == nil {
			t.Errorf("options %q: client_encoding LATIN1 accepted", options)
		}
	}
	for _, options := range []string{
		"-c search_path=client_encoding=LATIN1",
		"-B -cclient_encoding=LATIN1", // -B takes the next word as its value
		"-c application_name=x -c client_encoding=UTF8",
	} {
		if werr := checkClientEncoding(nil, parseOptions(options)); werr != nil {
			t.Errorf("options %q: rejected with %v", options, werr)
		}
	}
}

// TestReadPasswordTrailingBytes checks PostgreSQL's rule that a
// PasswordMessage holds the password and its terminator and nothing more.
func TestReadPasswordTrailingBytes(t *testing.T) {
	body := "secret\x00extra"
	message := append([]byte{'p'}, binary.BigEndian.AppendUint32(nil, uint32(len(body)+4))...)
	message = append(message, body...)
	_, err := readPassword(bytes.NewReader(message))
	werr, ok := asWireError(err)
	if !ok || werr.code != codeProtocolViolation || werr.message != "invalid password packet size" {
		t.Errorf("error %v, want 08P01 invalid password packet size", err)
	}
}
