package proxy

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	clients      prometheus.Gauge
	rejected     *prometheus.CounterVec
	failedLogins prometheus.Counter
	loginBackoff prometheus.Counter
	routed       *prometheus.CounterVec
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
		loginBackoff: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sdblocal_proxy_login_backoff_seconds_total",
			Help: "Time failed logins waited before their error reply, in seconds.",
		}),
		routed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sdblocal_proxy_routed_connections_total",
			Help: "Client connections routed to a database, by how the client named it: sni, option or name.",
		}, []string{"method"}),
		cancels: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sdblocal_proxy_cancel_requests_total",
			Help: "CancelRequest messages, by outcome.",
		}, []string{"outcome"}),
	}
	if reg != nil {
		reg.MustRegister(m.clients, m.rejected, m.failedLogins, m.loginBackoff, m.routed, m.cancels)
	}
	return m
}
