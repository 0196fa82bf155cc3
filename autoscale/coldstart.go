package autoscale

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/sdblocal/sdblocal/catalog"
)

// MaxColdStartDelay bounds a cold-start delay. It stays below the proxy's
// default wake time-out of 60 s, so a client waiting for a delayed wake
// sees the delay and not a time-out.
const MaxColdStartDelay = 30 * time.Second

// ColdStartDelay is a wait added to every wake of an instance before it
// counts as ready, to reproduce the cold starts of the real service on a
// machine where a wake takes milliseconds. Each wake waits Min when Min
// equals Max, and otherwise a duration drawn uniformly from [Min, Max].
// The zero value adds nothing.
type ColdStartDelay struct {
	Min, Max time.Duration
}

// ParseColdStartDelay parses a fixed delay ("2s") or a range ("1s-4s") of
// Go durations. The empty string and "0" parse to the zero value. Each
// bound must be from 0 to MaxColdStartDelay, and Min at most Max.
func ParseColdStartDelay(s string) (ColdStartDelay, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return ColdStartDelay{}, nil
	}
	low, high, isRange := strings.Cut(s, "-")
	minDelay, err := parseDelayBound(low)
	if err != nil {
		return ColdStartDelay{}, fmt.Errorf("invalid cold-start delay %q: %w", s, err)
	}
	maxDelay := minDelay
	if isRange {
		if maxDelay, err = parseDelayBound(high); err != nil {
			return ColdStartDelay{}, fmt.Errorf("invalid cold-start delay %q: %w", s, err)
		}
	}
	if minDelay > maxDelay {
		return ColdStartDelay{}, fmt.Errorf("invalid cold-start delay %q: the lower bound %s is above the upper bound %s", s, minDelay, maxDelay)
	}
	return ColdStartDelay{Min: minDelay, Max: maxDelay}, nil
}

func parseDelayBound(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("expected a Go duration such as 2s, or a range such as 1s-4s")
	}
	if s == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a Go duration such as 500ms or 2s", s)
	}
	if d < 0 || d > MaxColdStartDelay {
		return 0, fmt.Errorf("%s is outside 0 to %s", d, MaxColdStartDelay)
	}
	return d, nil
}

// IsZero reports whether the delay adds nothing.
func (d ColdStartDelay) IsZero() bool { return d.Max == 0 }

// String returns the delay in the form ParseColdStartDelay reads: "0s",
// "2s" or "1s-4s".
func (d ColdStartDelay) String() string {
	if d.Min == d.Max {
		return d.Min.String()
	}
	return d.Min.String() + "-" + d.Max.String()
}

// draw returns the wait for one wake.
func (d ColdStartDelay) draw() time.Duration {
	if d.Max <= d.Min {
		return d.Min
	}
	return d.Min + rand.N(d.Max-d.Min+1)
}

// coldStartDelay returns the delay for the next wake: the database's own
// cold_start_delay when it sets one, else Config.ColdStartDelay. It reads
// the catalog at each wake, so a change through the API applies to the
// next wake without a call into the manager. A record that cannot be read
// or parsed falls back to the server's delay, with a warning.
func (i *Instance) coldStartDelay() ColdStartDelay {
	var db catalog.Database
	err := i.m.cat.View(func(tx *catalog.Tx) error {
		var err error
		db, err = tx.Database(i.id)
		return err
	})
	if err != nil {
		i.logger.Warn("read the database's cold-start delay failed; using the server's", "error", err)
		return i.m.cfg.ColdStartDelay
	}
	if db.ColdStartDelay == "" {
		return i.m.cfg.ColdStartDelay
	}
	delay, err := ParseColdStartDelay(db.ColdStartDelay)
	if err != nil {
		i.logger.Warn("the database's cold-start delay is invalid; using the server's", "error", err)
		return i.m.cfg.ColdStartDelay
	}
	return delay
}

// errWakeAborted is the cause of a wake cut short during its cold-start
// delay by the database's removal or sdblocal's shutdown.
var errWakeAborted = errors.New("wake aborted during the cold-start delay: the database is being deleted or sdblocal is stopping")

// waitColdStart waits out delay, or returns errWakeAborted as soon as the
// database is being deleted or the manager closes.
func (i *Instance) waitColdStart(delay time.Duration) error {
	if delay <= 0 {
		return nil
	}
	timer := time.NewTimer(delay)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-i.removing:
		return errWakeAborted
	case <-i.m.stop:
		return errWakeAborted
	}
}
