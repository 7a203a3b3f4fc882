package edge

import (
	"errors"

	"github.com/edgeshard/edgeshard/internal/prom"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the edge API's Prometheus collectors: HTTP requests by route
// and status, and what the pipelines did (fallbacks, rate-limit decisions,
// proxy refusals, events and counter deltas by path, reconcile runs).
type metrics struct {
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	fallbacks   *prometheus.CounterVec
	rateLimit   *prometheus.CounterVec
	refused     *prometheus.CounterVec
	events      *prometheus.CounterVec
	deltas      *prometheus.CounterVec
	reconciles  *prometheus.CounterVec
	corrections prometheus.Counter
	panics      prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests:    prom.CounterVec("edgeshard_http_requests_total", "HTTP requests by route template, method and status code.", "route", "method", "code"),
		duration:    prom.HistogramVec("edgeshard_http_request_duration_seconds", "HTTP request duration by route template and method.", []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}, "route", "method"),
		fallbacks:   prom.CounterVec("edgeshard_edge_fallbacks_total", "Fallbacks taken by pipeline (ratelimit, runtime_events, counters) and log code.", "pipeline", "code"),
		rateLimit:   prom.CounterVec("edgeshard_proxy_ratelimit_decisions_total", "Proxy rate-limit decisions by store (shard, sql, memory) and result (allowed, limited).", "store", "result"),
		refused:     prom.CounterVec("edgeshard_proxy_refused_total", "Proxy requests refused before or while reaching the upstream, by reason.", "reason"),
		events:      prom.CounterVec("edgeshard_runtime_events_total", "Runtime events accepted, by durable path (shard, sql, both).", "path"),
		deltas:      prom.CounterVec("edgeshard_counter_deltas_total", "Counter deltas written, by path (shard, legacy).", "path"),
		reconciles:  prom.CounterVec("edgeshard_counter_reconcile_runs_total", "reconcileCounters runs by result (ok, error, busy: another host held its lock).", "result"),
		corrections: prom.Counter("edgeshard_counter_reconcile_corrections_total", "Counters reconcileCounters corrected."),
		panics:      prom.Counter("edgeshard_http_panics_total", "Handler panics recovered (answered 500)."),
	}
	if reg == nil {
		return m, nil
	}
	err := errors.Join(prom.Register(reg, &m.requests), prom.Register(reg, &m.duration), prom.Register(reg, &m.fallbacks),
		prom.Register(reg, &m.rateLimit), prom.Register(reg, &m.refused), prom.Register(reg, &m.events), prom.Register(reg, &m.deltas),
		prom.Register(reg, &m.reconciles), prom.Register(reg, &m.corrections), prom.Register(reg, &m.panics))
	return m, err
}

// fallback counts a fallback taken.
func (m *metrics) fallback(pipeline, code string) {
	m.fallbacks.WithLabelValues(pipeline, code).Inc()
}
