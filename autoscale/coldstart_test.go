package autoscale

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/sdblocal/sdblocal/catalog"
)

func TestParseColdStartDelay(t *testing.T) {
	valid := []struct {
		in       string
		min, max time.Duration
		text     string
	}{
		{"", 0, 0, "0s"},
		{"0", 0, 0, "0s"},
		{"0s", 0, 0, "0s"},
		{"2s", 2 * time.Second, 2 * time.Second, "2s"},
		{"1s-4s", time.Second, 4 * time.Second, "1s-4s"},
		{" 500ms - 1.5s ", 500 * time.Millisecond, 1500 * time.Millisecond, "500ms-1.5s"},
		{"0-3s", 0, 3 * time.Second, "0s-3s"},
		{"30s", MaxColdStartDelay, MaxColdStartDelay, "30s"},
		{"2s-2s", 2 * time.Second, 2 * time.Second, "2s"},
	}
	for _, tc := range valid {
		got, err := ParseColdStartDelay(tc.in)
		if err != nil {
			t.Errorf("ParseColdStartDelay(%q): %v", tc.in, err)
			continue
		}
		if got.Min != tc.min || got.Max != tc.max {
			t.Errorf("ParseColdStartDelay(%q) = %v..%v, want %v..%v", tc.in, got.Min, got.Max, tc.min, tc.max)
		}
		if got.String() != tc.text {
			t.Errorf("ParseColdStartDelay(%q).String() = %q, want %q", tc.in, got.String(), tc.text)
		}
		again, err := ParseColdStartDelay(got.String())
		if err != nil || again != got {
			t.Errorf("ParseColdStartDelay(%q) = %v, %v; want %v back", got.String(), again, err, got)
		}
	}

	invalid := []struct {
		in, want string
	}{
		{"abc", "not a Go duration"},
		{"2", "not a Go duration"},
		{"-1s", "expected a Go duration"},
		{"1s-", "expected a Go duration"},
		{"4s-1s", "above the upper bound"},
		{"31s", "outside 0 to 30s"},
		{"1s-1m", "outside 0 to 30s"},
		{"1s-2s-3s", "not a Go duration"},
	}
	for _, tc := range invalid {
		_, err := ParseColdStartDelay(tc.in)
		if err == nil {
			t.Errorf("ParseColdStartDelay(%q) succeeded, want an error containing %q", tc.in, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseColdStartDelay(%q) error %q, want it to contain %q", tc.in, err, tc.want)
		}
	}
}

func TestColdStartDelayDrawStaysInRange(t *testing.T) {
	fixed := ColdStartDelay{Min: 2 * time.Second, Max: 2 * time.Second}
	if got := fixed.draw(); got != 2*time.Second {
		t.Errorf("fixed delay drew %s, want 2s", got)
	}
	if got := (ColdStartDelay{}).draw(); got != 0 {
		t.Errorf("zero delay drew %s, want 0", got)
	}

	ranged := ColdStartDelay{Min: time.Second, Max: 4 * time.Second}
	var low, high bool
	for range 1000 {
		got := ranged.draw()
		if got < ranged.Min || got > ranged.Max {
			t.Fatalf("range delay drew %s, outside %s", got, ranged)
		}
		low = low || got < 2*time.Second
		high = high || got > 3*time.Second
	}
	if !low || !high {
		t.Errorf("1000 draws from %s: any below 2s = %v, any above 3s = %v; want both true", ranged, low, high)
	}
}

func TestColdStartDelayPerDatabase(t *testing.T) {
	cat, err := catalog.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cat.Close() })
	logs := &strings.Builder{}
	serverDelay := ColdStartDelay{Min: time.Second, Max: time.Second}
	m := &Manager{cat: cat, cfg: Config{ColdStartDelay: serverDelay, Logger: slog.New(slog.NewTextHandler(logs, nil))}}

	cases := []struct {
		name, stored string
		want         ColdStartDelay
	}{
		{"unset", "", serverDelay},
		{"own range", "2s-3s", ColdStartDelay{Min: 2 * time.Second, Max: 3 * time.Second}},
		{"turned off", "0s", ColdStartDelay{}},
		{"invalid", "soon", serverDelay},
	}
	for _, tc := range cases {
		id := "db-" + strings.ReplaceAll(tc.name, " ", "-")
		err := cat.Update(func(tx *catalog.Tx) error {
			return tx.PutDatabase(catalog.Database{ID: id, Name: id, ColdStartDelay: tc.stored})
		})
		if err != nil {
			t.Fatal(err)
		}
		inst := &Instance{id: id, m: m, logger: m.cfg.Logger.With("database_id", id)}
		if got := inst.coldStartDelay(); got != tc.want {
			t.Errorf("%s: coldStartDelay() = %s, want %s", tc.name, got, tc.want)
		}
	}
	if !strings.Contains(logs.String(), "database_id=db-invalid") {
		t.Errorf("no warning names the database with an invalid delay; log:\n%s", logs)
	}

	missing := &Instance{id: "db-missing", m: m, logger: m.cfg.Logger}
	if got := missing.coldStartDelay(); got != serverDelay {
		t.Errorf("coldStartDelay() of a database without a record = %s, want the server's %s", got, serverDelay)
	}
}

func TestWaitColdStartAborts(t *testing.T) {
	for _, cause := range []string{"removal", "manager close"} {
		m := &Manager{stop: make(chan struct{})}
		inst := &Instance{m: m, removing: make(chan struct{})}
		go func() {
			time.Sleep(20 * time.Millisecond)
			if cause == "removal" {
				close(inst.removing)
			} else {
				close(m.stop)
			}
		}()
		started := time.Now()
		err := inst.waitColdStart(30 * time.Second)
		if !errors.Is(err, errWakeAborted) {
			t.Errorf("%s: waitColdStart = %v, want errWakeAborted", cause, err)
		}
		if elapsed := time.Since(started); elapsed > 5*time.Second {
			t.Errorf("%s: waitColdStart returned after %s, want soon after the abort", cause, elapsed)
		}
	}

	m := &Manager{stop: make(chan struct{})}
	inst := &Instance{m: m, removing: make(chan struct{})}
	started := time.Now()
	if err := inst.waitColdStart(50 * time.Millisecond); err != nil {
		t.Errorf("waitColdStart(50ms) = %v, want nil", err)
	}
	if elapsed := time.Since(started); elapsed < 50*time.Millisecond {
		t.Errorf("waitColdStart(50ms) returned after %s", elapsed)
	}
}
