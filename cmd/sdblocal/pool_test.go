package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	sdb "github.com/scaleway/scaleway-sdk-go/api/serverless_sqldb/v1alpha1"
)

// These tests drive the proxy's transaction pooling with a pool of two
// backends, so that clients keep landing on backends other clients used.
// They check each client's prepared statements and settings, protocol sync
// after errors the proxy raises itself, COPY, and waits for a backend and
// their cancellation.

// rawConn speaks the protocol by hand after a normal pgx login.
type rawConn struct {
	t    *testing.T
	conn net.Conn
	fe   *pgproto3.Frontend
	// params are the ParameterStatus values seen, login included.
	params map[string]string
}

func rawConnect(t *testing.T, s *testServer, db *sdb.Database, params map[string]string) *rawConn {
	t.Helper()
	config, err := pgconn.ParseConfig(s.connString(db))
	if err != nil {
		t.Fatal(err)
	}
	for name, value := range params {
		config.RuntimeParams[name] = value
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pc, err := pgconn.ConnectConfig(ctx, config)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	h, err := pc.Hijack()
	if err != nil {
		t.Fatal(err)
	}
	c := &rawConn{t: t, conn: h.Conn, fe: h.Frontend, params: h.ParameterStatuses}
	t.Cleanup(func() { c.conn.Close() })
	return c
}

func (c *rawConn) send(msgs ...pgproto3.FrontendMessage) {
	c.t.Helper()
	for _, msg := range msgs {
		c.fe.Send(msg)
	}
	if err := c.fe.Flush(); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// untilReady returns a summary of each message up to and including the
// next ReadyForQuery: its type, and the fields the tests check.
func (c *rawConn) untilReady() []string {
	c.t.Helper()
	var out []string
	_ = c.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		msg, err := c.fe.Receive()
		if err != nil {
			c.t.Fatalf("receive after %v: %v", out, err)
		}
		switch m := msg.(type) {
		case *pgproto3.ReadyForQuery:
			return append(out, "Z"+string(m.TxStatus))
		case *pgproto3.ErrorResponse:
			out = append(out, "E"+m.Code)
		case *pgproto3.DataRow:
			var cols []string
			for _, v := range m.Values {
				cols = append(cols, string(v))
			}
			out = append(out, "D"+strings.Join(cols, ","))
		case *pgproto3.CommandComplete:
			out = append(out, "C "+string(m.CommandTag))
		case *pgproto3.ParameterStatus:
			c.params[m.Name] = m.Value
		case *pgproto3.NoticeResponse, *pgproto3.RowDescription, *pgproto3.ParameterDescription:
		default:
			out = append(out, fmt.Sprintf("%T", msg)[len("*pgproto3."):])
		}
	}
}

// query runs a simple Query and returns its summary.
func (c *rawConn) query(sql string) []string {
	c.t.Helper()
	c.send(&pgproto3.Query{String: sql})
	return c.untilReady()
}

func expectMessages(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if strings.Join(got, " | ") != strings.Join(want, " | ") {
		t.Errorf("%s:\n got  %q\n want %q", what, got, want)
	}
}

// startPoolServer runs a server in transaction mode with a pool of two
// backends, and a database.
func startPoolServer(t *testing.T, extra ...string) (*testServer, *sdb.Database) {
	t.Helper()
	args := append([]string{"--pool-size", "2", "--query-wait-notice", "200ms", "--query-wait-timeout", "2s"}, extra...)
	s := startServer(t, args...)
	db := s.createDatabase(t, "pool", 1, 1)
	return s, db
}

func TestPoolTransactionMode(t *testing.T) {
	s, db := startPoolServer(t, "--idle-in-transaction-timeout", "4s")
	ctx := context.Background()
	connect := func(t *testing.T, params map[string]string) *pgx.Conn {
		t.Helper()
		config, err := pgx.ParseConfig(s.connString(db))
		if err != nil {
			t.Fatal(err)
		}
		for name, value := range params {
			config.RuntimeParams[name] = value
		}
		conn, err := pgx.ConnectConfig(ctx, config)
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		t.Cleanup(func() { conn.Close(ctx) })
		return conn
	}
	admin := connect(t, nil)
	if _, err := admin.Exec(ctx, "CREATE TABLE items (id int PRIMARY KEY, name text)"); err != nil {
		t.Fatal(err)
	}

	t.Run("statements shared across backends", func(t *testing.T) {
		// Three clients on two backends use one statement name for
		// different queries, as JDBC's S_1, and pgx's cache alongside.
		clients := make([]*rawConn, 3)
		for i := range clients {
			clients[i] = rawConnect(t, s, db, nil)
			clients[i].send(&pgproto3.Parse{Name: "S_1", Query: fmt.Sprintf("SELECT %d + $1::int", i*100)}, &pgproto3.Sync{})
			expectMessages(t, "Parse S_1", clients[i].untilReady(), "ParseComplete", "ZI")
		}
		for round := range 5 {
			for i, c := range clients {
				c.send(&pgproto3.Bind{PreparedStatement: "S_1", Parameters: [][]byte{[]byte(fmt.Sprint(round))}},
					&pgproto3.Execute{}, &pgproto3.Sync{})
				expectMessages(t, fmt.Sprintf("client %d round %d", i, round), c.untilReady(),
					"BindComplete", fmt.Sprintf("D%d", i*100+round), "C SELECT 1", "ZI")
			}
		}
		c := clients[0]
		c.send(&pgproto3.Close{ObjectType: 'S', Name: "S_1"}, &pgproto3.Sync{})
		expectMessages(t, "Close S_1", c.untilReady(), "CloseComplete", "ZI")
		c.send(&pgproto3.Bind{PreparedStatement: "S_1"}, &pgproto3.Execute{}, &pgproto3.Sync{})
		got := c.untilReady()
		expectMessages(t, "Bind after Close", got, "E26000", "ZI")
		c.send(&pgproto3.Describe{ObjectType: 'S', Name: "S_2"}, &pgproto3.Sync{})
		expectMessages(t, "Describe of an unknown statement", c.untilReady(), "E26000", "ZI")
	})

	t.Run("unnamed statement across transactions", func(t *testing.T) {
		// lib/pq's pattern: Parse of the unnamed statement and Sync, then
		// Bind of it in a later round trip, while another client works.
		a, b := rawConnect(t, s, db, nil), rawConnect(t, s, db, nil)
		a.send(&pgproto3.Parse{Query: "SELECT 'a' || $1::text"}, &pgproto3.Describe{ObjectType: 'S'}, &pgproto3.Sync{})
		expectMessages(t, "a Parse", a.untilReady(), "ParseComplete", "ZI")
		b.send(&pgproto3.Parse{Query: "SELECT 'b' || $1::text"}, &pgproto3.Sync{})
		expectMessages(t, "b Parse", b.untilReady(), "ParseComplete", "ZI")
		for i := range 4 {
			for name, c := range map[string]*rawConn{"a": a, "b": b} {
				c.send(&pgproto3.Bind{Parameters: [][]byte{[]byte(fmt.Sprint(i))}}, &pgproto3.Execute{}, &pgproto3.Sync{})
				expectMessages(t, name+" Bind", c.untilReady(), "BindComplete", fmt.Sprintf("D%s%d", name, i), "C SELECT 1", "ZI")
			}
		}
	})

	t.Run("pipeline with several syncs", func(t *testing.T) {
		c := rawConnect(t, s, db, nil)
		var msgs []pgproto3.FrontendMessage
		var want []string
		for i := range 5 {
			msgs = append(msgs, &pgproto3.Parse{Query: fmt.Sprintf("SELECT %d", i)}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
			want = append(want, "ParseComplete", "BindComplete", fmt.Sprintf("D%d", i), "C SELECT 1", "ZI")
		}
		msgs = append(msgs, &pgproto3.Query{String: "SELECT 'done'"})
		want = append(want, "Ddone", "C SELECT 1", "ZI")
		c.send(msgs...)
		var got []string
		for range 6 {
			got = append(got, c.untilReady()...)
		}
		expectMessages(t, "pipeline", got, want...)
	})

	t.Run("large result streams", func(t *testing.T) {
		conn := connect(t, nil)
		var total int64
		rows, err := conn.Query(ctx, "SELECT repeat('x', 1048576) FROM generate_series(1, 64)")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var v string
			if err := rows.Scan(&v); err != nil {
				t.Fatal(err)
			}
			total += int64(len(v))
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		if total != 64<<20 {
			t.Errorf("read %d bytes, want %d", total, 64<<20)
		}
	})

	t.Run("request over 1024 KiB", func(t *testing.T) {
		c := rawConnect(t, s, db, nil)
		big := "SELECT '" + strings.Repeat("x", 1<<20) + "'"
		expectMessages(t, "oversized Query while idle", c.query(big), "E54000", "ZI")
		expectMessages(t, "query after it", c.query("SELECT 1"), "D1", "C SELECT 1", "ZI")

		expectMessages(t, "BEGIN", c.query("BEGIN"), "C BEGIN", "ZT")
		expectMessages(t, "oversized Query in a transaction", c.query(big), "E54000", "ZE")
		expectMessages(t, "query in the failed transaction", c.query("SELECT 1"), "E25P02", "ZE")
		expectMessages(t, "ROLLBACK", c.query("ROLLBACK"), "C ROLLBACK", "ZI")

		// Extended protocol: the oversized Parse fails, and the
		// messages after it up to Sync are skipped.
		c.send(&pgproto3.Parse{Name: "big", Query: big}, &pgproto3.Bind{PreparedStatement: "big"}, &pgproto3.Execute{}, &pgproto3.Sync{})
		expectMessages(t, "oversized Parse while idle", c.untilReady(), "E54000", "ZI")
		c.send(&pgproto3.Parse{Query: "SELECT 2"}, &pgproto3.Bind{}, &pgproto3.Execute{},
			&pgproto3.Parse{Name: "big", Query: big}, &pgproto3.Bind{PreparedStatement: "big"}, &pgproto3.Execute{}, &pgproto3.Sync{})
		expectMessages(t, "oversized Parse in a batch", c.untilReady(), "ParseComplete", "BindComplete", "D2", "C SELECT 1", "E54000", "ZI")
		c.send(&pgproto3.Bind{PreparedStatement: "big"}, &pgproto3.Execute{}, &pgproto3.Sync{})
		expectMessages(t, "refused statement does not exist", c.untilReady(), "E26000", "ZI")

		// The refused Parses never counted toward the 1,048,576-byte
		// budget: a statement of 1,000,000 bytes still fits.
		fits := "SELECT 1 /* " + strings.Repeat("y", 1_000_000) + " */"
		c.send(&pgproto3.Parse{Name: "fits", Query: fits}, &pgproto3.Bind{PreparedStatement: "fits"}, &pgproto3.Execute{}, &pgproto3.Sync{})
		expectMessages(t, "statement under the budget", c.untilReady(), "ParseComplete", "BindComplete", "D1", "C SELECT 1", "ZI")
	})

	t.Run("settings follow each client", func(t *testing.T) {
		// The startup parameters JDBC and Npgsql send, among others.
		tokyo := connect(t, map[string]string{"TimeZone": "Asia/Tokyo", "application_name": "tokyo", "extra_float_digits": "2",
			"search_path": "pg_catalog, public", "client_encoding": "UTF8", "DateStyle": "ISO"})
		utc := connect(t, map[string]string{"TimeZone": "UTC", "application_name": "utc"})
		show := func(conn *pgx.Conn, setting string) string {
			t.Helper()
			var v string
			if err := conn.QueryRow(ctx, "SELECT current_setting('"+setting+"')").Scan(&v); err != nil {
				t.Fatalf("current_setting(%s): %v", setting, err)
			}
			return v
		}
		for range 3 {
			if got := show(tokyo, "TimeZone"); got != "Asia/Tokyo" {
				t.Errorf("tokyo client TimeZone = %q", got)
			}
			if got := show(utc, "TimeZone"); got != "UTC" {
				t.Errorf("utc client TimeZone = %q", got)
			}
			if got := show(tokyo, "application_name"); got != "tokyo" {
				t.Errorf("tokyo client application_name = %q", got)
			}
			if got := show(tokyo, "extra_float_digits"); got != "2" {
				t.Errorf("tokyo client extra_float_digits = %q", got)
			}
			if got := show(utc, "extra_float_digits"); got != "1" {
				t.Errorf("utc client extra_float_digits = %q, want the default 1", got)
			}
			if got := show(tokyo, "search_path"); got != "pg_catalog, public" {
				t.Errorf("tokyo client search_path = %q", got)
			}
		}
		// A reported setting changed with SET follows the client.
		if _, err := tokyo.Exec(ctx, "SET TimeZone = 'Europe/Paris'"); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if got := show(tokyo, "TimeZone"); got != "Europe/Paris" {
				t.Errorf("tokyo client after SET: TimeZone = %q", got)
			}
			if got := show(utc, "TimeZone"); got != "UTC" {
				t.Errorf("utc client after the other's SET: TimeZone = %q", got)
			}
		}
		if got := tokyo.PgConn().ParameterStatus("TimeZone"); got != "Europe/Paris" {
			t.Errorf("ParameterStatus TimeZone seen by the client = %q", got)
		}
		if got := utc.PgConn().ParameterStatus("TimeZone"); got != "UTC" {
			t.Errorf("ParameterStatus TimeZone seen by the other client = %q", got)
		}
		if _, err := tokyo.Exec(ctx, "SET TimeZone = 'Asia/Tokyo'"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("invalid startup setting", func(t *testing.T) {
		config, err := pgx.ParseConfig(s.connString(db))
		if err != nil {
			t.Fatal(err)
		}
		config.RuntimeParams["DateStyle"] = "nonsense"
		_, err = pgx.ConnectConfig(ctx, config)
		pgErr, ok := errors.AsType[*pgconn.PgError](err)
		if !ok || pgErr.Severity != "FATAL" || pgErr.Code != "22023" {
			t.Errorf("login with DateStyle=nonsense: %v, want FATAL 22023", err)
		}
	})

	t.Run("COPY leaves backends clean", func(t *testing.T) {
		conn := connect(t, nil)
		if _, err := conn.Exec(ctx, "CREATE TABLE copied (n int, s text)"); err != nil {
			t.Fatal(err)
		}
		n, err := conn.CopyFrom(ctx, pgx.Identifier{"copied"}, []string{"n", "s"},
			pgx.CopyFromSlice(1000, func(i int) ([]any, error) { return []any{i, fmt.Sprint("row", i)}, nil }))
		if err != nil || n != 1000 {
			t.Fatalf("binary COPY FROM: %d rows, %v", n, err)
		}
		pc := conn.PgConn()
		if _, err := pc.CopyFrom(ctx, strings.NewReader("1001\tfoo\n1002\tbar\n"), "COPY copied FROM STDIN"); err != nil {
			t.Fatalf("text COPY FROM: %v", err)
		}
		if _, err := pc.CopyFrom(ctx, strings.NewReader("1003\tok\nnot-a-number\tbad\n"), "COPY copied FROM STDIN"); err == nil {
			t.Error("COPY FROM with a bad row in the middle succeeded")
		}
		var out strings.Builder
		tag, err := pc.CopyTo(ctx, &out, "COPY (SELECT n FROM copied WHERE n > 1000 ORDER BY n) TO STDOUT")
		if err != nil || tag.RowsAffected() != 2 || out.String() != "1001\n1002\n" {
			t.Errorf("text COPY TO: %q, %v, %v", out.String(), tag, err)
		}
		var bin strings.Builder
		if _, err := pc.CopyTo(ctx, &bin, "COPY copied TO STDOUT (FORMAT binary)"); err != nil || !strings.HasPrefix(bin.String(), "PGCOPY\n") {
			t.Errorf("binary COPY TO: %d bytes, %v", bin.Len(), err)
		}

		// Extended protocol, libpq's pattern: the Sync after Execute is
		// ignored during the copy, and a second one follows CopyDone.
		c := rawConnect(t, s, db, nil)
		c.send(&pgproto3.Parse{Query: "COPY copied FROM STDIN"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
		expectCopyIn(t, c)
		c.send(&pgproto3.CopyData{Data: []byte("2001\text\n")}, &pgproto3.CopyDone{}, &pgproto3.Sync{})
		expectMessages(t, "extended COPY", c.untilReady(), "C COPY 1", "ZI")
		// CopyFail, then an error in the middle of the stream.
		c.send(&pgproto3.Parse{Query: "COPY copied FROM STDIN"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
		expectCopyIn(t, c)
		c.send(&pgproto3.CopyData{Data: []byte("2002\tfail\n")}, &pgproto3.CopyFail{Message: "client gave up"}, &pgproto3.Sync{})
		expectMessages(t, "extended COPY with CopyFail", c.untilReady(), "E57014", "ZI")
		c.send(&pgproto3.Query{String: "COPY copied FROM STDIN"})
		expectCopyIn(t, c)
		c.send(&pgproto3.CopyData{Data: []byte("2003\tok\nbad\tbad\n")}, &pgproto3.CopyData{Data: []byte("2004\tlate\n")}, &pgproto3.CopyDone{})
		expectMessages(t, "simple COPY with a bad row", c.untilReady(), "E22P02", "ZI")
		// Pipelined without waiting for CopyInResponse.
		c.send(&pgproto3.Parse{Query: "COPY copied FROM STDIN"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{},
			&pgproto3.CopyData{Data: []byte("2005\tpipelined\n")}, &pgproto3.CopyDone{}, &pgproto3.Sync{})
		expectMessages(t, "pipelined extended COPY", c.untilReady(), "ParseComplete", "BindComplete", "CopyInResponse", "C COPY 1", "ZI")

		// Every backend still replies in step.
		for range 4 {
			expectMessages(t, "after the copies", c.query("SELECT count(*) FROM copied WHERE n > 2000"), "D2", "C SELECT 1", "ZI")
		}
	})

	t.Run("wait for a backend", func(t *testing.T) {
		holders := []*pgx.Conn{connect(t, nil), connect(t, nil)}
		for _, h := range holders {
			if _, err := h.Exec(ctx, "BEGIN"); err != nil {
				t.Fatal(err)
			}
		}
		waiter := rawConnect(t, s, db, nil)
		start := time.Now()
		waiter.send(&pgproto3.Query{String: "SELECT 1"})
		var notice string
		_ = waiter.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		for notice == "" {
			msg, err := waiter.fe.Receive()
			if err != nil {
				t.Fatal(err)
			}
			if n, ok := msg.(*pgproto3.NoticeResponse); ok {
				notice = n.Message
			}
		}
		if !strings.Contains(notice, "waiting for a backend connection") {
			t.Errorf("NOTICE %q", notice)
		}
		expectMessages(t, "query after --query-wait-timeout", waiter.untilReady(), "E53300", "ZI")
		if elapsed := time.Since(start); elapsed < 2*time.Second || elapsed > 8*time.Second {
			t.Errorf("wait timed out after %s, want about 2s", elapsed)
		}

		// A CancelRequest ends the wait at once.
		config, err := pgconn.ParseConfig(s.connString(db))
		if err != nil {
			t.Fatal(err)
		}
		canceller, err := pgconn.ConnectConfig(ctx, config)
		if err != nil {
			t.Fatal(err)
		}
		defer canceller.Close(ctx)
		go func() {
			time.Sleep(300 * time.Millisecond)
			_ = canceller.CancelRequest(ctx)
		}()
		start = time.Now()
		_, err = canceller.Exec(ctx, "SELECT 1").ReadAll()
		pgErr, ok := errors.AsType[*pgconn.PgError](err)
		if !ok || pgErr.Code != "57014" {
			t.Errorf("cancelled wait: %v, want SQLSTATE 57014", err)
		}
		if elapsed := time.Since(start); elapsed > 1500*time.Millisecond {
			t.Errorf("cancelled wait returned after %s", elapsed)
		}

		// A released backend goes to the waiter.
		go func() {
			time.Sleep(300 * time.Millisecond)
			_, _ = holders[0].Exec(ctx, "COMMIT")
		}()
		expectMessages(t, "query once a backend is free", waiter.query("SELECT 1"), "D1", "C SELECT 1", "ZI")
		if _, err := holders[1].Exec(ctx, "COMMIT"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("idle in transaction timeout", func(t *testing.T) {
		conn := connect(t, nil)
		if _, err := conn.Exec(ctx, "BEGIN"); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "INSERT INTO items VALUES (99, 'uncommitted')"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Second)
		_, err := conn.Exec(ctx, "SELECT 1")
		pgErr, ok := errors.AsType[*pgconn.PgError](err)
		if !ok || pgErr.Code != "25P03" || pgErr.Severity != "FATAL" {
			t.Errorf("query after 5s idle in a transaction: %v, want FATAL 25P03", err)
		}
		var n int
		if err := admin.QueryRow(ctx, "SELECT count(*) FROM items WHERE id = 99").Scan(&n); err != nil || n != 0 {
			t.Errorf("the abandoned transaction's row: count %d, %v, want rolled back", n, err)
		}
	})

	t.Run("backend ended while idle in the pool", func(t *testing.T) {
		conn := connect(t, nil)
		if _, err := conn.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		for range 3 {
			var one int
			if err := admin.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
				t.Errorf("query after the pooled backends ended: %v", err)
			}
		}
	})

	t.Run("metrics", func(t *testing.T) {
		id := `database_id="` + db.ID + `"`
		for _, m := range []struct{ name, label string }{
			{"sdblocal_proxy_queries_total", ""},
			{"sdblocal_proxy_client_bytes_total", `direction="sent"`},
			{"sdblocal_proxy_client_bytes_total", `direction="received"`},
			{"sdblocal_proxy_pool_wait_timeouts_total", ""},
			{"sdblocal_proxy_connect_duration_seconds_count", `start="warm"`},
			{"sdblocal_proxy_pool_wait_seconds_count", ""},
		} {
			labels := []string{id}
			if m.label != "" {
				labels = append(labels, m.label)
			}
			if v, ok := s.metric(t, m.name, labels...); !ok || v <= 0 {
				t.Errorf("%s{%s} = %v, %v, want > 0", m.name, strings.Join(labels, ","), v, ok)
			}
		}
		if v, _ := s.metric(t, "sdblocal_proxy_backend_connections", id, `state="idle"`); v < 1 || v > 2 {
			t.Errorf("idle backends = %v, want 1 or 2 with --pool-size 2", v)
		}
		if v, _ := s.metric(t, "sdblocal_proxy_database_client_connections", id, `state="idle"`); v < 1 {
			t.Errorf("idle clients = %v, want at least 1", v)
		}
	})
}

func expectCopyIn(t *testing.T, c *rawConn) {
	t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		msg, err := c.fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		switch m := msg.(type) {
		case *pgproto3.CopyInResponse:
			return
		case *pgproto3.ErrorResponse:
			t.Fatalf("ErrorResponse %s %s before CopyInResponse", m.Code, m.Message)
		}
	}
}

// TestPoolSessionMode checks that a backend is reset with DISCARD ALL
// before its next client, and that LISTEN/NOTIFY works.
func TestPoolSessionMode(t *testing.T) {
	s := startServer(t, "--pool-mode", "session")
	db := s.createDatabase(t, "session", 1, 1)
	ctx := context.Background()

	first, err := pgx.Connect(ctx, s.connString(db))
	if err != nil {
		t.Fatal(err)
	}
	var firstPID int
	if err := first.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&firstPID); err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{"SET search_path = pg_catalog", "PREPARE leftover AS SELECT 1", "SET statement_timeout = '5min'"} {
		if _, err := first.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	first.Close(ctx)

	second, err := pgx.Connect(ctx, s.connString(db))
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close(ctx)
	var pid, prepared int
	var searchPath, timeout string
	err = second.QueryRow(ctx, "SELECT pg_backend_pid(), current_setting('search_path'), current_setting('statement_timeout'), (SELECT count(*) FROM pg_prepared_statements)",
		pgx.QueryExecModeSimpleProtocol).Scan(&pid, &searchPath, &timeout, &prepared)
	if err != nil {
		t.Fatal(err)
	}
	if pid != firstPID {
		t.Logf("the second client got backend %d, not the first client's %d", pid, firstPID)
	}
	if searchPath != `"$user", public` || timeout != "0" || prepared != 0 {
		t.Errorf("second client's session: search_path %q, statement_timeout %q, %d prepared statements; want a fresh session", searchPath, timeout, prepared)
	}

	listener, err := pgx.Connect(ctx, s.connString(db))
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close(ctx)
	if _, err := listener.Exec(ctx, "LISTEN events"); err != nil {
		t.Fatal(err)
	}
	if _, err := second.Exec(ctx, "SELECT pg_notify('events', 'hello')"); err != nil {
		t.Fatal(err)
	}
	waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := listener.WaitForNotification(waitCtx)
	if err != nil || n.Channel != "events" || n.Payload != "hello" {
		t.Errorf("notification: %+v, %v", n, err)
	}
}

// TestPoolManyClientsAcrossSuspend keeps 300 clients connected to a
// database whose instance suspends, more than the 90 backends an instance
// allows, and has all of them query again after the wake.
func TestPoolManyClientsAcrossSuspend(t *testing.T) {
	s := startServer(t, "--idle-timeout", "1s")
	db := s.createDatabase(t, "many", 0, 4)
	ctx := context.Background()

	const clients = 300
	conns := make([]*pgconn.PgConn, clients)
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	config, err := pgconn.ParseConfig(s.connString(db))
	if err != nil {
		t.Fatal(err)
	}
	for i := range conns {
		wg.Go(func() {
			conn, err := pgconn.ConnectConfig(ctx, config)
			if err != nil {
				errs <- err
				return
			}
			conns[i] = conn
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("connect: %v", err)
	}
	defer func() {
		for _, conn := range conns {
			conn.Close(ctx)
		}
	}()

	pid := s.postmasterPID(t, db.ID)
	waitFor(t, 20*time.Second, "the instance to suspend with 300 idle clients", func() bool { return pid == 0 || !processAlive(pid) })

	errs = make(chan error, clients)
	for _, conn := range conns {
		wg.Go(func() {
			if _, err := conn.Exec(ctx, "SELECT 1").ReadAll(); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if failed == 0 {
			t.Errorf("query after the wake: %v", err)
		}
		failed++
	}
	if failed > 0 {
		t.Errorf("%d of %d clients failed after the wake", failed, clients)
	}
	if v, _ := s.metric(t, "sdblocal_proxy_backend_connections", `database_id="`+db.ID+`"`, `state="idle"`); v > 40 {
		t.Errorf("idle backends after the wake = %v, want at most 40 (10 × cpu_current)", v)
	}
}

// TestCancelDuringWakeAndRateLimit cancels a query that waits for its
// instance to wake, and checks that CancelRequests are limited per client
// address.
func TestCancelDuringWakeAndRateLimit(t *testing.T) {
	s := startServer(t, "--idle-timeout", "300ms", "--cold-start-delay", "3s")
	db := s.createDatabase(t, "cancelwake", 0, 1)
	ctx := context.Background()

	config, err := pgconn.ParseConfig(s.connString(db))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgconn.ConnectConfig(ctx, config)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	waitFor(t, 20*time.Second, "the instance to suspend", func() bool { return s.postmasterPID(t, db.ID) == 0 })

	go func() {
		time.Sleep(300 * time.Millisecond)
		_ = conn.CancelRequest(ctx)
	}()
	start := time.Now()
	_, err = conn.Exec(ctx, "SELECT 1").ReadAll()
	pgErr, ok := errors.AsType[*pgconn.PgError](err)
	if !ok || pgErr.Code != "57014" {
		t.Errorf("query cancelled during the wake: %v, want SQLSTATE 57014", err)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("cancelled query returned after %s, want before the 3s cold start ended", elapsed)
	}
	if n, _ := s.metric(t, "sdblocal_proxy_cancel_requests_total", `outcome="wait_canceled"`); n != 1 {
		t.Errorf(`sdblocal_proxy_cancel_requests_total{outcome="wait_canceled"} = %v, want 1`, n)
	}
	// The session goes on once the instance is up.
	if _, err := conn.Exec(ctx, "SELECT 1").ReadAll(); err != nil {
		t.Errorf("query after the cancelled one: %v", err)
	}

	// 30 CancelRequests in a burst: the first 20 pass the limit of 10
	// per second with bursts of 20, most of the rest do not.
	for range 30 {
		c := dialWire(t, s)
		c.write(wireLengthPrefixed(wireWords(wireCancelRequestCode, 1, 0)))
		c.expectClosed()
	}
	waitFor(t, 5*time.Second, "rate-limited CancelRequests to be counted", func() bool {
		n, _ := s.metric(t, "sdblocal_proxy_cancel_requests_total", `outcome="rate_limited"`)
		return n >= 5
	})
}
