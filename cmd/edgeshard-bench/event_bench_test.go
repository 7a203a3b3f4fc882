package main

import (
	"context"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/internal/benchkit"
	"github.com/edgeshard/edgeshard/internal/testutil"
)

// BenchmarkLimitEvent is the per-event cost of one POST /check through
// Namespace.Fetch on one shard, one caller at a time: the wasm plugin and
// the native limiter on the same host path. For profiling the hot path:
//
//	go test -run - -bench LimitEvent -benchmem -cpuprofile cpu.prof ./cmd/edgeshard-bench/
func BenchmarkLimitEvent(b *testing.B) {
	root, err := benchkit.FindRoot(".")
	if err != nil {
		b.Fatal(err)
	}
	sz := smokeSizes()
	sz.Shards = 1
	r := &runner{sz: sz, root: root, cacheDir: testutil.CacheDir(), build: &builder{root: root}}
	w, err := newScratch("limit-event")
	if err != nil {
		b.Fatal(err)
	}
	defer w.close()
	h, err := r.limitHost(w, "host", testutil.Engine(b), 0)
	if err != nil {
		b.Fatal(err)
	}
	for _, name := range []string{"RATE_LIMIT_SHARD", "RATE_LIMIT_NATIVE"} {
		b.Run(name, func(b *testing.B) {
			ns, _ := h.Namespace(name)
			gen := limitKeys(1, 1000, 1)[0]
			ctx := context.Background()
			b.ReportAllocs()
			c0 := benchkit.SelfCPU()
			for b.Loop() {
				key, body := gen()
				resp, err := ns.Fetch(ctx, key, &abi.Request{Method: "POST", Path: "/check", Body: body})
				if err != nil || resp.Status != 200 {
					b.Fatal(err, resp)
				}
			}
			b.ReportMetric(float64(benchkit.SelfCPU()-c0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/op")
		})
	}
}
