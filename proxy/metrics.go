package proxy

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	clients      prometheus.Gauge
	rejected     *prometheus.CounterVec
	failedLogins prometheus.Counter
	loginBackoff prometheus.Counter
	routed       *prometheus.CounterVec
	cancels      *prometheus.CounterVec

	// Per database, labelled database_id. A database's series are
	// deleted when it is.
	databaseClients  *prometheus.GaugeVec
	backends         *prometheus.GaugeVec
	waiting          *prometheus.GaugeVec
	queries          *prometheus.CounterVec
	clientBytes      *prometheus.CounterVec
	connectSeconds   *prometheus.HistogramVec
	poolWaitSeconds  *prometheus.HistogramVec
	poolWaitTimeouts *prometheus.CounterVec
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
			Help: "CancelRequest messages, by outcome: forwarded, wait_canceled, no_backend, unknown_key, rate_limited or error.",
		}, []string{"outcome"}),
		databaseClients: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sdblocal_proxy_database_client_connections",
			Help: "Client connections past login, by database and state: active (holding a backend), idle, or waiting (for a wake or a backend).",
		}, []string{"database_id", "state"}),
		backends: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sdblocal_proxy_backend_connections",
			Help: "Backend connections to instances, by database and state: active (lent to a client, or being reset) or idle (in the pool).",
		}, []string{"database_id", "state"}),
		waiting: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sdblocal_proxy_pool_waiting_clients",
			Help: "Clients waiting for a backend because their database's pool is full.",
		}, []string{"database_id"}),
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sdblocal_proxy_queries_total",
			Help: "Queries forwarded: simple Query, Execute and FunctionCall messages.",
		}, []string{"database_id"}),
		clientBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sdblocal_proxy_client_bytes_total",
			Help: "Protocol bytes between clients and the proxy after login, by direction: received (from clients) or sent (to clients).",
		}, []string{"database_id", "direction"}),
		connectSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sdblocal_proxy_connect_duration_seconds",
			Help:    "Time from a client's successful authentication to its ReadyForQuery, by start: cold (the connect woke the instance) or warm.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"database_id", "start"}),
		poolWaitSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sdblocal_proxy_pool_wait_seconds",
			Help:    "Time a client waited for a backend from its database's pool, 0 for an idle one at hand.",
			Buckets: []float64{.0001, .001, .01, .1, .5, 1, 5, 10, 30, 60, 120},
		}, []string{"database_id"}),
		poolWaitTimeouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sdblocal_proxy_pool_wait_timeouts_total",
			Help: "Requests that failed with SQLSTATE 53300 after waiting --query-wait-timeout for a backend.",
		}, []string{"database_id"}),
	}
	if reg != nil {
		reg.MustRegister(m.clients, m.rejected, m.failedLogins, m.loginBackoff, m.routed, m.cancels,
			m.databaseClients, m.backends, m.waiting, m.queries, m.clientBytes, m.connectSeconds,
			m.poolWaitSeconds, m.poolWaitTimeouts)
	}
	return m
}

// poolMetrics are one database's series, looked up once per pool.
type poolMetrics struct {
	// clients is indexed by client state, backends by backend state.
	clients       [3]prometheus.Gauge
	backends      [5]prometheus.Gauge
	waiting       prometheus.Gauge
	queries       prometheus.Counter
	receivedBytes prometheus.Counter
	sentBytes     prometheus.Counter
	connectCold   prometheus.Observer
	connectWarm   prometheus.Observer
	poolWait      prometheus.Observer
	waitTimeouts  prometheus.Counter
}

func (m *metrics) forDatabase(id string) *poolMetrics {
	active := m.backends.WithLabelValues(id, "active")
	return &poolMetrics{
		clients: [3]prometheus.Gauge{
			clientIdle:    m.databaseClients.WithLabelValues(id, "idle"),
			clientWaiting: m.databaseClients.WithLabelValues(id, "waiting"),
			clientActive:  m.databaseClients.WithLabelValues(id, "active"),
		},
		backends: [5]prometheus.Gauge{
			backendIdle:      m.backends.WithLabelValues(id, "idle"),
			backendActive:    active,
			backendResetting: active,
		},
		waiting:       m.waiting.WithLabelValues(id),
		queries:       m.queries.WithLabelValues(id),
		receivedBytes: m.clientBytes.WithLabelValues(id, "received"),
		sentBytes:     m.clientBytes.WithLabelValues(id, "sent"),
		connectCold:   m.connectSeconds.WithLabelValues(id, "cold"),
		connectWarm:   m.connectSeconds.WithLabelValues(id, "warm"),
		poolWait:      m.poolWaitSeconds.WithLabelValues(id),
		waitTimeouts:  m.poolWaitTimeouts.WithLabelValues(id),
	}
}

func (p *poolMetrics) observeConnect(cold bool, d time.Duration) {
	if cold {
		p.connectCold.Observe(d.Seconds())
		return
	}
	p.connectWarm.Observe(d.Seconds())
}

// forgetDatabase deletes a deleted database's series.
func (m *metrics) forgetDatabase(id string) {
	labels := prometheus.Labels{"database_id": id}
	m.databaseClients.DeletePartialMatch(labels)
	m.backends.DeletePartialMatch(labels)
	m.waiting.DeletePartialMatch(labels)
	m.queries.DeletePartialMatch(labels)
	m.clientBytes.DeletePartialMatch(labels)
	m.connectSeconds.DeletePartialMatch(labels)
	m.poolWaitSeconds.DeletePartialMatch(labels)
	m.poolWaitTimeouts.DeletePartialMatch(labels)
}
