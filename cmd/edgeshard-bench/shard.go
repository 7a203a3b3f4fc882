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
	mod, err := r.build.wasm("examples/counter", "-X main.version="+version)
	if err != nil {
		return nil, err
	}
	cfg := r.hostConfig(w.path("host"), w.logs)
	cfg.Bindings = []host.Binding{{Name: "COUNTER", Module: mod}}
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
	op := incrementOp(ns, func(int, int) string { return "hot" })
	measure := func(d time.Duration) (load, error) { return checkedLoop(sz.Hot, d, op, "events") }
	if _, err := measure(sz.Warmup); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	var rates, p99s []float64
	for i := 0; i < sz.Rounds; i++ {
		l, err := measure(sz.Side)
		if err != nil {
			return nil, err
		}
		rates = append(rates, l.rate(0))
		p99s = append(p99s, float64(l.Stats.P99)/float64(time.Millisecond))
		r.logf("shard_events_per_s round %d: %.0f/s (p99 %v)", i+1, l.rate(0), l.Stats.P99)
	}
	if n := len(ns.Stats()); n != 1 {
		return nil, fmt.Errorf("expected one live shard, have %d", n)
	}
	m := benchkit.Median(rates)
	res := &result{name: "shard_events_per_s", met: m >= 100_000}
	res.add("events_per_s", m)
	res.add("vs_do_limit", m/1000)
	res.add("p99_ms", benchkit.Median(p99s))
	res.add("spread", benchkit.Spread(rates))
	res.add("callers", sz.Hot)
	res.add("rounds", sz.Rounds)
	res.add("goal_min", 100000)
	res.add("met", yesNo(res.met))
	res.headline = fmt.Sprintf("%s/s (%.0f× DO's 1,000/s)", benchkit.FormatNum(m), m/1000)
	res.note = fmt.Sprintf("counter example POST /increment, durable (fsync'd group commit), %d in-process callers on one object", sz.Hot)
	return res, nil
}
