package main

import (
	"context"
	"fmt"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/benchkit"
	"github.com/edgeshard/edgeshard/internal/loadgen"
)

// counterHost starts a host with COUNTER, the counter example
// (examples/counter, stamped with version), one object per name, in w's
// directory host; it closes when the figure ends.
func (r *runner) counterHost(w *scratch, version string) (*host.Namespace, error) {
	return r.counterHostIn(w, "host", version, 0)
}

// counterHostIn is counterHost in w's directory name, with FetchBatch
// batch (0: the default; 1: every request on its own).
func (r *runner) counterHostIn(w *scratch, name, version string, batch int) (*host.Namespace, error) {
	mod, err := r.build.wasm("examples/counter", "-X main.version="+version)
	if err != nil {
		return nil, err
	}
	cfg := r.hostConfig(w.path(name), w.logs)
	cfg.Bindings = []host.Binding{{Name: "COUNTER", Module: mod}}
	cfg.FetchBatch = batch
	h, err := r.newHost(context.Background(), w, cfg)
	if err != nil {
		return nil, err
	}
	ns, _ := h.Namespace("COUNTER")
	return ns, nil
}

// incrementOp calls POST /increment on the COUNTER object name.
func incrementOp(ns *host.Namespace, name func(w, i int) string) loadgen.Op {
	return func(ctx context.Context, w, i int) error {
		resp, err := ns.Fetch(ctx, name(w, i), &abi.Request{Method: "POST", Path: "/increment"})
		if err != nil {
			return err
		}
		if resp.Status != 200 {
			return fmt.Errorf("status %d: %s", resp.Status, resp.Body)
		}
		return nil
	}
}

// shardEvents: events/s ONE shard serves — the counter example's
// POST /increment (a Get and a confirmed Put: every response waits for
// fsync through group commit) from Hot concurrent in-process callers
// (Namespace.Fetch). Durable Objects document a soft limit of 1,000
// requests/s per object; the goal is 100× that.
func (r *runner) shardEvents(w *scratch) (*result, error) {
	sz := r.sz
	ns, err := r.counterHost(w, "test")
	if err != nil {
		return nil, err
	}
	ns1, err := r.counterHostIn(w, "one-by-one", "test", 1)
	if err != nil {
		return nil, err
	}
	hot := func(int, int) string { return "hot" }
	op, op1 := incrementOp(ns, hot), incrementOp(ns1, hot)
	measure := func(d time.Duration, op loadgen.Op) (sample, error) {
		l, err := checkedLoop(sz.Hot, d, op, "events")
		if err != nil {
			return sample{}, err
		}
		return sample{rate: l.rate(0), cpu: l.cpuPerOp(), p99: l.Stats.P99}, nil
	}
	for _, o := range []loadgen.Op{op, op1} {
		if _, err := measure(sz.Warmup, o); err != nil {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
	}
	out, err := r.compare("shard_events_per_s", sz.Rounds,
		side{"batched", func() (sample, error) { return measure(sz.Side, op) }},
		side{"1by1", func() (sample, error) { return measure(sz.Side, op1) }})
	if err != nil {
		return nil, err
	}
	if n := len(ns.Stats()); n != 1 {
		return nil, fmt.Errorf("expected one live shard, have %d", n)
	}
	rs := rates(out[0])
	m := benchkit.Median(rs)
	res := &result{name: "shard_events_per_s"}
	res.add("events_per_s", m)
	res.add("vs_do_limit", m/1000)
	res.add("p99_ms", p99Millis(out[0]))
	res.add("cpu_us", cpuMicros(out[0]))
	res.add("one_by_one_per_s", benchkit.Median(rates(out[1])))
	res.add("one_by_one_p99_ms", p99Millis(out[1]))
	res.add("one_by_one_cpu_us", cpuMicros(out[1]))
	res.add("spread", benchkit.Spread(rs))
	res.add("callers", sz.Hot)
	res.verdict(sz.Rounds, 100_000, true, m)
	res.headline = fmt.Sprintf("%s/s (%.0f× DO's 1,000/s)", benchkit.FormatNum(m), m/1000)
	res.note = fmt.Sprintf("counter example POST /increment, durable (fsync'd group commit), %d in-process callers on one object; p99 %.1f ms, %.1f µs CPU each; delivered one by one (fetch_batch = 1) %s/s, p99 %.1f ms, %.1f µs", sz.Hot,
		p99Millis(out[0]), cpuMicros(out[0]), benchkit.FormatNum(benchkit.Median(rates(out[1]))), p99Millis(out[1]), cpuMicros(out[1]))
	return res, nil
}
