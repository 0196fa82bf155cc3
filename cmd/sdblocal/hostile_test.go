package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
	sdb "github.com/scaleway/scaleway-sdk-go/api/serverless_sqldb/v1alpha1"
)

// These tests send the proxy and the API what a hostile or broken client
// sends after the startup packet, or at a pace no client should: results
// never read, bytes dripped one at a time, length words that lie, bytes
// that are not UTF-8 and requests over the size limits. Malformed startup
// packets and logins are in badinput_test.go and wireauth_test.go.

// loginWire opens a raw TLS connection and logs in as the owner to db,
// reading up to the first ReadyForQuery.
func loginWire(t *testing.T, s *testServer, db *sdb.Database) *wireClient {
	t.Helper()
	c := dialWireTLS(t, s)
	c.login("user", s.creds.PrincipalID, "database", db.Name, "options", "-c databaseid="+db.ID)
	c.sendPassword(s.creds.SecretKey)
	for {
		switch m := c.receive().(type) {
		case *pgproto3.ReadyForQuery:
			return c
		case *pgproto3.ErrorResponse:
			t.Fatalf("login failed: %s %s", m.Code, m.Message)
		}
	}
}

// activeBackends returns how many backends of db, other than the one
// asking, are not idle.
func activeBackends(t *testing.T, s *testServer, db *sdb.Database) string {
	t.Helper()
	return s.mustPsql(t, db, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND state <> 'idle' AND pid <> pg_backend_pid()")
}

// TestSlowReaderMemoryBounded runs a query whose result is 2 GB from a
// client that reads its first bytes and then stops reading. sdblocal must
// not buffer the result: its resident memory stays under 200 MB while
// other clients are served, and the backend ends when the client goes.
func TestSlowReaderMemoryBounded(t *testing.T) {
	const limit = 200 << 20
	s := startServer(t)
	db := s.createDatabase(t, "flood", 0, 1)
	pid := s.cmd.Process.Pid
	before := vmRSS(t, pid)

	c := loginWire(t, s, db)
	c.fe.SendQuery(&pgproto3.Query{String: "SELECT repeat('x', 1000) FROM generate_series(1, 2000000)"})
	if err := c.fe.Flush(); err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 64)
	if _, err := io.ReadFull(c.conn, first); err != nil {
		t.Fatalf("read the first bytes of the result: %v", err)
	}

	peak := before
	deadline := time.Now().Add(scaled(5*time.Second, 60*time.Second))
	served := false
	for time.Now().Before(deadline) {
		peak = max(peak, vmRSS(t, pid))
		if !served {
			if got := s.mustPsql(t, db, "SELECT 42"); got != "42" {
				t.Errorf("another client during the flood: SELECT 42 = %q", got)
			}
			served = true
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("sdblocal VmRSS: %d MB before, %d MB peak", before>>20, peak>>20)
	if peak > limit {
		t.Errorf("sdblocal VmRSS reached %d MB with a client that does not read, want under %d MB", peak>>20, limit>>20)
	}

	c.conn.Close()
	waitFor(t, 30*time.Second, "the flooding query to end with its client", func() bool {
		return activeBackends(t, s, db) == "0"
	})
	if got := s.mustPsql(t, db, "SELECT 1"); got != "1" {
		t.Errorf("SELECT 1 after the flood = %q", got)
	}
}

// drip writes raw one byte every interval and returns the first error.
func drip(conn net.Conn, raw []byte, interval time.Duration) error {
	for _, b := range raw {
		if _, err := conn.Write([]byte{b}); err != nil {
			return err
		}
		time.Sleep(interval)
	}
	return nil
}

// TestSlowDripClients sends startup packets one byte every 100 ms from 20
// clients at once. The handshake timeout cuts each of them off, however
// steadily it sends, while a normal client is served meanwhile. After the
// login no such deadline applies: a query dripped the same way gets its
// correct result.
func TestSlowDripClients(t *testing.T) {
	const timeout = 2 * time.Second
	s := startServer(t, "--handshake-timeout", timeout.String(), "--tls", "optional")
	db := s.createDatabase(t, "drip", 0, 1)
	baseline := goroutineCount(t, s)
	packet := wireStartupPacket(wireProtocol30, "user", s.creds.PrincipalID, "database", db.Name, "options", "-c databaseid="+db.ID)

	drippers := scaled(20, 200)
	var wg sync.WaitGroup
	for i := range drippers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.pgPort), 5*time.Second)
			if err != nil {
				t.Errorf("dripper %d: dial: %v", i, err)
				return
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(timeout + 10*time.Second))
			dialed := time.Now()
			go func() { _ = drip(conn, packet, 100*time.Millisecond) }()
			msg, err := pgproto3.NewFrontend(conn, io.Discard).Receive()
			elapsed := time.Since(dialed)
			errMsg, ok := msg.(*pgproto3.ErrorResponse)
			if err != nil || !ok || errMsg.Code != "08P01" {
				t.Errorf("dripper %d: got %T %+v, %v after %s, want FATAL 08P01 at the handshake timeout", i, msg, msg, err, elapsed)
				return
			}
			if elapsed < timeout-100*time.Millisecond || elapsed > timeout+5*time.Second {
				t.Errorf("dripper %d: cut off after %s, want about %s", i, elapsed, timeout)
			}
		}()
	}

	time.Sleep(200 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	conn, err := pgx.Connect(ctx, s.connString(db))
	if err != nil {
		t.Errorf("a normal client among the drippers: %v", err)
	} else {
		var got int
		if err := conn.QueryRow(ctx, "SELECT 7").Scan(&got); err != nil || got != 7 {
			t.Errorf("a normal client among the drippers: SELECT 7 = %d, %v", got, err)
		}
		conn.Close(ctx)
	}
	cancel()
	wg.Wait()

	// A query dripped after the login outlasts the handshake timeout.
	c := loginWire(t, s, db)
	_ = c.conn.SetDeadline(time.Now().Add(30 * time.Second))
	query, err := (&pgproto3.Query{String: "SELECT 6 * 7 AS answer_to_a_dripped_question"}).Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := drip(c.conn, query, 100*time.Millisecond); err != nil {
		t.Fatalf("drip the query: %v", err)
	}
	if elapsed := time.Since(start); elapsed < timeout {
		t.Fatalf("the dripped query took %s, want longer than the %s handshake timeout", elapsed, timeout)
	}
	var answer string
	for {
		msg := c.receive()
		if row, ok := msg.(*pgproto3.DataRow); ok {
			answer = string(row.Values[0])
		}
		if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
			break
		}
		if e, ok := msg.(*pgproto3.ErrorResponse); ok {
			t.Fatalf("dripped query: %s %s", e.Code, e.Message)
		}
	}
	if answer != "42" {
		t.Errorf("dripped query answered %q, want 42", answer)
	}
	c.conn.Close()
	expectGoroutinesSettle(t, s, baseline)
}

