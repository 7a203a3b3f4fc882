package host

import (
	"strconv"
	"sync"
	"time"

	"github.com/edgeshard/edgeshard/internal/prom"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the host's Prometheus collectors. Per-namespace children are
// resolved once (nsMetrics) so the hot path does no label lookups.
type metrics struct {
	events     *prometheus.CounterVec
	eventDur   *prometheus.HistogramVec
	alarms     *prometheus.CounterVec
	starts     *prometheus.CounterVec
	batched    *prometheus.CounterVec
	crashes    *prometheus.CounterVec
	swaps      *prometheus.CounterVec
	codes      *prometheus.CounterVec
	limits     *prometheus.CounterVec
	flushDur   *prometheus.HistogramVec
	commitWait prometheus.Histogram
	evictions  *prometheus.CounterVec
	startWaits *prometheus.CounterVec

	// A host with a Placement (placement.go).
	placementRetries prometheus.Counter
	handOffs         *prometheus.CounterVec
	fenceRefusals    *prometheus.CounterVec
}

func newMetrics(h *Host, reg prometheus.Registerer) *metrics {
	m := &metrics{
		events:           prom.CounterVec("edgeshard_shard_events_total", "Shard events handled, by binding, kind (fetch, alarm) and outcome.", "binding", "kind", "outcome"),
		eventDur:         prom.HistogramVec("edgeshard_shard_event_duration_seconds", "Time a shard spent running one event (excluding the wait for durability).", []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10}, "binding", "kind"),
		alarms:           prom.CounterVec("edgeshard_alarms_total", "Alarm runs by binding and result (fired, retried, abandoned).", "binding", "result"),
		batched:          prom.CounterVec("edgeshard_fetch_batched_total", "Requests delivered to a guest in a batch of two or more (edgeshard_fetch_batch), by binding.", "binding"),
		starts:           prom.CounterVec("edgeshard_instance_starts_total", "Shard instances started.", "binding"),
		crashes:          prom.CounterVec("edgeshard_instance_crashes_total", "Shard instances discarded after a trap, timeout or bad response.", "binding", "reason"),
		swaps:            prom.CounterVec("edgeshard_module_swaps_total", "Module swaps and rollbacks by outcome.", "binding", "outcome"),
		codes:            prom.CounterVec("edgeshard_guest_log_codes_total", "Guest log records carrying a code field (e.g. E-VIBECODR-2130 flush ok), by binding and code: codes the binding's log_codes do not allow count as \"unlisted\", codes past the first 32 of a binding as \"other\".", "binding", "code"),
		limits:           prom.CounterVec("edgeshard_guest_limit_refusals_total", "Guest calls refused (or alarms moved later) by a host limit, by binding and limit (event_write_bytes, event_write_keys, event_log_lines, event_log_bytes, storage_quota_bytes, alarm_rearm_interval).", "binding", "limit"),
		flushDur:         prom.HistogramVec("edgeshard_flush_duration_seconds", "Duration reported by guest flush log records (fields code and duration_ms).", prometheus.ExponentialBuckets(0.0005, 2.5, 12), "binding", "code"),
		evictions:        prom.CounterVec("edgeshard_instance_evictions_total", "Idle shard instances evicted, by binding and reason: idle (idle_timeout passed) or budget (the instance memory budget needed the room).", "binding", "reason"),
		startWaits:       prom.CounterVec("edgeshard_instance_start_waits_total", "Instance starts that waited for room in the instance memory budget, by binding and outcome: started, or overloaded (503 shard_overloaded once instance_start_wait passed).", "binding", "outcome"),
		placementRetries: prom.Counter("edgeshard_placement_retries_total", "Requests that asked the placement again because their shard was between owners (leaving this host, or its owner no longer owned it)."),
		handOffs:         prom.CounterVec("edgeshard_shard_handoffs_total", "Shards that left this host by their claim, by reason: moved (a planned move: queue finished, buffer flushed) or lost (the ownership lapsed).", "reason"),
		fenceRefusals:    prom.CounterVec("edgeshard_fence_refusals_total", "Writes refused because this host no longer owned the shard, by where: storage (before the commit), claim (a SQL write after the claim was lost), sql (the database held a newer epoch) or acknowledgement (durable here, but the claim lapsed before the answer left: not acknowledged).", "where"),
		commitWait:       prom.Histogram("edgeshard_storage_commit_wait_seconds", "Time a response waited for its writes to become durable (output gate).", prom.LatencyBuckets()),
	}
	if reg == nil {
		return m
	}
	reg.MustRegister(m.events, m.eventDur, m.alarms, m.starts, m.batched, m.crashes, m.swaps, m.codes, m.limits, m.flushDur, m.commitWait, m.evictions, m.startWaits,
		m.placementRetries, m.handOffs, m.fenceRefusals)
	reg.MustRegister(prom.GaugeFunc("edgeshard_uptime_seconds", "Seconds since the host started.", func() float64 { return time.Since(h.started).Seconds() }))
	reg.MustRegister(prom.GaugeFunc("edgeshard_instance_memory_budget_bytes", "The instance memory budget (0: none).", func() float64 { return float64(h.budget.limit) }))
	reg.MustRegister(prom.GaugeFunc("edgeshard_instance_memory_charged_bytes", "Memory charged to live instances against the budget: linear memory plus a fixed overhead each, every binding.", func() float64 { return float64(h.budget.charged()) }))
	reg.MustRegister(prom.GaugeFunc("edgeshard_instance_memory_pool_bytes", "Linear memory of closed instances kept, zeroed, for the next ones to start on.", func() float64 { return float64(h.engine.PooledMemoryBytes()) }))
	reg.MustRegister(&shardCollector{h: h}, &wsCollector{h: h})
	return m
}

