package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// These tests check /metrics with the Prometheus project's own tools:
// promtool's linter, and a real Prometheus server that scrapes sdblocal.
// Both come from the Debian package prometheus, which `make tools`
// installs.

// requireTool returns the path of a command, failing the test with the
// package that provides it when it is missing.
func requireTool(t *testing.T, name, debianPackage string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: install the Debian package %s (make tools does)", name, debianPackage)
	}
	return path
}

// scrape returns the body of /metrics.
func (s *testServer) scrape(t *testing.T) []byte {
	t.Helper()
	resp, err := http.Get(s.apiURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: status %d\n%s", resp.StatusCode, body)
	}
	return body
}

// exerciseMetrics makes sdblocal create series in most metric families: a
// wake and a suspend, a failed login, a rejected client and API requests
// with several status codes.
func exerciseMetrics(t *testing.T, s *testServer) string {
	t.Helper()
	db := s.createDatabase(t, "metrics", 0, 2)
	s.mustPsql(t, db, "SELECT 1")
	waitFor(t, 15*time.Second, "the instance to suspend", func() bool { return s.postmasterPID(t, db.ID) == 0 })
	s.mustPsql(t, db, "SELECT 1")

	if out, err := runPsql(psqlURL(s, s.creds.PrincipalID, "wrong-secret", db.Name, db.ID), "SELECT 1"); err == nil {
		t.Fatalf("psql with a wrong secret key succeeded:\n%s", out)
	}
	if status, _ := s.apiRequest(t, http.MethodGet, "/serverless-sqldb/v1alpha1/regions/fr-par/databases/00000000-0000-0000-0000-000000000000", nil); status != http.StatusNotFound {
		t.Errorf("GET of an unknown database: status %d, want 404", status)
	}
	return db.ID
}

func TestMetricsPassPromtool(t *testing.T) {
	promtool := requireTool(t, "promtool", "prometheus")
	s := startServer(t, "--idle-timeout", "300ms")
	exerciseMetrics(t, s)

	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(s.scrape(t))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("promtool check metrics failed: %v\n%s", err, out)
	}
	if len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics reported problems:\n%s", out)
	}
}

// familyPattern matches the "# TYPE name type" lines of the text format.
var familyPattern = regexp.MustCompile(`(?m)^# TYPE (sdblocal_[a-z0-9_]+) (counter|gauge|histogram|summary|untyped)$`)

// docsRowPattern matches a metric row of the table in docs/metrics.md:
// | `name` | type | labels | meaning |.
var docsRowPattern = regexp.MustCompile("(?m)^\\| `(sdblocal_[a-z0-9_]+)` \\| (counter|gauge|histogram) \\|")

func TestMetricsDocumented(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]string{}
	for _, m := range docsRowPattern.FindAllStringSubmatch(string(raw), -1) {
		documented[m[1]] = m[2]
	}

	s := startServer(t, "--idle-timeout", "300ms")
	exerciseMetrics(t, s)
	exposed := familyPattern.FindAllStringSubmatch(string(s.scrape(t)), -1)
	if len(exposed) == 0 {
		t.Fatal("/metrics exposes no sdblocal_ metric family")
	}
	for _, m := range exposed {
		name, kind := m[1], m[2]
		got, ok := documented[name]
		switch {
		case !ok:
			t.Errorf("%s (%s) is exposed but missing from the table in docs/metrics.md", name, kind)
		case got != kind:
			t.Errorf("%s is a %s, but docs/metrics.md says %s", name, kind, got)
		}
	}
}

// prometheusServer is a Prometheus server run for one test, listening on
// loopback with its storage in a temporary directory.
type prometheusServer struct {
	url    string
	cmd    *exec.Cmd
	output *syncBuffer
	exited chan struct{}
}

