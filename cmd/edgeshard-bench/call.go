package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/benchkit"
	"github.com/edgeshard/edgeshard/internal/loadgen"
)

// shardCall: what a shard-to-shard call costs. Two sides, alternating,
// Workers concurrent in-process callers, each on its own keys:
//
//   - direct: Namespace.Fetch to B/<w> — the outbound test plugin's
//     /chain end: a storage Get and a confirmed Put (fsync'd group commit);
//   - call: Namespace.Fetch to A/<w>, whose event calls B/<w> with
//     shard_call and answers with B's response: the same work on B, plus
//     A's event and the call.
//
// The headline is the call side's rate over the direct side's; the CPU per
// operation of each side gives what one call adds.
func (r *runner) shardCall(w *scratch) (*result, error) {
	sz := r.sz
	mod, err := r.build.wasm("host/testdata/plugins/outbound")
	if err != nil {
		return nil, err
	}
	cfg := r.hostConfig(w.path("host"), w.logs)
	// The plugin also fetches (not measured here): its bindings need the grant.
	fetch := &host.FetchConfig{Hosts: []string{"api.example.com"}}
	cfg.Bindings = []host.Binding{{Name: "A", Module: mod, Calls: []string{"B"}, Fetch: fetch}, {Name: "B", Module: mod, Calls: []string{"A"}, Fetch: fetch}}
	h, err := r.newHost(context.Background(), w, cfg)
	if err != nil {
		return nil, err
	}
	nsA, _ := h.Namespace("A")
	nsB, _ := h.Namespace("B")
	op := func(ns *host.Namespace, path func(w int) string, want string) loadgen.Op {
		return func(ctx context.Context, w, _ int) error {
			resp, err := ns.Fetch(ctx, strconv.Itoa(w), &abi.Request{Method: "GET", Path: path(w)})
			if err != nil {
				return err
			}
			if resp.Status != 200 || !strings.Contains(string(resp.Body), want) {
				return fmt.Errorf("status %d: %s", resp.Status, resp.Body)
			}
			return nil
		}
	}
	sides := []struct {
		name string
		op   loadgen.Op
	}{
		{"direct", op(nsB, func(int) string { return "/chain" }, " end caller= ")},
		{"call", op(nsA, func(w int) string { return "/chain?hop=B%2F" + strconv.Itoa(w) }, "-> [200] B/")},
	}
	measure := func(i int, d time.Duration) (load, error) {
		return checkedLoop(sz.Workers, d, sides[i].op, sides[i].name+" requests")
	}
	for i := range sides {
		if _, err := measure(i, sz.Warmup); err != nil {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
	}
	var ratios, cpuAdded, rates [2][]float64
	for round := 0; round < sz.Rounds; round++ {
		var ls [2]load
		for i := range sides {
			if ls[i], err = measure(i, sz.Side); err != nil {
				return nil, err
			}
			rates[i] = append(rates[i], ls[i].rate(0))
		}
		ratios[0] = append(ratios[0], ls[1].rate(0)/ls[0].rate(0))
		cpuAdded[0] = append(cpuAdded[0], float64(ls[1].cpuPerOp()-ls[0].cpuPerOp())/float64(time.Microsecond))
		ratios[1] = append(ratios[1], float64(ls[1].Stats.P50)/float64(ls[0].Stats.P50))
		r.logf("shard_call round %d: direct %.0f/s (p50 %v, cpu/op %v), call %.0f/s (p50 %v, cpu/op %v)", round+1,
			ls[0].rate(0), ls[0].Stats.P50, ls[0].cpuPerOp(), ls[1].rate(0), ls[1].Stats.P50, ls[1].cpuPerOp())
	}
	ratio := benchkit.Median(ratios[0])
	added := benchkit.Median(cpuAdded[0])
	res := &result{name: "shard_call"}
	res.add("call_vs_direct", ratio)
	res.add("direct_per_s", benchkit.Median(rates[0]))
	res.add("call_per_s", benchkit.Median(rates[1]))
	res.add("p50_ratio", benchkit.Median(ratios[1]))
	res.add("cpu_added_us", added)
	res.add("spread", benchkit.Spread(ratios[0]))
	res.add("callers", sz.Workers)
	res.verdict(sz.Rounds, 0.5, true, ratio)
	res.headline = fmt.Sprintf("%.2f (a call adds %.0f µs CPU)", ratio, added)
	res.note = fmt.Sprintf("A's event calls B (shard_call) vs the same request to B directly: a storage Get and a confirmed Put on B, %d in-process callers on their own keys", sz.Workers)
	return res, nil
}
