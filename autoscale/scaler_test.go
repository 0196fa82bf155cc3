package autoscale

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// step is one allocation change seen by simulate: at second t the
// allocation became vcpus.
type step struct {
	t     int
	vcpus uint32
}

// simulate runs the scaler on one sample a second for the given seconds,
// starting at allocation start. demand(t, alloc) returns the vCPUs the
// workload uses during second t, so a test can cap usage at the
// allocation as a cgroup quota does.
func simulate(cfg ScaleConfig, start, cpuMin, cpuMax uint32, seconds int, demand func(t int, alloc uint32) float64) []step {
	s := newScaler(cfg)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	alloc := start
	var cpu time.Duration
	var steps []step
	s.observe(t0, cpu, alloc, cpuMin, cpuMax)
	for t := 1; t <= seconds; t++ {
		cpu += time.Duration(demand(t, alloc) * float64(time.Second))
		next, _ := s.observe(t0.Add(time.Duration(t)*time.Second), cpu, alloc, cpuMin, cpuMax)
		if next != alloc {
			steps = append(steps, step{t, next})
			alloc = next
		}
	}
	return steps
}

// capped is a workload that wants want vCPUs and gets at most the
// allocation.
func capped(want float64) func(int, uint32) float64 {
	return func(_ int, alloc uint32) float64 { return min(want, float64(alloc)) }
}

