package proxy

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	clients      prometheus.Gauge
	rejected     *prometheus.CounterVec
	failedLogins prometheus.Counter
	cancels      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		clients: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sdblocal_proxy_client_connections",
			Help: "Client connections past login, across all databases.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sdblocal_proxy_rejected_connections_total",
			Help: "Client connections ended with an error, by SQLSTATE or handshake failure.",
		}, []string{"reason"}),
		failedLogins: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sdblocal_proxy_failed_logins_total",
			Help: "Logins rejected for a wrong principal ID or secret key.",
		}),
		cancels: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sdblocal_proxy_cancel_requests_total",
			Help: "CancelRequest messages, by outcome.",
		}, []string{"outcome"}),
	}
	if reg != nil {
		reg.MustRegister(m.clients, m.rejected, m.failedLogins, m.cancels)
	}
	return m
}
