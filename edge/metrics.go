package edge

import (
	"errors"

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
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeshard_http_requests_total", Help: "HTTP requests by route template, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "edgeshard_http_request_duration_seconds", Help: "HTTP request duration by route template and method.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"route", "method"}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeshard_edge_fallbacks_total", Help: "Fallbacks taken by pipeline (ratelimit, runtime_events, counters) and log code.",
		}, []string{"pipeline", "code"}),
		rateLimit: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeshard_proxy_ratelimit_decisions_total", Help: "Proxy rate-limit decisions by store (shard, sql, memory) and result (allowed, limited).",
		}, []string{"store", "result"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeshard_proxy_refused_total", Help: "Proxy requests refused before or while reaching the upstream, by reason.",
		}, []string{"reason"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeshard_runtime_events_total", Help: "Runtime events accepted, by durable path (shard, sql, both).",
		}, []string{"path"}),
		deltas: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeshard_counter_deltas_total", Help: "Counter deltas written, by path (shard, legacy).",
		}, []string{"path"}),
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeshard_counter_reconcile_runs_total", Help: "reconcileCounters runs by result (ok, error, busy: another host held its lock).",
		}, []string{"result"}),
		corrections: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgeshard_counter_reconcile_corrections_total", Help: "Counters reconcileCounters corrected.",
		}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgeshard_http_panics_total", Help: "Handler panics recovered (answered 500).",
		}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	m.requests, err = register(reg, m.requests)
	if err == nil {
		m.duration, err = register(reg, m.duration)
	}
	if err == nil {
		m.fallbacks, err = register(reg, m.fallbacks)
	}
	if err == nil {
		m.rateLimit, err = register(reg, m.rateLimit)
	}
	if err == nil {
		m.refused, err = register(reg, m.refused)
	}
	if err == nil {
		m.events, err = register(reg, m.events)
	}
	if err == nil {
		m.deltas, err = register(reg, m.deltas)
	}
	if err == nil {
		m.reconciles, err = register(reg, m.reconciles)
	}
	if err == nil {
		m.corrections, err = register(reg, m.corrections)
	}
	if err == nil {
		m.panics, err = register(reg, m.panics)
	}
	return m, err
}

// register registers c, or returns the identical collector registered
// before (a second API on the same registry shares the series).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}

// fallback counts a fallback taken.
func (m *metrics) fallback(pipeline, code string) {
	m.fallbacks.WithLabelValues(pipeline, code).Inc()
}
