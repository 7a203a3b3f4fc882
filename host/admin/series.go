package admin

import (
	"math"
	"sort"
	"sync"
	"time"

	"github.com/edgeshard/edgeshard/host"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"
)

// The inspector's charts: every SampleInterval the sampler gathers the
// metrics registry and turns the host's counters into per-binding rates
// over that interval — requests/s, p99 of a request's run time, guest
// flushes/s, edge fallbacks/s, errors/s — kept in a ring of SampleWindow.
// The browser polls the ring (GET /admin/series) and draws it; nothing is
// computed there.

// Defaults of the sampler.
const (
	DefaultSampleInterval = 2 * time.Second
	DefaultSampleWindow   = 10 * time.Minute
)

// Metric families the sampler reads.
const (
	metricEvents    = "edgeshard_shard_events_total"           // binding, kind, outcome
	metricEventDur  = "edgeshard_shard_event_duration_seconds" // binding, kind
	metricFlushDur  = "edgeshard_flush_duration_seconds"       // binding, code: one per guest flush record
	metricFallbacks = "edgeshard_edge_fallbacks_total"         // pipeline, code (the edge API's)
)

// point is one sample of one binding: rates over the interval before T.
type point struct {
	T                          time.Time
	RPS, Flushes, Fallbacks, E float64
	P99                        float64 // seconds; NaN when no request ran
}

// totals are a binding's cumulative counters at one gather.
type totals struct {
	fetches, errors, flushes, fallbacks float64
	bounds, cum                         []float64 // fetch duration histogram: upper bounds, cumulative counts
}

