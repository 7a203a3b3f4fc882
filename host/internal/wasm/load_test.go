package wasm

import (
	"context"
	"sync"
	"testing"

	"github.com/edgeshard/edgeshard/host/internal/wasm/wasmtest"
)

// TestConcurrentLoadsOfOneModule: bindings that use the same module load
// it at the same time when a host starts. From a warm compilation cache
// wazero 1.12 publishes the compiled module to its other callers before
// it has finished preparing it (its entry preambles), and an instance
// made from it then panics; so Load compiles one module's bytes once at a
// time, and every caller gets that one Module. Eight loads at once, from a
// cache another engine filled, all instantiate.
func TestConcurrentLoadsOfOneModule(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	bin := wasmtest.Plugin().Bytes()
	first := newTestEngine(t, Config{CacheDir: dir})
	m, err := first.Load(ctx, bin, nil)
	if err != nil {
		t.Fatal(err)
	}
	m.Close(ctx)
	for round := range 20 {
		eng := newTestEngine(t, Config{CacheDir: dir}) // a warm start
		mods := make([]*Module, 8)
		var wg sync.WaitGroup
		for i := range mods {
			wg.Go(func() {
				m, err := eng.Load(ctx, bin, nil)
				if err != nil {
					t.Error(err)
					return
				}
				mods[i] = m
				inst, err := m.Instantiate(ctx, InstanceConfig{})
				if err != nil {
					t.Error(err)
					return
				}
				inst.Close(ctx)
			})
		}
		wg.Wait()
		for _, m := range mods {
			if m != mods[0] {
				t.Fatalf("round %d: the same bytes loaded as %p and %p", round, mods[0], m)
			}
		}
		for _, m := range mods {
			m.Close(ctx)
		}
		eng.Close(ctx)
	}
}
