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
// (examples/counter, stamped with version), one object per name, in dir.
func (r *runner) counterHost(dir, version string, logs *logSink) (*host.Host, *host.Namespace, error) {
	mod, err := r.build.wasm("examples/counter", "-X main.version="+version)
	if err != nil {
		return nil, nil, err
	}
	cfg := r.hostConfig(dir, logs)
	cfg.Bindings = []host.Binding{{Name: "COUNTER", Module: mod}}
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
	op := incrementOp(ns, func(int, int) string { return "hot" })
	measure := func(d time.Duration) (load, error) {
		l := closedLoop(sz.Hot, d, op)
		if l.Errors > 0 {
			return l, fmt.Errorf("%d of %d events failed; first: %v", l.Errors, l.OK+l.Errors, l.FirstErr)
		}
		return l, nil
	}
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
	m := median(rates)
	res := &result{name: "shard_events_per_s", met: m >= 100_000}
	res.add("events_per_s", m)
	res.add("vs_do_limit", m/1000)
	res.add("p99_ms", median(p99s))
	res.add("spread", spread(rates))
	res.add("callers", sz.Hot)
	res.add("rounds", sz.Rounds)
	res.add("goal_min", 100000)
	res.add("met", yesNo(res.met))
	res.headline = fmt.Sprintf("%s/s (%.0f× DO's 1,000/s)", fmtNum(m), m/1000)
	res.note = fmt.Sprintf("counter example POST /increment, durable (fsync'd group commit), %d in-process callers on one object", sz.Hot)
	return res, nil
}
