package api

import (
	"net/http"
	"sync"
	"testing"
	"time"

	sdb "github.com/scaleway/scaleway-sdk-go/api/serverless_sqldb/v1alpha1"
	"github.com/scaleway/scaleway-sdk-go/scw"
)

// fakeClock is a settable time source for the rate limiter.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestRateLimiterBuckets(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	limiter := newRateLimiter(2)
	limiter.now = clock.Now

	// A bucket of 2 refilling at 2 per second: one token every 500 ms.
	steps := []struct {
		advance   time.Duration
		key       string
		allowed   bool
		remaining int
		reset     time.Duration
	}{
		{0, "a", true, 1, 500 * time.Millisecond},
		{0, "a", true, 0, time.Second},
		{0, "a", false, 0, 500 * time.Millisecond},
		{0, "b", true, 1, 500 * time.Millisecond},
		{250 * time.Millisecond, "a", false, 0, 250 * time.Millisecond},
		{250 * time.Millisecond, "a", true, 0, time.Second},
		{time.Second, "a", true, 1, 500 * time.Millisecond},
	}
	for i, step := range steps {
		clock.Advance(step.advance)
		allowed, remaining, reset := limiter.take(step.key)
		if allowed != step.allowed || remaining != step.remaining || reset != step.reset {
			t.Errorf("step %d (key %s): allowed, remaining, reset = %v, %d, %v; want %v, %d, %v",
				i, step.key, allowed, remaining, reset, step.allowed, step.remaining, step.reset)
		}
	}
}

func TestRateLimiterPrunesExpiredKeys(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	limiter := newRateLimiter(1)
	limiter.now = clock.Now
	for i := range pruneThreshold {
		limiter.take(string(rune('A' + i)))
	}
	clock.Advance(2 * time.Second)
	limiter.take("new")
	if n := len(limiter.buckets); n != 1 {
		t.Errorf("tracked keys = %d after pruning, want 1", n)
	}
}

func TestRateLimitOverHTTP(t *testing.T) {
	env := newTestEnv(t, func(cfg *Config) { cfg.RateLimit = 2 })
	clock := &fakeClock{now: time.Now()}
	env.server.limiter.now = clock.Now

	for i, wantRemaining := range []string{"1", "0"} {
		resp := env.ownerDo(http.MethodGet, databasesPath, "")
		if resp.status != http.StatusOK {
			t.Fatalf("request %d: status = %d, want 200", i, resp.status)
		}
		if got := resp.header.Get("X-Ratelimit-Limit"); got != "2, 2;w=1" {
			t.Errorf("X-Ratelimit-Limit = %q, want %q", got, "2, 2;w=1")
		}
		if got := resp.header.Get("X-Ratelimit-Remaining"); got != wantRemaining {
			t.Errorf("request %d: X-Ratelimit-Remaining = %q, want %s", i, got, wantRemaining)
		}
	}

	resp := env.ownerDo(http.MethodGet, databasesPath, "")
	if resp.status != http.StatusTooManyRequests {
		t.Fatalf("third request: status = %d, want 429", resp.status)
	}
	if resp.decode(t)["type"] != "too_many_requests" || resp.header.Get("Retry-After") != "1" {
		t.Errorf("429 response: body %s, Retry-After %q; want type too_many_requests, 1", resp.body, resp.header.Get("Retry-After"))
	}
	_, err := env.api.ListDatabases(&sdb.ListDatabasesRequest{})
	if responseErr, ok := err.(*scw.ResponseError); !ok || responseErr.StatusCode != http.StatusTooManyRequests {
		t.Errorf("SDK error = %T %v, want *scw.ResponseError with status 429", err, err)
	}

	clock.Advance(time.Second)
	if resp := env.ownerDo(http.MethodGet, databasesPath, ""); resp.status != http.StatusOK {
		t.Errorf("after the window: status = %d, want 200", resp.status)
	}
}

func TestRateLimitDefault(t *testing.T) {
	env := newTestEnv(t, func(cfg *Config) { cfg.RateLimit = 0 })
	resp := env.ownerDo(http.MethodGet, databasesPath, "")
	if got := resp.header.Get("X-Ratelimit-Limit"); got != "50, 50;w=1" {
		t.Errorf("X-Ratelimit-Limit = %q, want %q", got, "50, 50;w=1")
	}
}
