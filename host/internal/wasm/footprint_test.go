package wasm

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
)

// goGuest loads examples/counter as make plugins built it (the package
// cannot build it itself: internal/testutil imports the host).
func goGuest(tb testing.TB, eng *Engine) *Module {
	tb.Helper()
	bin, err := os.ReadFile(filepath.Join("..", "..", "..", "build", "examples", "counter.wasm"))
	if err != nil {
		tb.Skipf("needs build/examples/counter.wasm (make plugins): %v", err)
	}
	m, err := eng.Load(context.Background(), bin, abi.AllGroups)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close(context.Background()) })
	return m
}

// TestGoGuestFootprint bounds what a live instance of a Go guest costs
// outside its linear memory: the Go heap wazero keeps per instance. With
// the Go linker's ~37,000 data segments that was ~1 MiB (a slice header
// per segment); MergeData brings it to ~160 KiB.
func TestGoGuestFootprint(t *testing.T) {
	eng := newTestEngine(t, Config{CacheDir: os.Getenv("EDGESHARD_TEST_CACHE")})
	m := goGuest(t, eng)
	ctx := context.Background()
	const n = 40
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	h0 := heap()
	var mem uint64
	insts := make([]*Instance, 0, n)
	for range n {
		inst, err := m.Instantiate(ctx, InstanceConfig{})
		if err != nil {
			t.Fatal(err)
		}
		mem += inst.MemoryBytes()
		insts = append(insts, inst)
	}
	per := (heap() - h0) / n
	for _, inst := range insts {
		inst.Close(ctx)
	}
	t.Logf("per live instance: %d KiB of Go heap, %d KiB of linear memory", per>>10, mem/n>>10)
	if per > 512<<10 {
		t.Fatalf("a live instance holds %d KiB of Go heap, want under 512 KiB", per>>10)
	}
}

// BenchmarkInstantiate measures starting and closing an instance of a Go
// guest, as a shard evicted and restarted does, with released memories
// kept for reuse (pool) and without (fresh: every page faulted in anew).
func BenchmarkInstantiate(b *testing.B) {
	for _, bc := range []struct {
		name string
		pool int64
	}{{"pool", 0}, {"fresh", -1}} {
		b.Run(bc.name, func(b *testing.B) {
			eng := newTestEngine(b, Config{CacheDir: os.Getenv("EDGESHARD_TEST_CACHE"), MemoryPoolBytes: bc.pool})
			m := goGuest(b, eng)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				inst, err := m.Instantiate(ctx, InstanceConfig{})
				if err != nil {
					b.Fatal(err)
				}
				inst.Close(ctx)
			}
		})
	}
}
