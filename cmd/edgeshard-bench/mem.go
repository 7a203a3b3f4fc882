package main

import (
	"context"
	"fmt"
	"strconv"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
)

// memPerShard: the resident memory one live shard costs — start MemN
// per-name counter objects (each a wasm instance with its storage handle)
// and divide the growth of the process's VmRSS by MemN — and whether a
// guest's linear memory stays flat: Namespace.Stats MemoryBytes of one
// object after MemLow calls and after MemHigh.
func (r *runner) memPerShard(w *scratch) (*result, error) {
	sz := r.sz
	ns, err := r.counterHost(w, "test")
	if err != nil {
		return nil, err
	}
	// One object first, so one-time costs (compiled code mapped, storage
	// caches, the committer) are in the baseline.
	if err := callN(ns, func(int) string { return "baseline" }, 1, 1); err != nil {
		return nil, err
	}
	before, err := rssBytes()
	if err != nil {
		return nil, err
	}
	if err := callN(ns, func(i int) string { return "m" + strconv.Itoa(i) }, sz.MemN, 4); err != nil {
		return nil, err
	}
	after, err := rssBytes()
	if err != nil {
		return nil, err
	}
	live := 0
	for _, s := range ns.Stats() {
		if s.Live {
			live++
		}
	}
	if live != sz.MemN+1 {
		return nil, fmt.Errorf("%d live instances, want %d", live, sz.MemN+1)
	}
	perShard := float64(int64(after)-int64(before)) / float64(sz.MemN) / (1 << 20)
	r.logf("mem_per_shard: RSS %d MiB -> %d MiB for %d instances: %.2f MiB each", before>>20, after>>20, sz.MemN, perShard)

	guestMem := func() uint64 {
		st, _ := ns.ShardStat("flat")
		return st.MemoryBytes
	}
	if err := callN(ns, func(int) string { return "flat" }, sz.MemLow, sz.Workers); err != nil {
		return nil, err
	}
	low := guestMem()
	if err := callN(ns, func(int) string { return "flat" }, sz.MemHigh-sz.MemLow, sz.Workers); err != nil {
		return nil, err
	}
	high := guestMem()
	// Flat: no more than 1 MiB above the reading after MemLow calls (the
	// Go guest's heap settles in steps of its page allocator, then stays).
	flat := high <= low+1<<20
	growth := float64(high) / float64(max(low, 1))
	r.logf("mem_per_shard: guest memory %d KiB after %d calls, %d KiB after %d", low>>10, sz.MemLow, high>>10, sz.MemHigh)
	res := &result{name: "mem_per_shard", met: perShard <= 4 && flat}
	res.add("rss_mib_per_shard", perShard)
	res.add("shards", sz.MemN)
	res.add("guest_kib_low", low>>10)
	res.add("guest_kib_high", high>>10)
	res.add("calls_low", sz.MemLow)
	res.add("calls_high", sz.MemHigh)
	res.add("guest_growth", growth)
	res.add("guest_flat", yesNo(flat))
	res.add("goal_max_mib", 4)
	res.add("met", yesNo(res.met))
	res.headline = fmt.Sprintf("%.2f MiB/shard; guest %d→%d KiB", perShard, low>>10, high>>10)
	res.note = fmt.Sprintf("VmRSS growth over %d live counter objects; guest linear memory after %d vs %d calls", sz.MemN, sz.MemLow, sz.MemHigh)
	return res, nil
}

// callN sends n POST /increment calls, the i-th to object name(i), from
// par concurrent callers.
func callN(ns *host.Namespace, name func(i int) string, n, par int) error {
	return parallel(par, n, func(i int) error {
		resp, err := ns.Fetch(context.Background(), name(i), &abi.Request{Method: "POST", Path: "/increment"})
		if err == nil && resp.Status != 200 {
			err = fmt.Errorf("status %d: %s", resp.Status, resp.Body)
		}
		return err
	})
}
