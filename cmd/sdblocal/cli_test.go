package main

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// cli runs `sdblocal args...` against s and returns its output. With env
// nil, the command falls back to the server's credentials file.
func (s *testServer) cli(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	// --data-dir goes before any "--", after which arguments are psql's.
	withDir := []string{}
	for i, arg := range args {
		if arg == "--" {
			withDir = append(withDir, "--data-dir", s.dataDir)
			withDir = append(withDir, args[i:]...)
			break
		}
		withDir = append(withDir, arg)
	}
	if len(withDir) == len(args) {
		withDir = append(withDir, "--data-dir", s.dataDir)
	}
	cmd := exec.Command(sdblocalBinary, withDir...)
	cmd.Env = append(serverEnv(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (s *testServer) mustCLI(t *testing.T, env []string, args ...string) string {
	t.Helper()
	out, err := s.cli(t, env, args...)
	if err != nil {
		t.Fatalf("sdblocal %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

type cliDatabase struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Status  string `json:"status"`
	CPUMin  int    `json:"cpu_min"`
	CPUMax  int    `json:"cpu_max"`
	Started bool   `json:"started"`
}

func TestCLIDatabaseCommands(t *testing.T) {
	s := startServer(t)

	var created cliDatabase
	out := s.mustCLI(t, nil, "db", "create", "cli-db", "--cpu-max", "3", "-o", "json")
	if err := json.Unmarshal([]byte(out), &created); err != nil {
		t.Fatalf("db create -o json output is not JSON: %v\n%s", err, out)
	}
	if created.Status != "ready" || created.Name != "cli-db" || created.CPUMax != 3 {
		t.Errorf("db create returned %+v, want a ready database cli-db with cpu_max 3", created)
	}

	table := s.mustCLI(t, nil, "db", "list")
	if !strings.HasPrefix(table, "ID") || !strings.Contains(table, created.ID) || !strings.Contains(table, "cli-db") {
		t.Errorf("db list table lacks its header or the database:\n%s", table)
	}
	if got := s.mustCLI(t, nil, "db", "list", "--name", "nomatch"); strings.Contains(got, created.ID) {
		t.Errorf("db list --name nomatch lists the database:\n%s", got)
	}
	if got := s.mustCLI(t, nil, "db", "get", created.ID); !strings.Contains(got, created.ID) {
		t.Errorf("db get output lacks the ID:\n%s", got)
	}

	var updated cliDatabase
	out = s.mustCLI(t, nil, "db", "update", created.ID, "--cpu-min", "1", "-o", "json")
	if err := json.Unmarshal([]byte(out), &updated); err != nil || updated.CPUMin != 1 {
		t.Errorf("db update --cpu-min 1: %+v, %v\n%s", updated, err, out)
	}
	if out, err := s.cli(t, nil, "db", "update", created.ID); err == nil || !strings.Contains(out, "--cpu-min or --cpu-max") {
		t.Errorf("db update without flags: %v\n%s", err, out)
	}

	got := s.mustCLI(t, nil, "db", "connect", created.ID, "--", "-X", "-A", "-t", "-c", "SELECT current_database()")
	if strings.TrimSpace(got) != "cli-db" {
		t.Errorf("db connect ran psql with output %q, want cli-db", got)
	}

	if out, err := s.cli(t, nil, "db", "restore", created.ID, "--backup-id", "00000000-0000-4000-8000-000000000000"); err == nil || !strings.Contains(strings.ToLower(out), "not found") {
		t.Errorf("db restore of a missing backup: %v\n%s", err, out)
	}
	if out, err := s.cli(t, nil, "db", "get", "not-a-uuid"); err == nil || !strings.Contains(out, "database_id") {
		t.Errorf("db get with a malformed ID: %v\n%s", err, out)
	}
	if out, err := s.cli(t, nil, "db", "list", "-o", "yaml"); err == nil || !strings.Contains(out, "--output") {
		t.Errorf("db list -o yaml: %v\n%s", err, out)
	}

	s.mustCLI(t, nil, "db", "delete", created.ID)
	waitFor(t, 30*time.Second, "the deleted database to disappear", func() bool {
		out, err := s.cli(t, nil, "db", "get", created.ID)
		return err != nil && strings.Contains(out, "insufficient permissions") && strings.Contains(out, "was deleted")
	})
}

func TestCLIUsesEnvironment(t *testing.T) {
	s := startServer(t)
	env := []string{
		"SCW_ACCESS_KEY=" + s.creds.AccessKey,
		"SCW_SECRET_KEY=" + s.creds.SecretKey,
		"SCW_DEFAULT_ORGANIZATION_ID=" + s.creds.OrganizationID,
		"SCW_DEFAULT_PROJECT_ID=" + s.creds.ProjectID,
		"SCW_API_URL=" + s.apiURL,
	}
	if out := s.mustCLI(t, env, "db", "list"); !strings.HasPrefix(out, "ID") {
		t.Errorf("db list with the SCW_ environment:\n%s", out)
	}
	bad := append(env[:1:1], "SCW_SECRET_KEY=00000000-0000-4000-8000-000000000000", "SCW_API_URL="+s.apiURL)
	if out, err := s.cli(t, bad, "db", "list"); err == nil || !strings.Contains(out, "authentication") {
		t.Errorf("db list with a wrong secret key: %v\n%s", err, out)
	}
}

func TestCLIBackupCommands(t *testing.T) {
	s := startServer(t)
	db := s.createDatabase(t, "backups", 0, 1)

	out := s.mustCLI(t, nil, "backup", "list", "--database-id", db.ID, "-o", "json")
	var list struct {
		Backups    []any `json:"backups"`
		TotalCount int   `json:"total_count"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("backup list -o json: %v\n%s", err, out)
	}
	const missing = "00000000-0000-4000-8000-000000000000"
	for _, args := range [][]string{{"backup", "get", missing}, {"backup", "export", missing}, {"backup", "download", missing}, {"backup", "create", missing}} {
		if out, err := s.cli(t, nil, args...); err == nil || !strings.Contains(strings.ToLower(out), "not found") {
			t.Errorf("sdblocal %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	s.mustPsql(t, db, "CREATE TABLE kept (x int); INSERT INTO kept VALUES (7)")
	var created struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	out = s.mustCLI(t, nil, "backup", "create", db.ID, "--wait", "-o", "json")
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.ID == "" {
		t.Fatalf("backup create -o json: %v\n%s", err, out)
	}
	if created.Status != "ready" {
		t.Errorf("backup create --wait returned status %q, want ready", created.Status)
	}
	if table := s.mustCLI(t, nil, "backup", "list", "--database-id", db.ID); !strings.Contains(table, created.ID) {
		t.Errorf("backup list lacks the new backup:\n%s", table)
	}

	file := filepath.Join(t.TempDir(), "cli.pg_dump")
	out = s.mustCLI(t, nil, "backup", "download", created.ID, "-f", file)
	if !strings.Contains(out, "wrote") || !strings.Contains(out, file) {
		t.Errorf("backup download output:\n%s", out)
	}
	toc, err := exec.Command("pg_restore", "-l", file).CombinedOutput()
	if err != nil {
		t.Fatalf("pg_restore -l on the downloaded file: %v\n%s", err, toc)
	}
	if !strings.Contains(string(toc), "TABLE DATA public kept") {
		t.Errorf("downloaded archive lacks the table's data:\n%s", toc)
	}
}

func TestCLIIAMCommands(t *testing.T) {
	s := startServer(t)
	db := s.createDatabase(t, "iam-cli", 0, 1)

	var app struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}
	out := s.mustCLI(t, nil, "iam", "application", "create", "ci-bot", "--description", "CI pipeline", "-o", "json")
	if err := json.Unmarshal([]byte(out), &app); err != nil || app.ID == "" || app.Name != "ci-bot" {
		t.Fatalf("iam application create: %+v, %v\n%s", app, err, out)
	}
	if got := s.mustCLI(t, nil, "iam", "application", "list"); !strings.Contains(got, app.ID) {
		t.Errorf("iam application list lacks %s:\n%s", app.ID, got)
	}
	if got := s.mustCLI(t, nil, "iam", "application", "get", app.ID); !strings.Contains(got, "ci-bot") {
		t.Errorf("iam application get:\n%s", got)
	}

	var key struct {
		AccessKey string  `json:"access_key"`
		SecretKey *string `json:"secret_key"`
	}
	out = s.mustCLI(t, nil, "iam", "api-key", "create", "--application-id", app.ID, "--description", "ci", "-o", "json")
	if err := json.Unmarshal([]byte(out), &key); err != nil || key.SecretKey == nil {
		t.Fatalf("iam api-key create: %+v, %v\n%s", key, err, out)
	}
	if got := s.mustCLI(t, nil, "iam", "api-key", "get", key.AccessKey); strings.Contains(got, *key.SecretKey) {
		t.Errorf("iam api-key get shows the secret key:\n%s", got)
	}
	if got := s.mustCLI(t, nil, "iam", "api-key", "list", "--bearer-id", app.ID); !strings.Contains(got, key.AccessKey) {
		t.Errorf("iam api-key list --bearer-id lacks the key:\n%s", got)
	}
	if out, err := s.cli(t, nil, "iam", "api-key", "create"); err == nil || !strings.Contains(out, "exactly one of") {
		t.Errorf("iam api-key create without a bearer: %v\n%s", err, out)
	}

	// Without a policy the application cannot connect; with ReadOnly on
	// the project it can, and its psql session runs.
	appConn := fmt.Sprintf("postgresql://%s:%s@%s:%d/%s?sslmode=require&options=databaseid%%3D%s", app.ID, *key.SecretKey, s.pgHost, s.pgPort, db.Name, db.ID)
	if out, err := exec.Command("psql", "-X", "-c", "SELECT 1", appConn).CombinedOutput(); err == nil || !strings.Contains(string(out), "does not have permission") {
		t.Errorf("psql without a policy: %v\n%s", err, out)
	}
	var policy struct {
		ID string `json:"id"`
	}
	out = s.mustCLI(t, nil, "iam", "policy", "create", "ci-read", "--application-id", app.ID,
		"--permission-set", "ServerlessSQLDatabaseReadOnly", "--project-id", s.creds.ProjectID, "-o", "json")
	if err := json.Unmarshal([]byte(out), &policy); err != nil || policy.ID == "" {
		t.Fatalf("iam policy create: %v\n%s", err, out)
	}
	if got := s.mustCLI(t, nil, "iam", "policy", "list"); !strings.Contains(got, policy.ID) {
		t.Errorf("iam policy list lacks %s:\n%s", policy.ID, got)
	}
	if got := s.mustCLI(t, nil, "iam", "policy", "get", policy.ID); !strings.Contains(got, "ci-read") {
		t.Errorf("iam policy get:\n%s", got)
	}
	if out, err := exec.Command("psql", "-X", "-A", "-t", "-c", "SELECT 1", appConn).CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "1" {
		t.Errorf("psql with a ReadOnly policy: %v\n%s", err, out)
	}
	// A second key shares the principal's SCRAM salt, so both keys log in.
	var second struct {
		SecretKey *string `json:"secret_key"`
	}
	out = s.mustCLI(t, nil, "iam", "api-key", "create", "--application-id", app.ID, "-o", "json")
	if err := json.Unmarshal([]byte(out), &second); err != nil || second.SecretKey == nil {
		t.Fatalf("second iam api-key create: %v\n%s", err, out)
	}
	secondConn := strings.Replace(appConn, *key.SecretKey, *second.SecretKey, 1)
	for name, conn := range map[string]string{"first key": appConn, "second key": secondConn} {
		if out, err := exec.Command("psql", "-X", "-A", "-t", "-c", "SELECT 1", conn).CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "1" {
			t.Errorf("psql with the %s after a second key was created: %v\n%s", name, err, out)
		}
	}
	appEnv := []string{"SCW_ACCESS_KEY=" + key.AccessKey, "SCW_SECRET_KEY=" + *key.SecretKey, "SCW_DEFAULT_PROJECT_ID=" + s.creds.ProjectID,
		"SCW_DEFAULT_ORGANIZATION_ID=" + s.creds.OrganizationID, "SCW_API_URL=" + s.apiURL}
	if got := s.mustCLI(t, appEnv, "db", "list"); !strings.Contains(got, db.ID) {
		t.Errorf("db list as the ReadOnly application lacks the database:\n%s", got)
	}
	if out, err := s.cli(t, appEnv, "db", "create", "denied"); err == nil || !strings.Contains(out, "insufficient permissions") {
		t.Errorf("db create as the ReadOnly application: %v\n%s", err, out)
	}
	if got := s.mustCLI(t, appEnv, "db", "connect", db.ID, "--", "-X", "-A", "-t", "-c", "SELECT 2"); strings.TrimSpace(got) != "2" {
		t.Errorf("db connect as the application (principal looked up through IAM): %q", got)
	}

	s.mustCLI(t, nil, "iam", "policy", "delete", policy.ID)
	s.mustCLI(t, nil, "iam", "api-key", "delete", key.AccessKey)
	s.mustCLI(t, nil, "iam", "application", "delete", app.ID)
	if out, err := s.cli(t, nil, "iam", "application", "get", app.ID); err == nil {
		t.Errorf("iam application get after delete succeeded:\n%s", out)
	}
}