// nsMetrics are a namespace's pre-resolved collectors.
type nsMetrics struct {
	m                      *metrics
	binding                string
	fetchOK, fetchErr      prometheus.Counter
	alarmOK, alarmErr      prometheus.Counter
	fetchDur, alarmDur     prometheus.Observer
	alarmFired, alarmRetry prometheus.Counter
	alarmAbandoned         prometheus.Counter
	starts                 prometheus.Counter
	batched                prometheus.Counter

	codesMu                sync.Mutex
	codes                  map[string]bool // code labels this binding has created
	evictIdle, evictBudget prometheus.Counter
	waitOK, waitRefused    prometheus.Counter
}

func (m *metrics) forNamespace(binding string) *nsMetrics {
	return &nsMetrics{
		m: m, binding: binding,
		fetchOK:        m.events.WithLabelValues(binding, "fetch", "ok"),
		fetchErr:       m.events.WithLabelValues(binding, "fetch", "error"),
		alarmOK:        m.events.WithLabelValues(binding, "alarm", "ok"),
		alarmErr:       m.events.WithLabelValues(binding, "alarm", "error"),
		fetchDur:       m.eventDur.WithLabelValues(binding, "fetch"),
		alarmDur:       m.eventDur.WithLabelValues(binding, "alarm"),
		alarmFired:     m.alarms.WithLabelValues(binding, "fired"),
		alarmRetry:     m.alarms.WithLabelValues(binding, "retried"),
		alarmAbandoned: m.alarms.WithLabelValues(binding, "abandoned"),
		starts:         m.starts.WithLabelValues(binding),
		batched:        m.batched.WithLabelValues(binding),
		codes:          map[string]bool{},
		evictIdle:      m.evictions.WithLabelValues(binding, "idle"),
		evictBudget:    m.evictions.WithLabelValues(binding, "budget"),
		waitOK:         m.startWaits.WithLabelValues(binding, "started"),
		waitRefused:    m.startWaits.WithLabelValues(binding, "overloaded"),
	}
}

