package api

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// defaultRateLimit is the number of requests per second api.scaleway.com
// advertises in its X-Ratelimit-Limit header ("50, 50;w=1"), as recorded in
// the Terraform provider's serverless-sqldb test cassettes.
const defaultRateLimit = 50

// rateWindow is the period the limit is stated over: the bucket refills
// from empty to full in one window.
const rateWindow = time.Second

// pruneThreshold is the number of tracked keys above which full buckets are
// dropped, so the map stays small without a background goroutine.
const pruneThreshold = 1024

// rateLimiter gives each key a token bucket (golang.org/x/time/rate) that
// holds limit requests and refills at limit per second, so a key may burst
// up to the limit and then sends at the limit's rate. It is safe for
// concurrent use.
//
// NOTE: whether the real API counts per API key, per organization or per
// client address is not documented; sdblocal counts per access key.
type rateLimiter struct {
	limit int
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*rate.Limiter
}

func newRateLimiter(limit int) *rateLimiter {
	return &rateLimiter{limit: limit, now: time.Now, buckets: map[string]*rate.Limiter{}}
}

// take counts one request for key. It returns whether the request is within
// the limit, the whole requests left in the bucket, and the time until the
// next request is allowed when it is not, or until the bucket is full again
// when it is.
func (l *rateLimiter) take(key string) (allowed bool, remaining int, reset time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()

	bucket, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= pruneThreshold {
			l.pruneLocked(now)
		}
		bucket = rate.NewLimiter(rate.Limit(l.limit), l.limit)
		l.buckets[key] = bucket
	}
	allowed = bucket.AllowN(now, 1)
	tokens := bucket.TokensAt(now)
	perToken := rateWindow / time.Duration(l.limit)
	if !allowed {
		return false, 0, time.Duration((1 - tokens) * float64(perToken))
	}
	return true, int(tokens), time.Duration((float64(l.limit) - tokens) * float64(perToken))
}

func (l *rateLimiter) pruneLocked(now time.Time) {
	for key, bucket := range l.buckets {
		if bucket.TokensAt(now) >= float64(l.limit) {
			delete(l.buckets, key)
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
