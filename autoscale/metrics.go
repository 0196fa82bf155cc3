package autoscale

import "github.com/prometheus/client_golang/prometheus"

// Suspend reasons, the values of the reason label of
// sdblocal_instance_suspends_total and of the reason in the log.
const (
	suspendIdleTimeout     = "idle_timeout"
	suspendShutdown        = "shutdown"
	suspendDatabaseDeleted = "database_deleted"
)

// metrics are the instance lifecycle series. Per-database series carry
// database_id, which is bounded by the number of databases: a deleted
// database's series are removed with it. The wake duration histogram is
// global, and the per-database wake time is a plain counter, so the
// series count does not grow by a bucket set per database.
type metrics struct {
	wakes           *prometheus.CounterVec
	wakeFailures    *prometheus.CounterVec
	wakeSecondsSum  *prometheus.CounterVec
	coldStartDelay  *prometheus.CounterVec
	suspends        *prometheus.CounterVec
	unexpectedExits *prometheus.CounterVec
	wakeSeconds     prometheus.Histogram
	running         prometheus.Gauge
	scalingSteps    *prometheus.CounterVec
	limitsEnforced  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		wakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sdblocal_instance_wakes_total",
			Help: "Instances started from suspended, by database.",
		}, []string{"database_id"}),
		wakeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sdblocal_instance_wake_failures_total",
			Help: "Wakes that failed, by database.",
		}, []string{"database_id"}),
		wakeSecondsSum: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sdblocal_instance_wake_seconds_total",
			Help: "Time spent in successful wakes, cold-start delay included, by database; divided by sdblocal_instance_wakes_total it gives the mean wake duration.",
		}, []string{"database_id"}),
		coldStartDelay: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sdblocal_instance_cold_start_delay_seconds_total",
			Help: "Time wakes spent in the emulated cold-start delay (--cold-start-delay or the database's cold_start_delay), by database.",
		}, []string{"database_id"}),
		suspends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sdblocal_instance_suspends_total",
			Help: "Instances stopped, by database and reason: idle_timeout, shutdown (sdblocal stopping) or database_deleted.",
		}, []string{"database_id", "reason"}),
		unexpectedExits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sdblocal_instance_unexpected_exits_total",
			Help: "Instances whose postmaster exited without a suspend, by database.",
		}, []string{"database_id"}),
		wakeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sdblocal_instance_wake_duration_seconds",
			Help:    "Time from the wake request until the instance accepted a backend connection, cold-start delay included, across all databases.",
			Buckets: []float64{0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30},
		}),
		running: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sdblocal_instances_running",
			Help: "Instances whose postmaster is running.",
		}),
		scalingSteps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sdblocal_instance_scaling_steps_total",
			Help: "Changes of a running instance's vCPU allocation, by database and direction (up or down).",
		}, []string{"database_id", "direction"}),
		limitsEnforced: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sdblocal_cpu_limits_enforced",
			Help: "1 when each instance's CPU use is capped at its allocation by a cgroup quota, 0 when it is only measured.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.wakes, m.wakeFailures, m.wakeSecondsSum, m.coldStartDelay, m.suspends, m.unexpectedExits,
			m.wakeSeconds, m.running, m.scalingSteps, m.limitsEnforced)
	}
	return m
}

// forget drops the per-database series of a deleted database.
func (m *metrics) forget(databaseID string) {
	m.wakes.DeleteLabelValues(databaseID)
	m.wakeFailures.DeleteLabelValues(databaseID)
	m.wakeSecondsSum.DeleteLabelValues(databaseID)
	m.coldStartDelay.DeleteLabelValues(databaseID)
	m.suspends.DeletePartialMatch(prometheus.Labels{"database_id": databaseID})
	m.unexpectedExits.DeleteLabelValues(databaseID)
	m.scalingSteps.DeletePartialMatch(prometheus.Labels{"database_id": databaseID})
}
