package api

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// routeNone labels a request that matched no registered pattern. With the
// catch-all "/" pattern registered, only CONNECT requests get it.
const routeNone = "none"

// requestMetrics counts API requests by ServeMux pattern and status code.
type requestMetrics struct {
	requests *prometheus.CounterVec
}

func newRequestMetrics(reg prometheus.Registerer) *requestMetrics {
	m := &requestMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sdblocal_api_requests_total",
			Help: "HTTP requests to the API listener, by the ServeMux pattern that matched (route, \"none\" for no match) and the response status code (code).",
		}, []string{"route", "code"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests)
	}
	return m
}

// instrument counts every request that mux serves. The route label is the
// pattern ServeMux matched, which it stores in Request.Pattern, so its
// values are bounded by the registered patterns and never contain IDs.
// NOTE: for a CONNECT request that ServeMux redirects, net/http (Go 1.26)
// puts the request's own path in Pattern, so CONNECT is always labelled
// routeNone.
func (m *requestMetrics) instrument(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		recorder := &statusRecorder{ResponseWriter: w}
		mux.ServeHTTP(recorder, r)
		route := r.Pattern
		if route == "" || r.Method == http.MethodConnect {
			route = routeNone
		}
		m.requests.WithLabelValues(route, strconv.Itoa(recorder.status())).Inc()
	})
}

// statusRecorder keeps the status code a handler sends.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	// 1xx responses are informational and followed by the final status.
	if r.code == 0 && code >= 200 {
		r.code = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(p []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the underlying writer's
// Flush and deadline methods.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// status returns the code sent, or 200 when the handler sent nothing, as
// net/http then does.
func (r *statusRecorder) status() int {
	if r.code == 0 {
		return http.StatusOK
	}
	return r.code
}