func TestScalerRule(t *testing.T) {
	rule := DefaultScaleConfig()
	cases := []struct {
		name                  string
		start, cpuMin, cpuMax uint32
		seconds               int
		demand                func(t int, alloc uint32) float64
		want                  []step
	}{
		{
			name: "up 1 to 2 under cpu_max 2", start: 1, cpuMin: 0, cpuMax: 2, seconds: 200,
			demand: capped(2), want: []step{{10, 2}},
		},
		{
			name: "up by 25 percent rounded up to cpu_max", start: 1, cpuMin: 0, cpuMax: 4, seconds: 300,
			demand: capped(8), want: []step{{10, 2}, {70, 3}, {130, 4}},
		},
		{
			name: "up 3 to 4 rounds 3.75 up", start: 3, cpuMin: 0, cpuMax: 15, seconds: 10,
			demand: capped(15), want: []step{{10, 4}},
		},
		{
			name: "down 2 to 1 when idle", start: 2, cpuMin: 0, cpuMax: 4, seconds: 200,
			demand: capped(0), want: []step{{10, 1}},
		},
		{
			name: "down 4 to 3 rounds 3 down", start: 4, cpuMin: 0, cpuMax: 4, seconds: 10,
			demand: capped(0), want: []step{{10, 3}},
		},
		{
			name: "never below 1 while running", start: 1, cpuMin: 0, cpuMax: 4, seconds: 200,
			demand: capped(0), want: nil,
		},
		{
			name: "never below cpu_min", start: 4, cpuMin: 3, cpuMax: 4, seconds: 200,
			demand: capped(0), want: []step{{10, 3}},
		},
		{
			name: "2 vCPUs using 1.2 stay at 2", start: 2, cpuMin: 0, cpuMax: 4, seconds: 200,
			demand: capped(1.2), want: nil,
		},
		{
			name: "2 vCPUs using 0.8 go to 1", start: 2, cpuMin: 0, cpuMax: 4, seconds: 200,
			demand: capped(0.8), want: []step{{10, 1}},
		},
		{
			name: "one busy backend keeps 2 vCPUs", start: 1, cpuMin: 0, cpuMax: 2, seconds: 200,
			demand: capped(1), want: []step{{10, 2}},
		},
		{
			name: "between thresholds nothing changes", start: 2, cpuMin: 0, cpuMax: 4, seconds: 200,
			demand: capped(1.6), want: nil,
		},
		{
			name: "cooldown delays the step down", start: 1, cpuMin: 0, cpuMax: 4, seconds: 200,
			demand: func(t int, alloc uint32) float64 {
				if t <= 15 {
					return float64(alloc)
				}
				return 0
			},
			want: []step{{10, 2}, {70, 1}},
		},
		{
			name: "a dip restarts the window", start: 1, cpuMin: 0, cpuMax: 2, seconds: 30,
			demand: func(t int, alloc uint32) float64 {
				if t == 9 {
					return 0.8
				}
				return min(2, float64(alloc))
			},
			want: []step{{19, 2}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := simulate(rule, tc.start, tc.cpuMin, tc.cpuMax, tc.seconds, tc.demand)
			if !slices.Equal(got, tc.want) {
				t.Errorf("steps = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestScalerShortSettings(t *testing.T) {
	cfg := ScaleConfig{Interval: 100 * time.Millisecond, Window: time.Second, Cooldown: 2 * time.Second, UpThreshold: 0.9, DownThreshold: 0.7, Step: 0.25}
	s := newScaler(cfg)
	t0 := time.Now()
	var cpu time.Duration
	alloc := uint32(1)
	s.observe(t0, cpu, alloc, 0, 2)
	var upAt time.Duration
	for tick := 1; tick <= 30 && upAt == 0; tick++ {
		cpu += 100 * time.Millisecond
		now := t0.Add(time.Duration(tick) * 100 * time.Millisecond)
		if next, used := s.observe(now, cpu, alloc, 0, 2); next != alloc {
			if used < 0.99 || used > 1.01 {
				t.Errorf("usage at the step = %v, want 1", used)
			}
			upAt, alloc = now.Sub(t0), next
		}
	}
	if upAt != time.Second || alloc != 2 {
		t.Errorf("scaled to %d after %s, want 2 after 1s", alloc, upAt)
	}
}

func TestScalerResetPrimes(t *testing.T) {
	s := newScaler(DefaultScaleConfig())
	t0 := time.Now()
	s.observe(t0, 0, 1, 0, 2)
	s.reset()
	// After a reset the first reading only primes, however large.
	if next, used := s.observe(t0.Add(time.Second), time.Hour, 1, 0, 2); next != 1 || used != 0 {
		t.Errorf("first reading after reset: next %d used %v, want 1 and 0", next, used)
	}
	if next, used := s.observe(t0.Add(2*time.Second), time.Hour+time.Second/2, 1, 0, 2); next != 1 || used != 0.5 {
		t.Errorf("second reading: next %d used %v, want 1 and 0.5", next, used)
	}
}

func TestClampAllocation(t *testing.T) {
	cases := []struct{ vcpus, cpuMin, cpuMax, want uint32 }{
		{0, 0, 4, 1}, // a wake with cpu_min 0 starts at 1
		{0, 2, 4, 2}, // a wake starts at cpu_min
		{3, 0, 2, 2}, // lowering cpu_max scales down
		{1, 3, 4, 3}, // raising cpu_min scales up
		{2, 0, 0, 1}, // an unset cpu_max still allows 1
		{5, 15, 15, 15},
	}
	for _, tc := range cases {
		if got := clampAllocation(tc.vcpus, tc.cpuMin, tc.cpuMax); got != tc.want {
			t.Errorf("clampAllocation(%d, min %d, max %d) = %d, want %d", tc.vcpus, tc.cpuMin, tc.cpuMax, got, tc.want)
		}
	}
}

func TestClientLimit(t *testing.T) {
	cases := map[uint32]int{0: 100, 1: 160, 2: 220, 4: 340, 15: 1000, 16: 1000, 1 << 31: 1000}
	for cpuMax, want := range cases {
		if got := ClientLimit(cpuMax); got != want {
			t.Errorf("ClientLimit(%d) = %d, want %d", cpuMax, got, want)
		}
	}
	m := &Manager{cfg: Config{ClientLimit: 5000}}
	if got := m.ClientLimit(1); got != 5000 {
		t.Errorf("Manager.ClientLimit with a configured limit = %d, want 5000", got)
	}
}

func TestScaleConfigValidate(t *testing.T) {
	if err := DefaultScaleConfig().Validate(); err != nil {
		t.Errorf("default rule: %v", err)
	}
	bad := []func(*ScaleConfig){
		func(c *ScaleConfig) { c.Interval = 0 },
		func(c *ScaleConfig) { c.Window = -time.Second },
		func(c *ScaleConfig) { c.Cooldown = 0 },
		func(c *ScaleConfig) { c.UpThreshold = 1 },
		func(c *ScaleConfig) { c.DownThreshold = 0.95 },
		func(c *ScaleConfig) { c.DownThreshold = 0 },
		func(c *ScaleConfig) { c.Step = 1 },
	}
	for n, change := range bad {
		cfg := DefaultScaleConfig()
		change(&cfg)
		if err := cfg.Validate(); err == nil {
			t.Errorf("case %d: %+v accepted", n, cfg)
		}
	}
}

func TestScaleReason(t *testing.T) {
	s := newScaler(DefaultScaleConfig())
	if got := s.scaleReason(true); !strings.Contains(got, "above 90% of the allocation for 10s") {
		t.Errorf("up reason = %q", got)
	}
	if got := s.scaleReason(false); !strings.Contains(got, fmt.Sprintf("below %g%%", 70.0)) {
		t.Errorf("down reason = %q", got)
	}
}