// startPrometheus runs prometheus scraping target (host:port) every
// second and waits until it reports ready.
func startPrometheus(t *testing.T, target string) *prometheusServer {
	t.Helper()
	binary := requireTool(t, "prometheus", "prometheus")
	dir := t.TempDir()
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: sdblocal
    static_configs:
      - targets: [%q]
`, target)
	configPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(configPath, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}

	p := &prometheusServer{url: fmt.Sprintf("http://127.0.0.1:%d", freePort(t)), output: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(binary,
		"--config.file="+configPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+strings.TrimPrefix(p.url, "http://"),
		"--log.level=warn",
	)
	p.cmd.Stdout, p.cmd.Stderr = p.output, p.output
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("prometheus output:\n%s", p.output)
		}
	})

	waitFor(t, 30*time.Second, "prometheus to be ready", func() bool {
		select {
		case <-p.exited:
			t.Fatalf("prometheus exited before it was ready:\n%s", p.output)
		default:
		}
		resp, err := http.Get(p.url + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

// query evaluates an instant PromQL query and returns the value of each
// series in the result, keyed by its labels in the text format.
func (p *prometheusServer) query(t *testing.T, promQL string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(p.url + "/api/v1/query?query=" + url.QueryEscape(promQL))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("query %q: decode response: %v", promQL, err)
	}
	if body.Status != "success" {
		t.Fatalf("query %q: status %s: %s", promQL, body.Status, body.Error)
	}
	if body.Data.ResultType != "vector" {
		t.Fatalf("query %q: result type %s, want vector", promQL, body.Data.ResultType)
	}
	values := map[string]float64{}
	for _, sample := range body.Data.Result {
		text, _ := sample.Value[1].(string)
		v, err := strconv.ParseFloat(text, 64)
		if err != nil {
			t.Fatalf("query %q: value %v: %v", promQL, sample.Value[1], err)
		}
		values[fmt.Sprint(sample.Metric)] = v
	}
	return values
}

// scalar returns the single value of a query that must return one series.
func (p *prometheusServer) scalar(t *testing.T, promQL string) (float64, bool) {
	t.Helper()
	values := p.query(t, promQL)
	if len(values) != 1 {
		return 0, false
	}
	for _, v := range values {
		return v, true
	}
	return 0, false
}

func TestPrometheusScrapesWake(t *testing.T) {
	s := startServer(t, "--idle-timeout", "500ms")
	db := s.createDatabase(t, "scraped", 0, 2)
	p := startPrometheus(t, strings.TrimPrefix(s.apiURL, "http://"))

	waitFor(t, 30*time.Second, "prometheus to scrape sdblocal", func() bool {
		up, ok := p.scalar(t, `up{job="sdblocal"}`)
		return ok && up == 1
	})
	before, ok := p.scalar(t, `sdblocal_instance_wake_duration_seconds_count{job="sdblocal"}`)
	if !ok {
		t.Fatalf("no wake histogram in prometheus before the first wake:\n%v", p.query(t, `{job="sdblocal",__name__=~"sdblocal_instance.*"}`))
	}

	const wakes = 2
	for i := range wakes {
		s.mustPsql(t, db, "SELECT 1")
		if i < wakes-1 {
			waitFor(t, 15*time.Second, "the instance to suspend", func() bool { return s.postmasterPID(t, db.ID) == 0 })
		}
	}

	byDatabase := fmt.Sprintf(`sdblocal_instance_wakes_total{job="sdblocal",database_id=%q}`, db.ID)
	waitFor(t, 30*time.Second, "prometheus to see both wakes in the counter", func() bool {
		n, ok := p.scalar(t, byDatabase)
		return ok && n == wakes
	})
	waitFor(t, 30*time.Second, "prometheus to see both wakes in the histogram", func() bool {
		n, ok := p.scalar(t, `sdblocal_instance_wake_duration_seconds_count{job="sdblocal"}`)
		return ok && n-before == wakes
	})

	if sum, ok := p.scalar(t, `sdblocal_instance_wake_duration_seconds_sum{job="sdblocal"}`); !ok || sum <= 0 {
		t.Errorf("wake duration sum = %v (found %v), want above 0", sum, ok)
	}
	median, ok := p.scalar(t, `histogram_quantile(0.5, sdblocal_instance_wake_duration_seconds_bucket{job="sdblocal"})`)
	if !ok || median <= 0 || median > 30 {
		t.Errorf("median wake duration from the histogram = %v (found %v), want between 0 and 30 s", median, ok)
	}
	perDatabase := fmt.Sprintf(`sdblocal_instance_wake_seconds_total{job="sdblocal",database_id=%q} / %s`, db.ID, byDatabase)
	if mean, ok := p.scalar(t, perDatabase); !ok || mean <= 0 {
		t.Errorf("mean wake duration of the database = %v (found %v), want above 0", mean, ok)
	}
	if started, ok := p.scalar(t, fmt.Sprintf(`sdblocal_database_started{job="sdblocal",database_id=%q}`, db.ID)); !ok || (started != 0 && started != 1) {
		t.Errorf("sdblocal_database_started = %v (found %v), want 0 or 1", started, ok)
	}
}
