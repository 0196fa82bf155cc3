package main

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/sdblocal/sdblocal/auth"
	"github.com/sdblocal/sdblocal/catalog"
)

// logEntry is one line of the server's log in --log-format json.
type logEntry map[string]any

// jsonLogs parses every line of the server's output that is a JSON
// object; the welcome text printed on standard output is skipped.
func (s *testServer) jsonLogs(t *testing.T) []logEntry {
	t.Helper()
	var entries []logEntry
	for _, line := range strings.Split(s.logs.String(), "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var entry logEntry
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Fatalf("log line is not valid JSON: %v\n%s", err, line)
		}
		entries = append(entries, entry)
	}
	if len(entries) == 0 {
		t.Fatalf("no JSON log lines in the server's output:\n%s", s.logs)
	}
	return entries
}

// matching returns the entries with message msg whose attributes include
// every key and value of attrs.
func matching(entries []logEntry, msg string, attrs map[string]any) []logEntry {
	var out []logEntry
	for _, e := range entries {
		if e["msg"] != msg {
			continue
		}
		ok := true
		for k, v := range attrs {
			if e[k] != v {
				ok = false
			}
		}
		if ok {
			out = append(out, e)
		}
	}
	return out
}

// expireKeys moves the expiry of every API key of a principal into the
// past, in the catalog of a stopped server.
func expireKeys(t *testing.T, dataDir, principalID string) {
	t.Helper()
	past := time.Now().Add(-time.Hour).UTC()
	editCatalog(t, dataDir, func(tx *catalog.Tx) error {
		keys, err := tx.APIKeysOfPrincipal(principalID)
		if err != nil {
			return err
		}
		for _, key := range keys {
			if err := tx.DeleteAPIKey(key.AccessKey); err != nil {
				return err
			}
			key.ExpiresAt = &past
			if err := tx.PutAPIKey(key); err != nil {
				return err
			}
		}
		return nil
	})
}

// scramProofPattern matches the proof of a SCRAM client-final message
// (RFC 5802: "c=...,r=...,p=<base64>").
var scramProofPattern = regexp.MustCompile(`,p=[A-Za-z0-9+/]{20,}`)

