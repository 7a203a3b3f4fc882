//go:build !wasip1

// Package watcounter is a shard written by hand in WebAssembly text
// (counter.wat); its test assembles it with wabt's wat2wasm and runs its
// suite.
package watcounter

import (
	"bytes"
	"context"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/conformance"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/harness"
	"github.com/edgeshard/edgeshard/internal/testutil"
)

// build assembles counter.wat (skipped without wat2wasm unless CI=true).
func build(t *testing.T) string { return testutil.Wat2Wasm(t, "", "counter.wat") }

// TestConformance runs the example's suite on both storage backends.
func TestConformance(t *testing.T) {
	conformance.RunEachBackend(t, build(t), "conformance.json", conformance.Options{CacheDir: testutil.CacheDir()})
}

// TestLargeRequestGrowsMemory: a request larger than the module's one page
// makes edgeshard_alloc grow the memory; the count still works.
func TestLargeRequestGrowsMemory(t *testing.T) {
	wasm := build(t)
	env := testutil.Host(t, harness.Memory(), harness.Bindings(host.Binding{Name: "WAT_COUNTER", Module: wasm}))
	body := bytes.Repeat([]byte("x"), 200<<10)
	for i, want := range []string{"1", "2"} {
		resp, err := env.Host.Fetch(context.Background(), "WAT_COUNTER", "big", &abi.Request{Method: "POST", Path: "/", Body: body})
		if err != nil || resp.Status != 200 || string(resp.Body) != want {
			t.Fatalf("POST %d with a %d-byte body: %v %v, want %s", i+1, len(body), resp, err, want)
		}
	}
}
