package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/edge"
	"github.com/edgeshard/edgeshard/internal/benchkit"
	"github.com/edgeshard/edgeshard/internal/configtext"
	"github.com/edgeshard/edgeshard/internal/eventsbody"
	"github.com/edgeshard/edgeshard/internal/httpx"
	"github.com/edgeshard/edgeshard/internal/loadgen"
)

// eventBody returns a POST /runtime-events body of n events for capsules
// drawn from rng (ids are left to the edge, which assigns UUIDs).
func eventBody(rng *rand.Rand, n, capsules int) []byte {
	return eventsbody.Append(nil, n, func(b []byte, _ int) []byte {
		c := rng.IntN(capsules)
		return fmt.Appendf(b, `{"type":"run.finished","capsule_id":"cap-%d","run_id":"run-%d-%d","payload":{"ms":%d,"ok":true}}`,
			c, c, rng.IntN(1<<20), rng.IntN(5000))
	})
}

// floorEvents reads a POST /runtime-events body and answers 202 without
// parsing or storing anything: the HTTP cost both sides of events pay.
func floorEvents(w http.ResponseWriter, r *http.Request) {
	if _, err := io.Copy(io.Discard, r.Body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	httpx.WriteJSON(w, http.StatusAccepted, map[string]any{"accepted": 1})
}

// events: runtime events/s acknowledged by POST /runtime-events over
// loopback HTTP, RUNTIME_EVENT_DO_MODE=primary (RuntimeEventShard, which
// buffers durably and flushes 100 at a time) versus off (one inline
// INSERT transaction per request). Both sides get the same requests: Batch
// events each, 64 callers. The primary side's time includes flushing every
// shard (SQL rows and analytics points) at the end of its run.
func (r *runner) events(w *scratch) (*result, error) {
	sz := r.sz
	mod, err := r.build.wasm("plugins/runtimeevents")
	if err != nil {
		return nil, err
	}
	// Two servers as `edgeshard serve` runs them, each with its own SQL
	// file: RUNTIME_EVENT_DO_MODE=primary (the RuntimeEventShard binding,
	// with its analytics dataset) and off (inline INSERTs; no shard
	// binding).
	primary, off, err := r.startModeServers(w, "RUNTIME_EVENT_DO_MODE", configtext.Binding("RUNTIME_EVENT_SHARD", mod, sz.Shards, "DB", "AE")+
		configtext.Analytics("AE", "runtime_events", "sqlite://"+w.path("analytics.db")))
	if err != nil {
		return nil, err
	}
	ns, _ := primary.Host().Namespace("RUNTIME_EVENT_SHARD")
	srvF := newServer(http.HandlerFunc(floorEvents))
	defer srvF.Close()
	urlP, urlO := "http://"+primary.Addr(), "http://"+off.Addr()
	client := newClient(sz.Workers)
	defer client.CloseIdleConnections()

	var seed uint64
	op := func(url string) loadgen.Op {
		seed++
		rngs := make([]*rand.Rand, sz.Workers)
		for w := range rngs {
			rngs[w] = rand.New(rand.NewPCG(seed, uint64(w)))
		}
		return func(ctx context.Context, w, _ int) error {
			return callWant(ctx, client, "POST", url+"/runtime-events", eventBody(rngs[w], sz.Batch, 1000), http.StatusAccepted)
		}
	}
	measure := func(d time.Duration, op loadgen.Op, shard bool) (sample, error) {
		return measureFlushed(sz.Workers, d, op, "requests", sz.Batch, ns, shard)
	}
	if err := primeShards(ns, &abi.Request{Method: "GET", Path: "/stats"}); err != nil {
		return nil, err
	}
	if _, err := measure(sz.Warmup, op(urlP), true); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	if _, err := measure(sz.Warmup, op(urlO), false); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	opP, opO, opF := op(urlP), op(urlO), op(srvF.URL)
	res2, err := r.compare("events", sz.Rounds,
		side{"primary", func() (sample, error) { return measure(sz.Side, opP, true) }},
		side{"off", func() (sample, error) { return measure(sz.Side, opO, false) }},
		side{"floor", func() (sample, error) { return measure(sz.Side/2, opF, false) }})
	if err != nil {
		return nil, err
	}
	res := &result{name: "events"}
	p, o, ratio, spread := res.addComparison(res2, "primary", "off")
	fb := w.logs.code(edge.CodeEventEnqueueFailed)
	res.add("floor_cpu_us", cpuMicros(res2[2]))
	res.add("floor_p99_ms", p99Millis(res2[2]))
	res.add("bound", cpuMicros(res2[1])/cpuMicros(res2[2]))
	res.add("spread", spread)
	res.add("batch", sz.Batch)
	res.add("fallbacks", fb)
	res.verdict(sz.Rounds, 10, fb == 0, ratio)
	res.headline = fmt.Sprintf("%.1f×", ratio)
	res.note = fmt.Sprintf("%s vs %s events/s over HTTP (%.0f vs %.0f µs CPU each, p99 %.1f vs %.1f ms; reading the request and answering costs %.0f, so no shard path can beat %.1f× here); %d event(s) per request, %d callers; primary includes its final flush",
		benchkit.FormatNum(p), benchkit.FormatNum(o), cpuMicros(res2[0]), cpuMicros(res2[1]), p99Millis(res2[0]), p99Millis(res2[1]), cpuMicros(res2[2]), cpuMicros(res2[1])/cpuMicros(res2[2]), sz.Batch, sz.Workers)
	return res, nil
}
