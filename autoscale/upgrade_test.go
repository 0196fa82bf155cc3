package autoscale

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBootstrapStepsAreConsecutive(t *testing.T) {
	for i, step := range bootstrapSteps {
		if step.version != i+1 {
			t.Errorf("bootstrapSteps[%d].version = %d, want %d", i, step.version, i+1)
		}
		if len(step.statements("db")) == 0 {
			t.Errorf("bootstrap step %d has no statements", step.version)
		}
	}
	if latestBootstrapVersion() != len(bootstrapSteps) {
		t.Errorf("latestBootstrapVersion() = %d, want %d", latestBootstrapVersion(), len(bootstrapSteps))
	}
}

func TestBootstrapQuotesDatabaseName(t *testing.T) {
	for _, step := range bootstrapSteps {
		for _, stmt := range step.statements(`we"ird`) {
			if strings.Contains(stmt, `we"ird`) && !strings.Contains(stmt, `"we""ird"`) {
				t.Errorf("step %d does not quote the database name: %s", step.version, stmt)
			}
		}
	}
}

func newTestLayout(t *testing.T) layout {
	t.Helper()
	l := newLayout(t.TempDir(), "db")
	if err := os.MkdirAll(l.data, 0o700); err != nil {
		t.Fatal(err)
	}
	return l
}

func TestBootstrapVersionMissingFile(t *testing.T) {
	l := newTestLayout(t)
	version, err := readBootstrapVersion(l)
	if err != nil {
		t.Fatal(err)
	}
	if version != 1 {
		t.Errorf("version without a file = %d, want 1", version)
	}
}

func TestBootstrapVersionRoundTrip(t *testing.T) {
	l := newTestLayout(t)
	if err := writeBootstrapVersion(l, 7); err != nil {
		t.Fatal(err)
	}
	version, err := readBootstrapVersion(l)
	if err != nil {
		t.Fatal(err)
	}
	if version != 7 {
		t.Errorf("version = %d, want 7", version)
	}
	if _, err := os.Stat(filepath.Join(l.data, bootstrapVersionFile+".tmp")); !os.IsNotExist(err) {
		t.Errorf("temporary file left behind: %v", err)
	}
}

func TestBootstrapVersionInvalid(t *testing.T) {
	for _, content := range []string{"", "two\n", "0\n", "-3\n"} {
		l := newTestLayout(t)
		if err := os.WriteFile(filepath.Join(l.data, bootstrapVersionFile), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := readBootstrapVersion(l); err == nil {
			t.Errorf("content %q: no error", content)
		}
	}
}

func TestUpdateInstanceConfig(t *testing.T) {
	l := newTestLayout(t)
	path := filepath.Join(l.data, sdblocalConfFile)
	old := strings.Replace(instanceConfText(), "max_prepared_transactions = 0\n", "max_prepared_transactions = 2\n", 1)
	if err := os.WriteFile(path, []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}

	rewrote, err := updateInstanceConfig(l)
	if err != nil {
		t.Fatal(err)
	}
	if !rewrote {
		t.Error("an outdated file was not rewritten")
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(raw) != instanceConfText() {
		t.Errorf("file after rewrite:\n%s\nwant:\n%s", raw, instanceConfText())
	}

	rewrote, err = updateInstanceConfig(l)
	if err != nil {
		t.Fatal(err)
	}
	if rewrote {
		t.Error("an up-to-date file was rewritten")
	}
}

func TestInstanceConfigDisablesPreparedTransactions(t *testing.T) {
	if !strings.Contains(instanceConfText(), "\nmax_prepared_transactions = 0\n") {
		t.Errorf("sdblocal.conf does not set max_prepared_transactions = 0:\n%s", instanceConfText())
	}
}
