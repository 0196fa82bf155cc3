package proxy

import (
	"fmt"
	"testing"
	"time"
)

func TestLoginThrottleBackoff(t *testing.T) {
	th := newLoginThrottle(100*time.Millisecond, 5*time.Second, time.Minute)
	clock := time.Unix(1_700_000_000, 0)
	th.now = func() time.Time { return clock }

	want := []time.Duration{100, 200, 400, 800, 1600, 3200, 5000, 5000}
	for i, w := range want {
		if got := th.failed("192.0.2.1", "alice"); got != w*time.Millisecond {
			t.Errorf("failure %d: delay %s, want %s", i+1, got, w*time.Millisecond)
		}
	}
}

func TestLoginThrottleKeys(t *testing.T) {
	th := newLoginThrottle(100*time.Millisecond, 5*time.Second, time.Minute)
	clock := time.Unix(1_700_000_000, 0)
	th.now = func() time.Time { return clock }

	th.failed("192.0.2.1", "alice")
	th.failed("192.0.2.1", "alice")
	// Another address for the same principal continues the principal's
	// count, and another principal from the same address the address's.
	if got := th.failed("192.0.2.2", "alice"); got != 400*time.Millisecond {
		t.Errorf("same principal, other address: delay %s, want 400ms", got)
	}
	if got := th.failed("192.0.2.1", "bob"); got != 400*time.Millisecond {
		t.Errorf("same address, other principal: delay %s, want 400ms", got)
	}
	if got := th.failed("192.0.2.3", "carol"); got != 100*time.Millisecond {
		t.Errorf("new address and principal: delay %s, want 100ms", got)
	}
}

func TestLoginThrottleReset(t *testing.T) {
	th := newLoginThrottle(100*time.Millisecond, 5*time.Second, time.Minute)
	clock := time.Unix(1_700_000_000, 0)
	th.now = func() time.Time { return clock }

	for range 5 {
		th.failed("192.0.2.1", "alice")
	}
	th.succeeded("192.0.2.1", "alice")
	if got := th.failed("192.0.2.1", "alice"); got != 100*time.Millisecond {
		t.Errorf("after a success: delay %s, want 100ms", got)
	}

	for range 5 {
		th.failed("192.0.2.1", "alice")
	}
	clock = clock.Add(61 * time.Second)
	if got := th.failed("192.0.2.1", "alice"); got != 100*time.Millisecond {
		t.Errorf("after a quiet minute: delay %s, want 100ms", got)
	}
}

func TestLoginThrottleBounded(t *testing.T) {
	th := newLoginThrottle(100*time.Millisecond, 5*time.Second, time.Minute)
	clock := time.Unix(1_700_000_000, 0)
	th.now = func() time.Time { return clock }
	for i := range maxThrottleEntries {
		th.failed("192.0.2.1", fmt.Sprintf("user-%d", i))
	}
	if n := len(th.records); n > maxThrottleEntries {
		t.Errorf("%d records kept, want at most %d", n, maxThrottleEntries)
	}
}
