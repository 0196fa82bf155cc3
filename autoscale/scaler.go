package autoscale

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// ScaleConfig holds the CPU autoscaling rule. Zero fields take the
// defaults given on each field, which are the rule the real service
// publishes: above 90 % of the allocated vCPUs for 10 s adds 25 % rounded
// up, below 70 % for 10 s removes 25 % rounded down, at most one step a
// minute.
type ScaleConfig struct {
	// Interval is how often each instance's CPU usage is sampled, for
	// scaling and for metering. Default 1s.
	Interval time.Duration
	// Window is how long usage must stay above UpThreshold, or below
	// DownThreshold, before a step. Default 10s.
	Window time.Duration
	// Cooldown is the least time between two changes of one instance's
	// allocation, whether a step of the rule or a change of cpu_min or
	// cpu_max forced it. Default 1m.
	Cooldown time.Duration
	// UpThreshold is the fraction of the allocation above which usage is
	// high. Default 0.9.
	UpThreshold float64
	// DownThreshold is the fraction of the allocation below which usage is
	// low. Default 0.7.
	DownThreshold float64
	// Step is the fraction of the allocation that a step adds, rounded up
	// to a whole vCPU, or removes, rounded down. Default 0.25.
	Step float64
}

// DefaultScaleConfig returns the real service's rule.
func DefaultScaleConfig() ScaleConfig {
	return ScaleConfig{
		Interval:      time.Second,
		Window:        10 * time.Second,
		Cooldown:      time.Minute,
		UpThreshold:   0.9,
		DownThreshold: 0.7,
		Step:          0.25,
	}
}

func (c ScaleConfig) withDefaults() ScaleConfig {
	d := DefaultScaleConfig()
	if c.Interval <= 0 {
		c.Interval = d.Interval
	}
	if c.Window <= 0 {
		c.Window = d.Window
	}
	if c.Cooldown <= 0 {
		c.Cooldown = d.Cooldown
	}
	if c.UpThreshold <= 0 {
		c.UpThreshold = d.UpThreshold
	}
	if c.DownThreshold <= 0 {
		c.DownThreshold = d.DownThreshold
	}
	if c.Step <= 0 {
		c.Step = d.Step
	}
	return c
}

// Validate rejects a rule that cannot work. Under an enforced limit usage
// never exceeds the allocation, so UpThreshold must stay below 1.
func (c ScaleConfig) Validate() error {
	var errs []error
	if c.Interval <= 0 {
		errs = append(errs, fmt.Errorf("scale interval %s must be positive", c.Interval))
	}
	if c.Window <= 0 {
		errs = append(errs, fmt.Errorf("scale window %s must be positive", c.Window))
	}
	if c.Cooldown <= 0 {
		errs = append(errs, fmt.Errorf("scale cooldown %s must be positive", c.Cooldown))
	}
	if c.DownThreshold <= 0 || c.UpThreshold >= 1 || c.DownThreshold >= c.UpThreshold {
		errs = append(errs, fmt.Errorf("scale thresholds must satisfy 0 < down (%g) < up (%g) < 1", c.DownThreshold, c.UpThreshold))
	}
	if c.Step <= 0 || c.Step >= 1 {
		errs = append(errs, fmt.Errorf("scale step %g must be between 0 and 1, exclusive", c.Step))
	}
	return errors.Join(errs...)
}

// scaler applies the rule to the CPU samples of one instance while it
// runs. The instance calls it under its mutex.
type scaler struct {
	cfg ScaleConfig

	primed   bool          // a first reading was taken since the last reset
	lastAt   time.Time     // time of the last reading
	lastCPU  time.Duration // cumulative CPU time at lastAt
	lastUsed float64       // vCPUs used over the last sample

	highSince time.Time // start of the current run of high samples; zero when none
	lowSince  time.Time // start of the current run of low samples; zero when none
	lowPeak   float64   // most vCPUs used by one sample of the current low run
	lastStep  time.Time // last allocation change; zero when none since the reset
}

func newScaler(cfg ScaleConfig) scaler {
	return scaler{cfg: cfg.withDefaults()}
}

// reset clears all state except the rule, for a new wake.
func (s *scaler) reset() {
	*s = scaler{cfg: s.cfg}
}

// stepped records an allocation change at now: both runs start again,
// because the usage fractions changed with the allocation, and the
// cooldown starts.
func (s *scaler) stepped(now time.Time) {
	s.lastStep = now
	s.highSince, s.lowSince, s.lowPeak = time.Time{}, time.Time{}, 0
}