type sampler struct {
	g         prometheus.Gatherer
	fallbacks map[string]string // pipeline label → binding
	interval  time.Duration
	size      int
	log       zerolog.Logger

	mu     sync.Mutex
	rings  map[string][]point // per binding, oldest first, at most size
	prev   map[string]totals
	prevAt time.Time

	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

func newSampler(h *host.Host, opts Options, log zerolog.Logger) *sampler {
	g := opts.Metrics
	if g == nil {
		reg := prometheus.NewRegistry()
		for _, c := range h.Collectors() {
			if err := reg.Register(c); err != nil {
				log.Warn().Err(err).Msg("inspector: a host collector could not be sampled")
			}
		}
		g = reg
	}
	interval := opts.SampleInterval
	if interval <= 0 {
		interval = DefaultSampleInterval
	}
	window := opts.SampleWindow
	if window <= 0 {
		window = DefaultSampleWindow
	}
	return &sampler{
		g: g, fallbacks: opts.FallbackBindings, interval: interval, size: max(2, int(window/interval)), log: log,
		rings: map[string][]point{}, stop: make(chan struct{}), done: make(chan struct{}),
	}
}

// run samples every interval until close or hostDone.
func (s *sampler) run(hostDone <-chan struct{}) {
	defer close(s.done)
	t := time.NewTicker(s.interval)
	defer t.Stop()
	s.sample(time.Now())
	for {
		select {
		case <-s.stop:
			return
		case <-hostDone:
			return
		case now := <-t.C:
			s.sample(now)
		}
	}
}

func (s *sampler) close() {
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.done
}

// sample gathers once and appends a point per binding seen before.
func (s *sampler) sample(now time.Time) {
	mfs, err := s.g.Gather()
	if err != nil && len(mfs) == 0 {
		s.log.Debug().Err(err).Msg("inspector: gathering metrics failed")
		return
	}
	cur := s.totals(mfs)
	s.mu.Lock()
	defer s.mu.Unlock()
	dt := now.Sub(s.prevAt).Seconds()
	for b, c := range cur {
		p, ok := s.prev[b]
		if !ok || dt <= 0 {
			continue
		}
		pt := point{
			T:         now,
			RPS:       rate(c.fetches, p.fetches, dt),
			Flushes:   rate(c.flushes, p.flushes, dt),
			Fallbacks: rate(c.fallbacks, p.fallbacks, dt),
			E:         rate(c.errors, p.errors, dt),
			P99:       quantile(0.99, c.bounds, c.cum, p.cum),
		}
		ring := append(s.rings[b], pt)
		if len(ring) > s.size {
			ring = append(ring[:0:0], ring[len(ring)-s.size:]...)
		}
		s.rings[b] = ring
	}
	s.prev, s.prevAt = cur, now
}

// rate is a counter's increase per second; a counter that went down (a
// restart) counts from zero.
func rate(cur, prev, dt float64) float64 {
	d := cur - prev
	if d < 0 {
		d = cur
	}
	return d / dt
}

// quantile estimates the q-quantile of the observations between two
// cumulative histograms of the same buckets, as Prometheus'
// histogram_quantile does: linear within the bucket that holds it. NaN
// when nothing was observed.
func quantile(q float64, bounds, cum, prevCum []float64) float64 {
	if len(cum) == 0 {
		return math.NaN()
	}
	delta := make([]float64, len(cum))
	for i := range cum {
		delta[i] = cum[i]
		if len(prevCum) == len(cum) {
			delta[i] -= prevCum[i]
		}
	}
	total := delta[len(delta)-1]
	if total <= 0 {
		return math.NaN()
	}
	rank := q * total
	i := sort.Search(len(delta), func(i int) bool { return delta[i] >= rank })
	if i >= len(bounds) || math.IsInf(bounds[i], 1) {
		// In the +Inf bucket: the highest finite bound is all we know.
		for j := len(bounds) - 1; j >= 0; j-- {
			if !math.IsInf(bounds[j], 1) {
				return bounds[j]
			}
		}
		return math.NaN()
	}
	lower, below := 0.0, 0.0
	if i > 0 {
		lower, below = bounds[i-1], delta[i-1]
	}
	in := delta[i] - below
	if in <= 0 {
		return bounds[i]
	}
	return lower + (bounds[i]-lower)*(rank-below)/in
}

// totals sums the families the charts use, per binding.
func (s *sampler) totals(mfs []*dto.MetricFamily) map[string]totals {
	out := map[string]totals{}
	for _, mf := range mfs {
		switch mf.GetName() {
		case metricEvents:
			for _, m := range mf.GetMetric() {
				b, v := label(m, "binding"), m.GetCounter().GetValue()
				t := out[b]
				if label(m, "kind") == "fetch" {
					t.fetches += v
				}
				if label(m, "outcome") == "error" {
					t.errors += v
				}
				out[b] = t
			}
		case metricEventDur:
			for _, m := range mf.GetMetric() {
				if label(m, "kind") != "fetch" {
					continue
				}
				b, h := label(m, "binding"), m.GetHistogram()
				t := out[b]
				t.bounds, t.cum = t.bounds[:0], t.cum[:0]
				for _, bk := range h.GetBucket() {
					t.bounds = append(t.bounds, bk.GetUpperBound())
					t.cum = append(t.cum, float64(bk.GetCumulativeCount()))
				}
				t.bounds = append(t.bounds, math.Inf(1))
				t.cum = append(t.cum, float64(h.GetSampleCount()))
				out[b] = t
			}
		case metricFlushDur:
			for _, m := range mf.GetMetric() {
				b := label(m, "binding")
				t := out[b]
				t.flushes += float64(m.GetHistogram().GetSampleCount())
				out[b] = t
			}
		case metricFallbacks:
			for _, m := range mf.GetMetric() {
				b, ok := s.fallbacks[label(m, "pipeline")]
				if !ok {
					continue
				}
				t := out[b]
				t.fallbacks += m.GetCounter().GetValue()
				out[b] = t
			}
		}
	}
	return out
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// series returns the ring of each binding in names, in that order (a
// binding not sampled yet has empty series).
func (s *sampler) series(names []string) SeriesList {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := SeriesList{IntervalMS: s.interval.Milliseconds(), WindowMS: (time.Duration(s.size) * s.interval).Milliseconds(), Bindings: []Series{}}
	for _, b := range names {
		ring := s.rings[b]
		se := Series{Binding: b, T: make([]int64, len(ring)), RPS: make([]float64, len(ring)), P99: make([]*float64, len(ring)),
			Flushes: make([]float64, len(ring)), Fallbacks: make([]float64, len(ring)), Errors: make([]float64, len(ring))}
		for i, p := range ring {
			se.T[i] = p.T.UnixMilli()
			se.RPS[i], se.Flushes[i], se.Fallbacks[i], se.Errors[i] = round3(p.RPS), round3(p.Flushes), round3(p.Fallbacks), round3(p.E)
			if !math.IsNaN(p.P99) {
				ms := round3(p.P99 * 1000)
				se.P99[i] = &ms
			}
		}
		out.Bindings = append(out.Bindings, se)
	}
	return out
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }
