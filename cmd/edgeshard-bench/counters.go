package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/edge"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/benchkit"
	"github.com/edgeshard/edgeshard/internal/configtext"
	"github.com/edgeshard/edgeshard/internal/httpx"
	"github.com/edgeshard/edgeshard/internal/loadgen"
	"github.com/gorilla/mux"
)

// userHeader is the trusted user-id header the benchmark's edge APIs use
// (as behind an authenticating gateway).
const userHeader = "X-User-Id"

// serveInProcess runs one request through handler without a network: the
// edge API's own code path, minus HTTP parsing and the socket.
func serveInProcess(ctx context.Context, handler http.Handler, method, path string, body []byte) (int, []byte) {
	var rd io.Reader
	if body != nil {
		rd = strings.NewReader(string(body))
	}
	req := httptest.NewRequestWithContext(ctx, method, path, rd)
	req.Header.Set(userHeader, "bench")
	rec := httptest.NewRecorder()
	handler.ServeHTTP(rec, req)
	return rec.Code, rec.Body.Bytes()
}

// callHTTP runs one request against a loopback server and returns the
// status and body.
func callHTTP(ctx context.Context, c *http.Client, method, url string, body []byte) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = strings.NewReader(string(body))
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set(userHeader, "bench")
	return benchkit.Send(c, req)
}

// callWant is callHTTP that wants the status want: another status is an
// error with the answer's body.
func callWant(ctx context.Context, c *http.Client, method, url string, body []byte, want int) error {
	st, b, err := callHTTP(ctx, c, method, url, body)
	if err != nil {
		return err
	}
	if st != want {
		return fmt.Errorf("status %d: %s", st, b)
	}
	return nil
}

// measureFlushed is one measured run of a pipeline's side: op with
// workers callers for d, every call acknowledged (calls names them in the
// error), each carrying per operations. With flush, the shards of ns are
// flushed to SQL at the end and the run is charged with that time and CPU.
func measureFlushed(workers int, d time.Duration, op loadgen.Op, calls string, per int, ns *host.Namespace, flush bool) (sample, error) {
	c0 := benchkit.SelfCPU()
	l, err := checkedLoop(workers, d, op, calls)
	if err != nil {
		return sample{}, err
	}
	var extra time.Duration
	if flush {
		if extra, err = flushShards(ns); err != nil {
			return sample{}, err
		}
	}
	n := max(l.OK*per, 1)
	return sample{rate: l.rate(extra) * float64(per), cpu: (benchkit.SelfCPU() - c0) / time.Duration(n), p99: l.Stats.P99}, nil
}

// zipfPosts returns, per worker, a generator of post ids Zipf-distributed
// over n posts with exponent s (post "p0" the hottest).
func zipfPosts(workers, n int, s float64, seed uint64) []func() string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = "p" + strconv.Itoa(i)
	}
	out := make([]func() string, workers)
	for w := range out {
		z := rand.NewZipf(rand.New(rand.NewPCG(seed, uint64(w))), s, 1, uint64(n-1))
		out[w] = func() string { return ids[z.Uint64()] }
	}
	return out
}

