package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/edge"
	"github.com/edgeshard/edgeshard/internal/httpx"
	"github.com/edgeshard/edgeshard/internal/loadgen"
	"github.com/edgeshard/edgeshard/storage/analytics"
)

// eventBody returns a POST /runtime-events body of n events for capsules
// drawn from rng (ids are left to the edge, which assigns UUIDs).
func eventBody(rng *rand.Rand, n, capsules int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"events":[`)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		c := rng.IntN(capsules)
		fmt.Fprintf(&b, `{"type":"run.finished","capsule_id":"cap-%d","run_id":"run-%d-%d","payload":{"ms":%d,"ok":true}}`,
			c, c, rng.IntN(1<<20), rng.IntN(5000))
	}
	b.WriteString(`]}`)
	return b.Bytes()
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
func (r *runner) events() (*result, error) {
	sz := r.sz
	dir, err := os.MkdirTemp("", "edgeshard-bench-events-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	logs := &logSink{}
	shardDB, err := openSQL(filepath.Join(dir, "shard.db"))
	if err != nil {
		return nil, err
	}
	defer shardDB.Close()
	legacyDB, err := openSQL(filepath.Join(dir, "legacy.db"))
	if err != nil {
		return nil, err
	}
	defer legacyDB.Close()
	sink, err := analytics.OpenSQLite("sqlite://"+filepath.Join(dir, "analytics.db"), analytics.SinkOptions{})
	if err != nil {
		return nil, err
	}
	defer sink.Close()
	mod, err := r.build.wasm("plugins/runtimeevents")
	if err != nil {
		return nil, err
	}
	cfg := r.hostConfig(filepath.Join(dir, "host"), logs)
	cfg.SQL = map[string]host.SQLDB{"DB": shardDB}
	cfg.Analytics = map[string]host.AnalyticsBinding{"AE": {Dataset: "runtime_events", Sink: sink}}
	cfg.Bindings = []host.Binding{{Name: "RUNTIME_EVENT_SHARD", Module: mod, Shards: sz.Shards, SQL: "DB", Analytics: "AE"}}
	h, err := host.New(context.Background(), cfg)
	if err != nil {
		return nil, err
	}
	defer h.Close(context.Background())
	ns, _ := h.Namespace("RUNTIME_EVENT_SHARD")
	primary, err := newEdge(h, shardDB, logs, func(c *edge.Config) { c.EventMode = edge.ModePrimary })
	if err != nil {
		return nil, err
	}
	defer primary.api.Close()
	off, err := newEdge(h, legacyDB, logs, func(c *edge.Config) { c.EventMode = edge.ModeOff })
	if err != nil {
		return nil, err
	}
	defer off.api.Close()
	srvP, srvO, srvF := newServer(primary.router), newServer(off.router), newServer(http.HandlerFunc(floorEvents))
	defer srvP.Close()
	defer srvO.Close()
	defer srvF.Close()
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
			st, b, err := callHTTP(ctx, client, "POST", url+"/runtime-events", eventBody(rngs[w], sz.Batch, 1000))
			if err != nil {
				return err
			}
			if st != http.StatusAccepted {
				return fmt.Errorf("status %d: %s", st, b)
			}
			return nil
		}
	}
	measure := func(d time.Duration, op loadgen.Op, shard bool) (sample, error) {
		c0 := processCPU()
		l := closedLoop(sz.Workers, d, op)
		if l.Errors > 0 {
			return sample{}, fmt.Errorf("%d of %d requests failed; first: %v", l.Errors, l.OK+l.Errors, l.FirstErr)
		}
		var extra time.Duration
		if shard {
			d, err := flushShards(ns)
			if err != nil {
				return sample{}, err
			}
			extra = d
		}
		n := max(l.OK*sz.Batch, 1)
		return sample{rate: l.rate(extra) * float64(sz.Batch), cpu: (processCPU() - c0) / time.Duration(n)}, nil
	}
	if err := primeShards(ns, &abi.Request{Method: "GET", Path: "/stats"}); err != nil {
		return nil, err
	}
	if _, err := measure(sz.Warmup, op(srvP.URL), true); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	if _, err := measure(sz.Warmup, op(srvO.URL), false); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	opP, opO, opF := op(srvP.URL), op(srvO.URL), op(srvF.URL)
	res2, err := r.compare("events", sz.Rounds,
		side{"primary", func() (sample, error) { return measure(sz.Side, opP, true) }},
		side{"off", func() (sample, error) { return measure(sz.Side, opO, false) }},
		side{"floor", func() (sample, error) { return measure(sz.Side/2, opF, false) }})
	if err != nil {
		return nil, err
	}
	pr, or := rates(res2[0]), rates(res2[1])
	p, o := median(pr), median(or)
	ratio := p / o
	fb := logs.code(edge.CodeEventEnqueueFailed)
	res := &result{name: "events", met: ratio >= 10 && fb == 0}
	res.add("primary_per_s", p)
	res.add("off_per_s", o)
	res.add("ratio", ratio)
	res.add("primary_cpu_us", cpuMicros(res2[0]))
	res.add("off_cpu_us", cpuMicros(res2[1]))
	res.add("floor_cpu_us", cpuMicros(res2[2]))
	res.add("bound", cpuMicros(res2[1])/cpuMicros(res2[2]))
	res.add("spread", max(spread(pr), spread(or)))
	res.add("batch", sz.Batch)
	res.add("fallbacks", fb)
	res.add("rounds", sz.Rounds)
	res.add("goal_min", 10)
	res.add("met", yesNo(res.met))
	res.headline = fmt.Sprintf("%.1f×", ratio)
	res.note = fmt.Sprintf("%s vs %s events/s over HTTP (%.0f vs %.0f µs CPU each; reading the request and answering costs %.0f, so no shard path can beat %.1f× here); %d event(s) per request, %d callers; primary includes its final flush",
		fmtNum(p), fmtNum(o), cpuMicros(res2[0]), cpuMicros(res2[1]), cpuMicros(res2[2]), cpuMicros(res2[1])/cpuMicros(res2[2]), sz.Batch, sz.Workers)
	return res, nil
}
