package api

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// defaultRateLimit is the number of requests per second api.scaleway.com
// advertises in its X-Ratelimit-Limit header ("50, 50;w=1"), as recorded in
// the Terraform provider's serverless-sqldb test cassettes.
const defaultRateLimit = 50

// rateWindow is how long one budget of requests lasts.
const rateWindow = time.Second

// pruneThreshold is the number of tracked keys above which expired windows
// are dropped, so the map stays small without a background goroutine.
const pruneThreshold = 1024

// rateLimiter counts requests per key in fixed one-second windows that start
// at a key's first request. It is safe for concurrent use.
//
// NOTE: whether the real API counts per API key, per organization or per
// client address is not documented; sdblocal counts per access key.
type rateLimiter struct {
	limit int
	now   func() time.Time

	mu      sync.Mutex
	windows map[string]*keyWindow
}

type keyWindow struct {
	start time.Time
	count int
}

func newRateLimiter(limit int) *rateLimiter {
	return &rateLimiter{limit: limit, now: time.Now, windows: map[string]*keyWindow{}}
}

// take counts one request for key. It returns whether the request is within
// the limit, the requests left in the current window, and the time until the
// window ends.
func (l *rateLimiter) take(key string) (allowed bool, remaining int, reset time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()

	window, ok := l.windows[key]
	if !ok || now.Sub(window.start) >= rateWindow {
		if len(l.windows) >= pruneThreshold {
			l.pruneLocked(now)
		}
		window = &keyWindow{start: now}
		l.windows[key] = window
	}
	reset = window.start.Add(rateWindow).Sub(now)
	if window.count >= l.limit {
		return false, 0, reset
	}
	window.count++
	return true, l.limit - window.count, reset
}

func (l *rateLimiter) pruneLocked(now time.Time) {
	for key, window := range l.windows {
		if now.Sub(window.start) >= rateWindow {
			delete(l.windows, key)
		}
	}
}

// limitRequest counts the request against key, sets the X-Ratelimit headers
// the real API sends, and returns a 429 error when the key is over its limit.
func (l *rateLimiter) limitRequest(w http.ResponseWriter, key string) error {
	allowed, remaining, reset := l.take(key)
	resetSeconds := strconv.Itoa(int((reset + time.Second - 1) / time.Second))

	h := w.Header()
	h.Set("X-Ratelimit-Limit", fmt.Sprintf("%d, %d;w=%d", l.limit, l.limit, int(rateWindow/time.Second)))
	h.Set("X-Ratelimit-Remaining", strconv.Itoa(remaining))
	h.Set("X-Ratelimit-Reset", resetSeconds)
	if allowed {
		return nil
	}
	h.Set("Retry-After", resetSeconds)
	return genericError(http.StatusTooManyRequests, "too_many_requests",
		fmt.Sprintf("rate limit exceeded: at most %d requests per second per API key, retry in %s s", l.limit, resetSeconds))
}
