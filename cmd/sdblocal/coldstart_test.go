package main

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// These tests check the cold-start emulation: a wake held back by
// --cold-start-delay or a database's cold_start_delay, which a client sees
// as a slow login and never as an error.

// timedPsql runs SELECT 1 as the owner with PGCONNECT_TIMEOUT set to
// timeout seconds, and returns psql's output, run time and error.
func timedPsql(s *testServer, databaseName, databaseID string, timeout int) (string, time.Duration, error) {
	started := time.Now()
	out, err := runPsqlEnv([]string{fmt.Sprintf("PGCONNECT_TIMEOUT=%d", timeout)},
		psqlURL(s, s.creds.PrincipalID, s.creds.SecretKey, databaseName, databaseID), "SELECT 1")
	return out, time.Since(started), err
}

func TestColdStartDelayAgainstConnectTimeout(t *testing.T) {
	const delay = 3 * time.Second
	s := startServer(t, "--idle-timeout", "500ms", "--cold-start-delay", "3s")
	db := s.createDatabase(t, "cold", 0, 2)

	// libpq's connect_timeout covers the whole login, so a client whose
	// time-out is shorter than the delay gives up.
	out, elapsed, err := timedPsql(s, db.Name, db.ID, 2)
	if err == nil {
		t.Fatalf("psql with a 2 s connect time-out succeeded after %s against a %s cold start:\n%s", elapsed, delay, out)
	}
	if !strings.Contains(out, "timeout expired") {
		t.Errorf("psql output %q, want libpq's \"timeout expired\"", out)
	}
	if elapsed >= delay {
		t.Errorf("psql gave up after %s, want before the %s delay ended", elapsed, delay)
	}

	// The abandoned wake still completes; once it has, and the instance
	// has suspended again, the next client meets a full delay.
	wakes := func() float64 { return metricValue(t, s, "sdblocal_instance_wakes_total", `database_id="`+db.ID+`"`) }
	waitFor(t, 15*time.Second, "the abandoned wake to complete", func() bool { return wakes() == 1 })
	waitFor(t, 15*time.Second, "the instance to suspend", func() bool { return s.postmasterPID(t, db.ID) == 0 })

	out, elapsed, err = timedPsql(s, db.Name, db.ID, 10)
	if err != nil {
		t.Fatalf("psql with a 10 s connect time-out failed after %s against a %s cold start: %v\n%s", elapsed, delay, err, out)
	}
	if out != "1" {
		t.Errorf("psql printed %q, want 1", out)
	}
	if elapsed < delay {
		t.Errorf("login through a cold start took %s, want at least the %s delay", elapsed, delay)
	}

	// The database's own cold_start_delay overrides the flag; 0 turns the
	// delay off.
	waitFor(t, 15*time.Second, "the instance to suspend", func() bool { return s.postmasterPID(t, db.ID) == 0 })
	status, body := s.apiRequest(t, http.MethodPatch, "/serverless-sqldb/v1alpha1/regions/fr-par/databases/"+db.ID,
		strings.NewReader(`{"cold_start_delay":"0"}`))
	if status != http.StatusOK {
		t.Fatalf("PATCH cold_start_delay: status %d, body %v", status, body)
	}
	if body["cold_start_delay"] != "0s" {
		t.Errorf("PATCH returned cold_start_delay %v, want 0s", body["cold_start_delay"])
	}
	out, elapsed, err = timedPsql(s, db.Name, db.ID, 2)
	if err != nil {
		t.Fatalf("psql with a 2 s connect time-out failed after %s with the delay turned off: %v\n%s", elapsed, err, out)
	}
	if elapsed >= time.Second {
		t.Errorf("login through a wake without delay took %s, want well under 1 s", elapsed)
	}

	if n := metricValue(t, s, "sdblocal_instance_wakes_total", `database_id="`+db.ID+`"`); n != 3 {
		t.Errorf("sdblocal_instance_wakes_total = %v, want 3", n)
	}
	if got := metricValue(t, s, "sdblocal_instance_cold_start_delay_seconds_total", `database_id="`+db.ID+`"`); got != 2*delay.Seconds() {
		t.Errorf("sdblocal_instance_cold_start_delay_seconds_total = %v, want %v (two delayed wakes)", got, 2*delay.Seconds())
	}
	if got := metricValue(t, s, "sdblocal_instance_wake_seconds_total", `database_id="`+db.ID+`"`); got < 2*delay.Seconds() {
		t.Errorf("sdblocal_instance_wake_seconds_total = %v, want at least %v: the delay counts in the wake", got, 2*delay.Seconds())
	}
	if got := metricValue(t, s, "sdblocal_instance_wake_duration_seconds_bucket", `le="2"`); got != 1 {
		t.Errorf("wakes of at most 2 s in the histogram = %v, want 1, the wake without delay", got)
	}
	delayedWakes := regexp.MustCompile(`msg="instance woke" .*cold_start_delay=3s `).FindAllString(s.logs.String(), -1)
	if len(delayedWakes) != 2 {
		t.Errorf("%d \"instance woke\" log lines with cold_start_delay=3s, want 2:\n%s", len(delayedWakes), s.logs)
	}
}

func TestColdStartDelayRangeOnCreate(t *testing.T) {
	s := startServer(t)
	status, body := s.apiRequest(t, http.MethodPost, "/serverless-sqldb/v1alpha1/regions/fr-par/databases",
		strings.NewReader(`{"project_id":"`+s.creds.ProjectID+`","name":"ranged","cpu_min":0,"cpu_max":1,"cold_start_delay":"1s-1500ms"}`))
	if status != http.StatusOK {
		t.Fatalf("create with cold_start_delay: status %d, body %v", status, body)
	}
	if body["cold_start_delay"] != "1s-1.5s" {
		t.Errorf("created cold_start_delay = %v, want 1s-1.5s", body["cold_start_delay"])
	}
	id := body["id"].(string)
	waitFor(t, 60*time.Second, "the database to be ready", func() bool {
		return string(s.getDatabase(t, id).Status) == "ready"
	})

	out, elapsed, err := timedPsql(s, "ranged", id, 10)
	if err != nil {
		t.Fatalf("psql failed after %s: %v\n%s", elapsed, err, out)
	}
	if elapsed < time.Second {
		t.Errorf("login through a cold start of 1s-1.5s took %s, want at least 1 s", elapsed)
	}
	delay := metricValue(t, s, "sdblocal_instance_cold_start_delay_seconds_total", `database_id="`+id+`"`)
	if delay < 1 || delay > 1.5 {
		t.Errorf("sdblocal_instance_cold_start_delay_seconds_total = %v, want from 1 to 1.5", delay)
	}
}