// flushShards drains every shard of a buffering binding (COUNTER_SHARD or
// RUNTIME_EVENT_SHARD) to SQL with POST /flush, all shards at once, and
// returns how long that took. A shard is drained when its answer shows
// nothing buffered or in flight.
func flushShards(ns *host.Namespace) (time.Duration, error) {
	t0 := time.Now()
	n := max(ns.Shards(), 1)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for s := 0; s < n; s++ {
		wg.Go(func() {
			errs[s] = flushShard(ns, strconv.Itoa(s))
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return 0, err
		}
	}
	return time.Since(t0), nil
}

func flushShard(ns *host.Namespace, shard string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for try := 0; try < 8; try++ {
		resp, err := ns.FetchShard(ctx, shard, &abi.Request{Method: "POST", Path: "/flush"})
		if err != nil {
			return fmt.Errorf("flush shard %s: %w", shard, err)
		}
		if resp.Status != 200 {
			return fmt.Errorf("flush shard %s: %d %s", shard, resp.Status, resp.Body)
		}
		var st struct{ Buffered, Inflight int }
		if err := json.Unmarshal(resp.Body, &st); err != nil {
			return fmt.Errorf("flush shard %s: %w", shard, err)
		}
		if st.Buffered == 0 && st.Inflight == 0 {
			return nil
		}
	}
	return fmt.Errorf("flush shard %s: still buffering after 8 flushes", shard)
}

// primeShards sends req to every shard of ns, so every instance is
// running before a measurement starts.
func primeShards(ns *host.Namespace, req *abi.Request) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for s := 0; s < max(ns.Shards(), 1); s++ {
		r := *req
		resp, err := ns.FetchShard(ctx, strconv.Itoa(s), &r)
		if err != nil {
			return fmt.Errorf("prime shard %d: %w", s, err)
		}
		if resp.Status >= 300 {
			return fmt.Errorf("prime shard %d: %d %s", s, resp.Status, resp.Body)
		}
	}
	return nil
}

// floorRouter answers POST /posts/{postId}/views like the edge API but
// writes nothing: the cost of routing the request and encoding its answer,
// which both sides of counters pay. Legacy CPU per increment divided by this
// floor bounds the ratio any shard path can reach on the machine.
func floorRouter() http.Handler {
	r := mux.NewRouter()
	r.HandleFunc("/posts/{postId}/views", func(w http.ResponseWriter, req *http.Request) {
		httpx.WriteJSON(w, http.StatusAccepted, map[string]any{"post_id": mux.Vars(req)["postId"], "counter": "views", "accepted": true})
	}).Methods(http.MethodPost)
	return r
}

