package host_test

import (
	"context"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
)

// TestGuestMemoryStaysFlat proves the SDK lets a Go guest's garbage
// collector finish: linear memory after many calls stays at the plateau
// reached after the first few thousand (a Go guest that never yields grows
// without bound).
func TestGuestMemoryStaysFlat(t *testing.T) {
	f := startMemory(t, onlyPlugin(t, "G", "host/testdata/plugins/garbage"))
	ns, _ := f.h.Namespace("G")
	call := func(n int) {
		for i := 0; i < n; i++ {
			if _, err := ns.Fetch(context.Background(), "mem", &abi.Request{Method: "GET", Path: "/"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	mem := func() uint64 {
		for _, s := range ns.Stats() {
			if s.Shard == "mem" {
				return s.MemoryBytes
			}
		}
		return 0
	}
	call(2000)
	plateau := mem()
	call(20000) // ~400 MiB of small objects in total: only a working GC keeps this flat
	after := mem()
	t.Logf("guest memory after 2k calls: %d KiB, after 22k: %d KiB", plateau>>10, after>>10)
	if after > plateau+8<<20 {
		t.Fatalf("guest memory grew from %d to %d bytes", plateau, after)
	}
}