// TestLogEventsOnce drives one server through a start, wakes, suspends, a
// scaling step, every kind of rejected login and a stop. Each event must
// be logged exactly once with its ids and in the numbers the metrics
// count, and no secret may reach the log.
func TestLogEventsOnce(t *testing.T) {
	dataDir := newDataDir(t)
	first := startServerIn(t, dataDir)
	db := first.createDatabase(t, "logged", 0, 2)
	first.stop()
	noPolicy := addPrincipal(t, dataDir, first.creds, "no-policy")
	expired := addPrincipal(t, dataDir, first.creds, "expired", []auth.PermissionSet{auth.FullAccess})
	expireKeys(t, dataDir, expired.id)

	s := startServerIn(t, dataDir, "--log-format", "json", "--idle-timeout", "300ms", "--handshake-timeout", "1s")
	ctx := context.Background()

	// Two wakes, each followed by a suspend.
	for range 2 {
		s.mustPsql(t, db, "SELECT 1")
		waitFor(t, 15*time.Second, "the instance to suspend", func() bool { return s.postmasterPID(t, db.ID) == 0 })
	}

	// A scaling step: raising cpu_min above the allocation of a running
	// instance scales it at once. The open transaction keeps it running.
	conn, err := pgx.Connect(ctx, s.connString(db))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	databasePath := "/serverless-sqldb/v1alpha1/regions/fr-par/databases/" + db.ID
	for _, body := range []string{`{"cpu_min":2}`, `{"cpu_min":0}`} {
		if status, out := s.apiRequest(t, http.MethodPatch, databasePath, strings.NewReader(body)); status != http.StatusOK {
			t.Fatalf("PATCH %s: status %d, body %v", body, status, out)
		}
	}
	if _, err := conn.Exec(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	waitFor(t, 15*time.Second, "the instance to suspend", func() bool { return s.postmasterPID(t, db.ID) == 0 })

	// One rejected login of each reason.
	wrongSecret := auth.NewSecretKey()
	unknownPrincipal, unknownSecret := uuid.NewString(), auth.NewSecretKey()
	logins := []struct {
		reason, user, password string
		url                    string
	}{
		{reason: "invalid_credentials", user: s.creds.PrincipalID, password: wrongSecret},
		{reason: "unknown_principal", user: unknownPrincipal, password: unknownSecret},
		{reason: "expired_key", user: expired.id, password: expired.secret},
		{reason: "no_permission", user: noPolicy.id, password: noPolicy.secret},
		{reason: "tls_required", user: s.creds.PrincipalID, password: s.creds.SecretKey,
			url: strings.Replace(psqlURL(s, s.creds.PrincipalID, s.creds.SecretKey, db.Name, db.ID), "sslmode=require", "sslmode=disable", 1)},
	}
	for _, login := range logins {
		connString := login.url
		if connString == "" {
			connString = psqlURL(s, login.user, login.password, db.Name, db.ID)
		}
		if out, err := runPsql(connString, "SELECT 1"); err == nil {
			t.Errorf("login expected to fail with %s succeeded:\n%s", login.reason, out)
		}
	}

	silent := dialWire(t, s)
	timeout := silent.receive()
	if e, ok := timeout.(*pgproto3.ErrorResponse); !ok || e.Code != "08P01" {
		t.Errorf("silent client got %T %+v, want ErrorResponse 08P01 after the handshake time-out", timeout, timeout)
	}
	silent.expectClosed()

	malformed := dialWireTLS(t, s)
	malformed.login("user", s.creds.PrincipalID, "database", db.Name, "options", "databaseid="+db.ID)
	malformed.fe.Send(&pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-1", Data: []byte("n,,n=,r=abc")})
	if err := malformed.fe.Flush(); err != nil {
		t.Fatal(err)
	}
	malformed.expectFatal("08P01", "client selected an invalid SASL authentication mechanism", false)

	wakes := metricValue(t, s, "sdblocal_instance_wakes_total", `database_id="`+db.ID+`"`)
	idleSuspends := metricValue(t, s, "sdblocal_instance_suspends_total", `database_id="`+db.ID+`"`, `reason="idle_timeout"`)
	failures := map[string]float64{}
	for _, reason := range []string{"invalid_credentials", "unknown_principal", "expired_key", "no_permission", "tls_required", "handshake_timeout", "protocol_violation"} {
		failures[reason] = metricValue(t, s, "sdblocal_proxy_authentication_failures_total", `reason="`+reason+`"`)
	}
	s.stop()
	entries := s.jsonLogs(t)

	t.Run("start and stop", func(t *testing.T) {
		if n := len(matching(entries, "sdblocal ready", nil)); n != 1 {
			t.Errorf("%d \"sdblocal ready\" lines, want 1", n)
		}
		if n := len(matching(entries, "stopped", nil)); n != 1 {
			t.Errorf("%d \"stopped\" lines, want 1", n)
		}
	})

	t.Run("wakes", func(t *testing.T) {
		woke := matching(entries, "instance woke", map[string]any{"database_id": db.ID})
		if wakes != 3 {
			t.Errorf("sdblocal_instance_wakes_total = %v, want 3", wakes)
		}
		if float64(len(woke)) != wakes {
			t.Errorf("%d \"instance woke\" lines, want %v as counted in sdblocal_instance_wakes_total", len(woke), wakes)
		}
		for _, e := range woke {
			if d, ok := e["duration"].(float64); !ok || d <= 0 {
				t.Errorf("wake logged with duration %v, want a positive number of nanoseconds", e["duration"])
			}
			if _, ok := e["pid"].(float64); !ok {
				t.Errorf("wake logged without pid: %v", e)
			}
			if _, ok := e["cold_start_delay"]; !ok {
				t.Errorf("wake logged without cold_start_delay: %v", e)
			}
		}
	})

	t.Run("suspends", func(t *testing.T) {
		suspended := matching(entries, "instance suspended", map[string]any{"database_id": db.ID, "reason": "idle_timeout"})
		if idleSuspends != 3 {
			t.Errorf("sdblocal_instance_suspends_total{reason=\"idle_timeout\"} = %v, want 3", idleSuspends)
		}
		if float64(len(suspended)) != idleSuspends {
			t.Errorf("%d \"instance suspended\" lines with reason idle_timeout, want %v as counted", len(suspended), idleSuspends)
		}
	})

	t.Run("scaling", func(t *testing.T) {
		scaled := matching(entries, "instance scaled", map[string]any{"database_id": db.ID})
		if len(scaled) != 1 {
			t.Fatalf("%d \"instance scaled\" lines, want 1: %v", len(scaled), scaled)
		}
		if scaled[0]["from"] != 1.0 || scaled[0]["to"] != 2.0 {
			t.Errorf("scaling step logged from %v to %v, want 1 to 2", scaled[0]["from"], scaled[0]["to"])
		}
		if n := len(matching(entries, "database updated", map[string]any{"database_id": db.ID})); n != 2 {
			t.Errorf("%d \"database updated\" lines, want 2", n)
		}
	})

	t.Run("rejected logins", func(t *testing.T) {
		principals := map[string]string{
			"invalid_credentials": s.creds.PrincipalID,
			"unknown_principal":   unknownPrincipal,
			"expired_key":         expired.id,
			"no_permission":       noPolicy.id,
			"protocol_violation":  s.creds.PrincipalID,
		}
		for reason, count := range failures {
			if count != 1 {
				t.Errorf("sdblocal_proxy_authentication_failures_total{reason=%q} = %v, want 1", reason, count)
			}
			rejected := matching(entries, "client rejected", map[string]any{"auth_failure": reason})
			if len(rejected) != 1 {
				t.Errorf("%d \"client rejected\" lines with auth_failure %s, want 1", len(rejected), reason)
				continue
			}
			if want, ok := principals[reason]; ok && rejected[0]["principal_id"] != want {
				t.Errorf("rejected login %s logged with principal_id %v, want %s", reason, rejected[0]["principal_id"], want)
			}
			if _, ok := rejected[0]["client_addr"]; !ok {
				t.Errorf("rejected login %s logged without client_addr", reason)
			}
		}
		// The database is named in the message, which the log keeps as
		// reason.
		if rejected := matching(entries, "client rejected", map[string]any{"auth_failure": "no_permission"}); len(rejected) == 1 {
			if reason, _ := rejected[0]["reason"].(string); !strings.Contains(reason, db.ID) {
				t.Errorf("no_permission rejection logged with reason %q, want it to name database %s", reason, db.ID)
			}
		}
	})

	t.Run("no errors", func(t *testing.T) {
		for _, e := range entries {
			if e["level"] == "ERROR" {
				t.Errorf("unexpected error logged: %v", e)
			}
		}
	})

	t.Run("no secrets", func(t *testing.T) {
		expectNoSecretsInLogs(t, s, wrongSecret, unknownSecret, expired.secret, noPolicy.secret)
		if proof := scramProofPattern.FindString(s.logs.String()); proof != "" {
			t.Errorf("the log contains a SCRAM proof: %s", proof)
		}
	})
}
