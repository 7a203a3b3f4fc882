package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/loadgen"
)

// counterHost starts a host with COUNTER, the counter example
// (examples/counter, stamped with version), one object per name, in dir;
// mutate, if any, edits the configuration first.
func (r *runner) counterHost(dir, version string, logs *logSink, mutate ...func(*host.Config)) (*host.Host, *host.Namespace, error) {
	mod, err := r.build.wasm("examples/counter", "-X main.version="+version)
	if err != nil {
		return nil, nil, err
	}
	cfg := r.hostConfig(dir, logs)
	cfg.Bindings = []host.Binding{{Name: "COUNTER", Module: mod}}
	for _, m := range mutate {
		m(&cfg)
	}
	h, err := host.New(context.Background(), cfg)
	if err != nil {
		return nil, nil, err
	}
	ns, _ := h.Namespace("COUNTER")
	return h, ns, nil
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
func (r *runner) shardEvents() (*result, error) {
	sz := r.sz
	dir, err := os.MkdirTemp("", "edgeshard-bench-shard-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	logs := &logSink{}
	h, ns, err := r.counterHost(filepath.Join(dir, "host"), "test", logs)
	if err != nil {
		return nil, err
	}
	defer h.Close(context.Background())
	h1, ns1, err := r.counterHost(filepath.Join(dir, "one-by-one"), "test", logs, func(c *host.Config) { c.FetchBatch = 1 })
	if err != nil {
		return nil, err
	}
	defer h1.Close(context.Background())
	hot := func(int, int) string { return "hot" }
	op, op1 := incrementOp(ns, hot), incrementOp(ns1, hot)
	measure := func(d time.Duration, op loadgen.Op) (sample, error) {
		l := closedLoop(sz.Hot, d, op)
		if l.Errors > 0 {
			return sample{}, fmt.Errorf("%d of %d events failed; first: %v", l.Errors, l.OK+l.Errors, l.FirstErr)
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
	m := median(rs)
	res := &result{name: "shard_events_per_s", met: m >= 100_000}
	res.add("events_per_s", m)
	res.add("vs_do_limit", m/1000)
	res.add("p99_ms", p99Millis(out[0]))
	res.add("cpu_us", cpuMicros(out[0]))
	res.add("one_by_one_per_s", median(rates(out[1])))
	res.add("one_by_one_p99_ms", p99Millis(out[1]))
	res.add("one_by_one_cpu_us", cpuMicros(out[1]))
	res.add("spread", spread(rs))
	res.add("callers", sz.Hot)
	res.add("rounds", sz.Rounds)
	res.add("goal_min", 100000)
	res.add("met", yesNo(res.met))
	res.headline = fmt.Sprintf("%s/s (%.0f× DO's 1,000/s)", fmtNum(m), m/1000)
	res.note = fmt.Sprintf("counter example POST /increment, durable (fsync'd group commit), %d in-process callers on one object; p99 %.1f ms, %.1f µs CPU each; delivered one by one (fetch_batch = 1) %s/s, p99 %.1f ms, %.1f µs", sz.Hot,
		p99Millis(out[0]), cpuMicros(out[0]), fmtNum(median(rates(out[1]))), p99Millis(out[1]), cpuMicros(out[1]))
	return res, nil
}
