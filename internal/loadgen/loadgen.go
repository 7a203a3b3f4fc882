// Package loadgen is a small closed-loop load generator for tests and
// benchmarks: a fixed number of workers each issue one request at a time
// (optionally paced), every request's start and latency is recorded, and
// latency percentiles are computed over any time window of the run — e.g.
// steady state versus the seconds around a module hot swap.
package loadgen

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"
)

// Op performs one request for a worker; i counts the worker's requests from
// 0. It returns nil when the request succeeded (was acknowledged).
type Op func(ctx context.Context, worker, i int) error

// Options bound the load.
type Options struct {
	// Workers is the number of concurrent closed loops (default 4): at most
	// Workers requests are in flight at any time.
	Workers int
	// Interval, if positive, is the minimum time between the starts of two
	// requests of one worker, so the offered rate is at most
	// Workers/Interval. Zero issues requests back to back.
	Interval time.Duration
}

// Sample is one request's outcome.
type Sample struct {
	Worker  int
	Start   time.Duration // since the run began
	Latency time.Duration
	Err     error
}

// Run is a load in progress.
type Run struct {
	opts    Options
	began   time.Time
	stopCtx context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	byW     [][]Sample
}

// New prepares a run; its clock (Elapsed) starts now, so an Op may read
// it from its first call.
func New(opts Options) *Run {
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	stopCtx, cancel := context.WithCancel(context.Background())
	return &Run{opts: opts, began: time.Now(), stopCtx: stopCtx, cancel: cancel, byW: make([][]Sample, opts.Workers)}
}

// Start begins a load of op with opts; call Stop to end it. It is
// New(opts).Go(ctx, op).
func Start(ctx context.Context, opts Options, op Op) *Run {
	r := New(opts)
	r.Go(ctx, op)
	return r
}

// Go starts the workers; call it once. ctx is passed to every Op; Stop
// never cancels it, so no request is cut short by the generator itself
// (cancel ctx to abort requests in flight).
func (r *Run) Go(ctx context.Context, op Op) {
	for w := 0; w < r.opts.Workers; w++ {
		r.wg.Add(1)
		go r.worker(ctx, w, op)
	}
}

func (r *Run) worker(ctx context.Context, w int, op Op) {
	defer r.wg.Done()
	var local []Sample
	defer func() {
		r.mu.Lock()
		r.byW[w] = local
		r.mu.Unlock()
	}()
	next := time.Now()
	for i := 0; ; i++ {
		if r.opts.Interval > 0 {
			if d := time.Until(next); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-t.C:
				case <-r.stopCtx.Done():
					t.Stop()
					return
				}
			}
			next = next.Add(r.opts.Interval)
		}
		select {
		case <-r.stopCtx.Done():
			return
		case <-ctx.Done():
			return
		default:
		}
		t0 := time.Now()
		err := op(ctx, w, i)
		local = append(local, Sample{Worker: w, Start: t0.Sub(r.began), Latency: time.Since(t0), Err: err})
	}
}

// Elapsed is the time since the run began, to mark phases (e.g. when a
// swap started and ended) in the same time base as Sample.Start.
func (r *Run) Elapsed() time.Duration { return time.Since(r.began) }

// Stop ends the load once every worker has finished its current request,
// and returns all samples.
func (r *Run) Stop() *Result {
	r.cancel()
	r.wg.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	res := &Result{Began: r.began}
	for _, s := range r.byW {
		res.Samples = append(res.Samples, s...)
	}
	slices.SortFunc(res.Samples, func(a, b Sample) int { return cmp.Compare(a.Start, b.Start) })
	return res
}

// Result holds every sample of a run, ordered by start time.
type Result struct {
	Began   time.Time
	Samples []Sample
}

// Stats summarises the requests of a window.
type Stats struct {
	Requests int
	Errors   int
	Span     time.Duration // from the first start to the last end
	P50, P99 time.Duration
	Max      time.Duration
}

// RPS is the request rate over the window's span.
func (s Stats) RPS() float64 {
	if s.Span <= 0 {
		return 0
	}
	return float64(s.Requests) / s.Span.Seconds()
}

// String formats the stats for logs.
func (s Stats) String() string {
	return fmt.Sprintf("%d req (%d failed), %.0f req/s, p50 %v, p99 %v, max %v",
		s.Requests, s.Errors, s.RPS(), s.P50.Round(time.Microsecond), s.P99.Round(time.Microsecond), s.Max.Round(time.Microsecond))
}

// All summarises every request of the run.
func (r *Result) All() Stats { return r.Window(0, math.MaxInt64) }

// Window summarises the requests that started in [from, to) (durations
// since the run began). Failed requests count in Errors and in latency too.
func (r *Result) Window(from, to time.Duration) Stats {
	var st Stats
	var lat []time.Duration
	var first, last time.Duration = -1, 0
	for _, s := range r.Samples {
		if s.Start < from || s.Start >= to {
			continue
		}
		st.Requests++
		if s.Err != nil {
			st.Errors++
		}
		lat = append(lat, s.Latency)
		if first < 0 {
			first = s.Start
		}
		last = max(last, s.Start+s.Latency)
	}
	if st.Requests == 0 {
		return st
	}
	st.Span = last - first
	slices.Sort(lat)
	st.P50, st.P99, st.Max = Percentile(lat, 0.50), Percentile(lat, 0.99), lat[len(lat)-1]
	return st
}

// Errors returns the failed samples.
func (r *Result) Errors() []Sample {
	var out []Sample
	for _, s := range r.Samples {
		if s.Err != nil {
			out = append(out, s)
		}
	}
	return out
}

// Percentile returns the q-quantile (0 ≤ q ≤ 1) of sorted latencies by the
// nearest-rank method, or 0 for none.
func Percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}
