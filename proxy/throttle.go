package proxy

import (
	"sync"
	"time"
)

// maxThrottleEntries bounds the failed-login records kept, so that a
// client trying many user names cannot grow the map without limit. Past
// it, records idle for the reset period are dropped first, then arbitrary
// ones.
const maxThrottleEntries = 10000

// loginThrottle computes the delay before the reply to a failed login.
// Failures are counted per client address and per principal (the user
// name as sent, known or not). The delay is base doubled for each earlier
// failure of whichever of the two has more, capped at max. A record is
// forgotten after a successful login from that address or for that
// principal, or after reset without failures.
type loginThrottle struct {
	base, max, reset time.Duration
	now              func() time.Time

	mu      sync.Mutex
	records map[string]*failureRecord
}

type failureRecord struct {
	failures int
	last     time.Time
}

func newLoginThrottle(base, max, reset time.Duration) *loginThrottle {
	return &loginThrottle{base: base, max: max, reset: reset, now: time.Now, records: map[string]*failureRecord{}}
}

// failed records a failed login from addr for user and returns the delay
// to apply before replying.
func (t *loginThrottle) failed(addr, user string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	failures := 0
	for _, key := range []string{"addr:" + addr, "user:" + user} {
		rec := t.records[key]
		if rec == nil || now.Sub(rec.last) > t.reset {
			t.makeRoom(now)
			rec = &failureRecord{}
			t.records[key] = rec
		}
		rec.failures++
		rec.last = now
		failures = max(failures, rec.failures)
	}
	return t.delay(failures)
}

// succeeded clears the failure records of addr and user.
func (t *loginThrottle) succeeded(addr, user string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.records, "addr:"+addr)
	delete(t.records, "user:"+user)
}

// delay returns base·2^(failures-1), capped at max.
func (t *loginThrottle) delay(failures int) time.Duration {
	d := t.base
	for i := 1; i < failures && d < t.max; i++ {
		d *= 2
	}
	return min(d, t.max)
}

// makeRoom drops records when the map is full. t.mu must be held.
func (t *loginThrottle) makeRoom(now time.Time) {
	if len(t.records) < maxThrottleEntries {
		return
	}
	for key, rec := range t.records {
		if now.Sub(rec.last) > t.reset {
			delete(t.records, key)
		}
	}
	for key := range t.records {
		if len(t.records) < maxThrottleEntries {
			break
		}
		delete(t.records, key)
	}
}