// observe takes the instance's cumulative CPU time at now, with its
// allocation and the database's cpu_min and cpu_max. It returns the
// allocation the rule sets, equal to current when nothing changes,
// and the vCPUs used since the previous reading. The first reading after
// a reset, or one that goes backwards, only starts the next sample.
func (s *scaler) observe(now time.Time, cpu time.Duration, current, cpuMin, cpuMax uint32) (next uint32, used float64) {
	if !s.primed || !now.After(s.lastAt) || cpu < s.lastCPU || current == 0 {
		s.primed, s.lastAt, s.lastCPU = true, now, cpu
		return current, 0
	}
	start := s.lastAt
	used = (cpu - s.lastCPU).Seconds() / now.Sub(start).Seconds()
	s.lastAt, s.lastCPU, s.lastUsed = now, cpu, used

	fraction := used / float64(current)
	if fraction > s.cfg.UpThreshold {
		if s.highSince.IsZero() {
			s.highSince = start
		}
	} else {
		s.highSince = time.Time{}
	}
	if fraction < s.cfg.DownThreshold {
		if s.lowSince.IsZero() {
			s.lowSince, s.lowPeak = start, 0
		}
		s.lowPeak = max(s.lowPeak, used)
	} else {
		s.lowSince, s.lowPeak = time.Time{}, 0
	}

	if !s.lastStep.IsZero() && now.Sub(s.lastStep) < s.cfg.Cooldown {
		return current, used
	}
	low, high := allocationBounds(cpuMin, cpuMax)
	switch {
	case !s.highSince.IsZero() && now.Sub(s.highSince) >= s.cfg.Window:
		next = min(roundUp(float64(current)*(1+s.cfg.Step)), high)
		if next > current {
			s.stepped(now)
			return next, used
		}
	case !s.lowSince.IsZero() && now.Sub(s.lowSince) >= s.cfg.Window:
		next = max(roundDown(float64(current)*(1-s.cfg.Step)), low)
		// A smaller allocation must absorb the run's peak without being
		// above the up threshold at once, or the next window would undo
		// the step: 2 vCPUs using 1.2 stay at 2.
		if next < current && float64(next)*s.cfg.UpThreshold >= s.lowPeak {
			s.stepped(now)
			return next, used
		}
	}
	return current, used
}

// roundUp and roundDown round to whole vCPUs, ignoring the floating-point
// error of the product (10 × 1.1 is 11.000000000000002).
func roundUp(x float64) uint32   { return uint32(math.Ceil(x - 1e-9)) }
func roundDown(x float64) uint32 { return uint32(math.Floor(x + 1e-9)) }

// allocationBounds returns the allocations a running instance may have:
// from cpu_min, but at least 1, to cpu_max, but at least the lower bound.
func allocationBounds(cpuMin, cpuMax uint32) (low, high uint32) {
	low = max(cpuMin, 1)
	return low, max(cpuMax, low)
}

// clampAllocation returns vcpus moved into the bounds of cpuMin and cpuMax.
func clampAllocation(vcpus, cpuMin, cpuMax uint32) uint32 {
	low, high := allocationBounds(cpuMin, cpuMax)
	return min(max(vcpus, low), high)
}

// allocateLocked sets the instance's allocation to vcpus at now. It closes
// the metering segment of the previous allocation and sets the cgroup's
// quota. 0 means the instance no longer runs; the quota then stays, and
// the next wake lifts it. mu must be held.
func (i *Instance) allocateLocked(now time.Time, vcpus uint32) {
	i.meter.allocate(now, i.cpuCurrent)
	i.cpuCurrent = vcpus
	if vcpus == 0 || i.layout.cgroup == nil {
		return
	}
	if err := i.layout.cgroup.setLimit(vcpus); err != nil {
		i.logger.Error("set CPU limit failed; the instance keeps its previous limit", "vcpus", vcpus, "error", err)
	}
}

// scaleLocked changes a running instance's allocation and logs the step.
// mu must be held.
func (i *Instance) scaleLocked(now time.Time, vcpus uint32, used float64, reason string) {
	from := i.cpuCurrent
	i.allocateLocked(now, vcpus)
	i.scaler.stepped(now)
	direction := "up"
	if vcpus < from {
		direction = "down"
	}
	i.m.metrics.scalingSteps.WithLabelValues(i.id, direction).Inc()
	i.logger.Info("instance scaled", "from", from, "to", vcpus, "usage", math.Round(used*100)/100, "reason", reason)
}

// scaleReason explains a step of the rule in the log.
func (s *scaler) scaleReason(up bool) string {
	if up {
		return fmt.Sprintf("usage above %g%% of the allocation for %s", s.cfg.UpThreshold*100, s.cfg.Window)
	}
	return fmt.Sprintf("usage below %g%% of the allocation for %s", s.cfg.DownThreshold*100, s.cfg.Window)
}

// Client limits per database. The real service allows up to 1,000
// connections per database, growing with the vCPUs, and publishes no
// formula. sdblocal allows 100 + 60 × cpu_max, which reaches 1,000 at the
// largest cpu_max, 15.
const (
	clientLimitBase    = 100
	clientLimitPerVCPU = 60
	// MaxClientLimit is the real service's largest connection limit.
	MaxClientLimit = 1000
)

// ClientLimit returns the number of client connections a database with
// cpuMax may hold at once: 100 + 60 × cpu_max, at most 1,000.
func ClientLimit(cpuMax uint32) int {
	return min(clientLimitBase+clientLimitPerVCPU*int(min(cpuMax, 1000)), MaxClientLimit)
}

// ClientLimit returns Config.ClientLimit when it is set, for load tests
// that need more clients than the real service allows, and
// ClientLimit(cpuMax) otherwise.
func (m *Manager) ClientLimit(cpuMax uint32) int {
	if m.cfg.ClientLimit > 0 {
		return m.cfg.ClientLimit
	}
	return ClientLimit(cpuMax)
}