// counters: acknowledged durable increments/s of POST /posts/{id}/views,
// COUNTER_DO_MODE=primary (CounterShard) versus off (the legacy clamped
// UPDATE, one SQLite transaction per increment), 64 callers, Zipf over
// 1,000 posts; in-process (the handler of the server's main listener,
// internal/server as `edgeshard serve` runs it, called directly) and over
// loopback HTTP to that listener. The shard side's time includes flushing every shard to
// SQL at the end of its run, so it is charged for the SQL work it defers.
func (r *runner) counters(w *scratch) (*result, error) {
	sz := r.sz
	mod, err := r.build.wasm("plugins/counters")
	if err != nil {
		return nil, err
	}
	// Two servers as `edgeshard serve` runs them, each with its own SQL
	// file: COUNTER_DO_MODE=primary (the CounterShard binding) and off
	// (the legacy UPDATE; no shard binding).
	primary, legacy, err := r.startModeServers(w, "COUNTER_DO_MODE", configtext.Binding("COUNTER_SHARD", mod, sz.Shards, "DB", ""))
	if err != nil {
		return nil, err
	}
	ns, _ := primary.Host().Namespace("COUNTER_SHARD")
	srvF := newServer(floorRouter())
	defer srvF.Close()
	urlP, urlL := "http://"+primary.Addr(), "http://"+legacy.Addr()
	client := newClient(sz.Workers)
	defer client.CloseIdleConnections()

	var seed uint64
	inProc := func(h http.Handler) loadgen.Op {
		seed++
		posts := zipfPosts(sz.Workers, sz.Posts, sz.ZipfS, seed)
		return func(ctx context.Context, w, _ int) error {
			st, b := serveInProcess(ctx, h, "POST", "/posts/"+posts[w]()+"/views", nil)
			if st != http.StatusAccepted {
				return fmt.Errorf("status %d: %s", st, b)
			}
			return nil
		}
	}
	overHTTP := func(base string) loadgen.Op {
		seed++
		posts := zipfPosts(sz.Workers, sz.Posts, sz.ZipfS, seed)
		return func(ctx context.Context, w, _ int) error {
			return callWant(ctx, client, "POST", base+"/posts/"+posts[w]()+"/views", nil, http.StatusAccepted)
		}
	}
	measure := func(d time.Duration, op loadgen.Op, shard bool) (sample, error) {
		return measureFlushed(sz.Workers, d, op, "increments", 1, ns, shard)
	}
	if err := primeShards(ns, &abi.Request{Method: "GET", Path: "/pending"}); err != nil {
		return nil, err
	}
	// Warm up both paths (shard instances, SQL pages, connections).
	for _, w := range []struct {
		op    loadgen.Op
		shard bool
	}{{inProc(primary.Handler()), true}, {inProc(legacy.Handler()), false}, {overHTTP(urlP), true}, {overHTTP(urlL), false}} {
		if _, err := measure(sz.Warmup, w.op, w.shard); err != nil {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
	}
	pairs := []struct {
		label                string
		shard, legacy, floor loadgen.Op
		res                  [][]sample
	}{
		{label: "inproc", shard: inProc(primary.Handler()), legacy: inProc(legacy.Handler()), floor: inProc(floorRouter())},
		{label: "http", shard: overHTTP(urlP), legacy: overHTTP(urlL), floor: overHTTP(srvF.URL)},
	}
	for i := range pairs {
		p := &pairs[i]
		p.res, err = r.compare("counters "+p.label, sz.Rounds,
			side{"shard", func() (sample, error) { return measure(sz.Side, p.shard, true) }},
			side{"legacy", func() (sample, error) { return measure(sz.Side, p.legacy, false) }},
			side{"floor", func() (sample, error) { return measure(sz.Side/2, p.floor, false) }})
		if err != nil {
			return nil, err
		}
	}
	res := &result{name: "counters"}
	var ratios []float64
	var heads []string
	for _, p := range pairs {
		sr, lr := rates(p.res[0]), rates(p.res[1])
		s, l := benchkit.Median(sr), benchkit.Median(lr)
		ratio := s / l
		res.add(p.label+"_shard_per_s", s)
		res.add(p.label+"_legacy_per_s", l)
		res.add(p.label+"_ratio", ratio)
		res.add(p.label+"_shard_cpu_us", cpuMicros(p.res[0]))
		res.add(p.label+"_legacy_cpu_us", cpuMicros(p.res[1]))
		res.add(p.label+"_floor_cpu_us", cpuMicros(p.res[2]))
		res.add(p.label+"_shard_p99_ms", p99Millis(p.res[0]))
		res.add(p.label+"_legacy_p99_ms", p99Millis(p.res[1]))
		// The best ratio any shard path could reach here: legacy CPU over
		// the CPU of answering the same request with no write at all.
		res.add(p.label+"_bound", cpuMicros(p.res[1])/cpuMicros(p.res[2]))
		res.add(p.label+"_spread", max(benchkit.Spread(sr), benchkit.Spread(lr)))
		ratios = append(ratios, ratio)
		heads = append(heads, fmt.Sprintf("%s %.1f×", p.label, ratio))
	}
	fb := w.logs.code(edge.CodeCounterEnqueueFailed)
	res.add("fallbacks", fb)
	res.verdict(sz.Rounds, 20, fb == 0, ratios...)
	res.headline = strings.Join(heads, ", ")
	res.note = fmt.Sprintf("%s/s vs %s/s in-process (%.0f vs %.0f µs CPU each; a no-write handler costs %.0f, so no shard path can beat %.1f× here); over HTTP p99 %.1f vs %.1f ms; %d callers, Zipf(s=%.1f) over %d posts; shard side includes its final flush to SQL",
		benchkit.FormatNum(benchkit.Median(rates(pairs[0].res[0]))), benchkit.FormatNum(benchkit.Median(rates(pairs[0].res[1]))),
		cpuMicros(pairs[0].res[0]), cpuMicros(pairs[0].res[1]), cpuMicros(pairs[0].res[2]), cpuMicros(pairs[0].res[1])/cpuMicros(pairs[0].res[2]),
		p99Millis(pairs[1].res[0]), p99Millis(pairs[1].res[1]),
		sz.Workers, sz.ZipfS, sz.Posts)
	return res, nil
}