// evicted counts an instance evicted for reason ("idle" or "budget").
func (n *nsMetrics) evicted(reason string) {
	if reason == "budget" {
		n.evictBudget.Inc()
	} else {
		n.evictIdle.Inc()
	}
}

// startWait counts an instance start that waited for room in the budget.
func (n *nsMetrics) startWait(started bool) {
	if started {
		n.waitOK.Inc()
	} else {
		n.waitRefused.Inc()
	}
}

// maxGuestCodes bounds the code labels one binding's guests create: a
// guest choosing its codes must not grow the registry without bound.
const maxGuestCodes = 32

// codeLabel returns code, or "other" once the binding has maxGuestCodes.
func (n *nsMetrics) codeLabel(code string) string {
	n.codesMu.Lock()
	defer n.codesMu.Unlock()
	if !n.codes[code] {
		if len(n.codes) >= maxGuestCodes {
			return "other"
		}
		n.codes[code] = true
	}
	return code
}

// limitHit counts a guest call refused by a limit.
func (n *nsMetrics) limitHit(limit string) { n.m.limits.WithLabelValues(n.binding, limit).Inc() }

func (n *nsMetrics) crash(reason string) { n.m.crashes.WithLabelValues(n.binding, reason).Inc() }

func (n *nsMetrics) swap(outcome string) { n.m.swaps.WithLabelValues(n.binding, outcome).Inc() }

// guestCode counts a guest log record's code and its duration_ms.
func (n *nsMetrics) guestCode(code, durationMs string) {
	code = n.codeLabel(code)
	n.m.codes.WithLabelValues(n.binding, code).Inc()
	if durationMs == "" {
		return
	}
	if ms, err := strconv.ParseFloat(durationMs, 64); err == nil {
		n.m.flushDur.WithLabelValues(n.binding, code).Observe(ms / 1000)
	}
}

// shardCollector reports queue depths, live instances and pending alarms
// at scrape time.
type shardCollector struct{ h *Host }

var (
	descQueue     = prometheus.NewDesc("edgeshard_shard_queue_depth", "Events waiting in shard queues, summed per binding.", []string{"binding"}, nil)
	descInstances = prometheus.NewDesc("edgeshard_shard_instances", "Live shard instances per binding.", []string{"binding"}, nil)
	descActors    = prometheus.NewDesc("edgeshard_shards_active", "Shards with an actor (live or idle-but-not-evicted) per binding.", []string{"binding"}, nil)
	descAlarms    = prometheus.NewDesc("edgeshard_alarms_pending", "Alarms scheduled per binding.", []string{"binding"}, nil)
	descMemory    = prometheus.NewDesc("edgeshard_instance_memory_bytes", "Linear memory of live instances, summed per binding.", []string{"binding"}, nil)
)

func (c *shardCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descQueue
	ch <- descInstances
	ch <- descActors
	ch <- descAlarms
	ch <- descMemory
}

func (c *shardCollector) Collect(ch chan<- prometheus.Metric) {
	pending := c.h.alarms.pending()
	for _, ns := range c.h.Namespaces() {
		var queued, live int
		var mem uint64
		stats := ns.Stats()
		for _, s := range stats {
			queued += s.QueueDepth
			if s.Live {
				live++
			}
			mem += s.MemoryBytes
		}
		ch <- prometheus.MustNewConstMetric(descQueue, prometheus.GaugeValue, float64(queued), ns.name)
		ch <- prometheus.MustNewConstMetric(descInstances, prometheus.GaugeValue, float64(live), ns.name)
		ch <- prometheus.MustNewConstMetric(descActors, prometheus.GaugeValue, float64(len(stats)), ns.name)
		ch <- prometheus.MustNewConstMetric(descAlarms, prometheus.GaugeValue, float64(pending[ns.name]), ns.name)
		ch <- prometheus.MustNewConstMetric(descMemory, prometheus.GaugeValue, float64(mem), ns.name)
	}
}