// TestHostileMessages sends, after a good login, messages whose length
// word lies or exceeds PostgreSQL's 1 GB limit, a message cut short by
// the client's exit, and startup parameters that are not UTF-8. Each gets
// a FATAL with a SQLSTATE, or the connection is simply closed, and the
// server keeps serving without leaking backends.
func TestHostileMessages(t *testing.T) {
	s := startServer(t)
	db := s.createDatabase(t, "hostile", 0, 1)
	header := func(msgType byte, length uint32) []byte {
		return binary.BigEndian.AppendUint32([]byte{msgType}, length)
	}

	for _, tc := range []struct {
		name string
		raw  []byte
	}{
		{"length 0", header('Q', 0)},
		{"length 3", header('Q', 3)},
		{"length 2^32-1", header('Q', 0xffffffff)},
		{"length 1 GiB", header('Q', 1<<30)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := loginWire(t, s, db)
			c.write(tc.raw)
			got := c.expectFatal("08P01", "invalid message length", true)
			if !utf8.ValidString(got.Message) {
				t.Errorf("message %q is not UTF-8", got.Message)
			}
		})
	}

	// A Query that announces 100 MB and stops after 10 bytes: the client
	// leaves, and the backend that waited for the rest must go too.
	t.Run("truncated message", func(t *testing.T) {
		c := loginWire(t, s, db)
		c.write(append(header('Q', 100<<20), "SELECT 1; "...))
		time.Sleep(200 * time.Millisecond)
		c.conn.Close()
		waitFor(t, 30*time.Second, "the backend of the truncated message to end", func() bool {
			return activeBackends(t, s, db) == "0"
		})
	})

	// GSSENCRequest twice: PostgreSQL 14 answers the first with N and
	// rejects the second as an unknown protocol version.
	t.Run("GSSENCRequest twice", func(t *testing.T) {
		c := dialWire(t, s)
		request := wireLengthPrefixed(wireWords(80877104))
		c.write(request)
		var reply [1]byte
		if _, err := io.ReadFull(c.conn, reply[:]); err != nil || reply[0] != 'N' {
			t.Fatalf("first GSSENCRequest: reply %q, %v; want N", reply[0], err)
		}
		c.write(request)
		c.expectFatal("0A000", "unsupported frontend protocol 1234.5680: server supports 3.0 to 3.0", false)
	})

	for _, tc := range []struct {
		name   string
		params []string
		code   string
	}{
		{"user", []string{"user", "\xff\xfe", "database", db.Name, "options", "-c databaseid=" + db.ID}, "28P01"},
		{"database name", []string{"user", s.creds.PrincipalID, "database", "caf\xc3"}, "3D000"},
		{"options", []string{"user", s.creds.PrincipalID, "database", db.Name, "options", "-c databaseid=" + db.ID + " -c search_path=\xff"}, ""},
		{"application_name", []string{"user", s.creds.PrincipalID, "database", db.Name, "options", "-c databaseid=" + db.ID, "application_name", "\xe2\x28\xa1"}, ""},
	} {
		t.Run("invalid UTF-8 in "+tc.name, func(t *testing.T) {
			c := dialWireTLS(t, s)
			c.login(tc.params...)
			c.sendPassword(s.creds.SecretKey)
			for {
				msg := c.receive()
				if e, ok := msg.(*pgproto3.ErrorResponse); ok {
					if tc.code != "" && e.Code != tc.code {
						t.Errorf("SQLSTATE %s (%s), want %s", e.Code, e.Message, tc.code)
					}
					if !utf8.ValidString(e.Message) {
						t.Errorf("message %q is not UTF-8", e.Message)
					}
					c.expectClosed()
					return
				}
				if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
					if tc.code != "" {
						t.Errorf("login succeeded, want SQLSTATE %s", tc.code)
					}
					return
				}
			}
		})
	}
	expectStillServing(t, s, db.Name, db.ID)
	if got := activeBackends(t, s, db); got != "0" {
		t.Errorf("%s backends still active after the hostile clients left", got)
	}
}

