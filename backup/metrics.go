package backup

import "github.com/prometheus/client_golang/prometheus"

// Values of the outcome label.
const (
	outcomeSuccess = "success"
	outcomeError   = "error"
)

type metrics struct {
	backups       *prometheus.CounterVec
	backupSeconds prometheus.Histogram
	restores      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		backups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sdblocal_backups_total",
			Help: "Backups finished, scheduled or on request, by outcome (success or error).",
		}, []string{"outcome"}),
		backupSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sdblocal_backup_duration_seconds",
			Help:    "Time to take one backup, from the wait for the database's turn to the recorded outcome, failures included.",
			Buckets: []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900},
		}),
		restores: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sdblocal_restores_total",
			Help: "Restores finished, in place or into a new database, by outcome (success or error).",
		}, []string{"outcome"}),
	}
	// Both outcomes exist from the start, so a rate over them is defined
	// before the first failure.
	for _, outcome := range []string{outcomeSuccess, outcomeError} {
		m.backups.WithLabelValues(outcome)
		m.restores.WithLabelValues(outcome)
	}
	if reg != nil {
		reg.MustRegister(m.backups, m.backupSeconds, m.restores)
	}
	return m
}