// TestHostileAPIRequests sends the API a path that climbs out of its
// resource, request headers and a body over the size limits, and headers
// dripped slower than any client sends them. Each gets a 4xx status, and
// the API keeps serving.
func TestHostileAPIRequests(t *testing.T) {
	s := startServer(t)
	addr := strings.TrimPrefix(s.apiURL, "http://")
	rawRequest := func(t *testing.T, request string) (int, string) {
		t.Helper()
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.WriteString(conn, request); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("read response: %v", err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return resp.StatusCode, string(body)
	}
	request := func(method, path string, headers map[string]string, body string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nX-Auth-Token: %s\r\nConnection: close\r\n", method, path, addr, s.creds.SecretKey)
		for name, value := range headers {
			fmt.Fprintf(&b, "%s: %s\r\n", name, value)
		}
		if body != "" {
			fmt.Fprintf(&b, "Content-Type: application/json\r\nContent-Length: %d\r\n", len(body))
		}
		b.WriteString("\r\n")
		b.WriteString(body)
		return b.String()
	}

	for _, path := range []string{
		"/serverless-sqldb/v1alpha1/regions/fr-par/databases/..%2f..%2fetc",
		"/serverless-sqldb/v1alpha1/regions/fr-par/databases/..%2f..%2f..%2f..%2fcatalog.db",
		"/serverless-sqldb/v1alpha1/regions/..%2f..%2f/databases",
	} {
		status, body := rawRequest(t, request("GET", path, nil, ""))
		if status != http.StatusBadRequest {
			t.Errorf("GET %s: status %d, want 400; body %s", path, status, body)
		}
	}
	status, _ := rawRequest(t, request("GET", "/serverless-sqldb/v1alpha1/regions/fr-par/databases/../../../../etc/passwd", nil, ""))
	if status == http.StatusOK || status >= 500 {
		t.Errorf("GET with unencoded dot segments: status %d, want a 3xx or 4xx", status)
	}

	status, _ = rawRequest(t, request("GET", "/serverless-sqldb/v1alpha1/regions/fr-par/databases", map[string]string{"X-Padding": strings.Repeat("a", 2<<20)}, ""))
	if status != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("2 MB header: status %d, want 431", status)
	}
	big := `{"project_id":"` + s.creds.ProjectID + `","name":"big","padding":"` + strings.Repeat("a", 2<<20) + `"}`
	status, body := rawRequest(t, request("POST", "/serverless-sqldb/v1alpha1/regions/fr-par/databases", nil, big))
	if status != http.StatusBadRequest || !strings.Contains(body, "larger than") {
		t.Errorf("2 MB body: status %d, body %.300s; want 400 naming the size limit", status, body)
	}

	// Headers dripped a byte per 100 ms: the server's header timeout
	// closes the connection, and other requests are served meanwhile.
	if soakMode() {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		started := time.Now()
		err = drip(conn, []byte(request("GET", "/healthz", map[string]string{"X-Slow": strings.Repeat("s", 300)}, "")), 100*time.Millisecond)
		if err == nil {
			t.Error("a request dripped over 30s was read to the end")
		}
		if elapsed := time.Since(started); elapsed > 20*time.Second {
			t.Errorf("dripped headers were accepted for %s, want the connection closed after about 10s", elapsed)
		}
	}

	var list map[string]any
	if code, out := s.apiRequest(t, "GET", "/serverless-sqldb/v1alpha1/regions/fr-par/databases", nil); code != http.StatusOK {
		t.Errorf("list databases after the hostile requests: status %d, %v", code, out)
	} else {
		list = out
	}
	if list["total_count"] != float64(0) {
		t.Errorf("total_count after the hostile requests = %v, want 0", list["total_count"])
	}
}
