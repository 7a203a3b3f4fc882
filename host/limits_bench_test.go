package host_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/rs/zerolog"
)

// noLimits turns every limit off: no budgets charged, no quota counted.
var noLimits = host.Limits{EventWriteBytes: -1, EventWriteKeys: -1, EventLogLines: -1, EventLogBytes: -1,
	StorageQuotaBytes: -1, AlarmRearmInterval: -1}

// BenchmarkGuestLimits measures what the limits cost an event: the same
// events with the default limits ("on": budgets charged, the storage
// quota counted) and with every limit off. Shard storage is Badger without
// fsync, so the figures are the host's CPU, not the disk's. Correctness:
// the limit tests in guestlimits_test.go.
//
//	go test ./host -run '^$' -bench GuestLimits -count 6
func BenchmarkGuestLimits(b *testing.B) {
	type side struct {
		name string
		h    *host.Host
	}
	var sides []side
	for _, mode := range []struct {
		name   string
		limits host.Limits
	}{{"on", host.Limits{}}, {"off", noLimits}} {
		cfg := host.DefaultConfig()
		cfg.DataDir = b.TempDir()
		cfg.SyncWrites = false
		cfg.CacheDir = testutil.CacheDir()
		cfg.Engine = testutil.Engine(b)
		cfg.Logger = zerolog.Nop()
		cfg.Limits = mode.limits
		cfg.Bindings = []host.Binding{
			{Name: "COUNTER", Module: testutil.Plugin(b, "examples/counter", "-X main.version=test")},
			{Name: "HOG", Module: testutil.Plugin(b, "host/testdata/hostile/hog")},
		}
		h, err := host.New(context.Background(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { h.Close(context.Background()) })
		sides = append(sides, side{mode.name, h})
	}
	fetch := func(b *testing.B, h *host.Host, binding, key, path string) {
		resp, err := h.Fetch(context.Background(), binding, key, &abi.Request{Method: "POST", Path: path})
		if err != nil || resp.Status != 200 {
			b.Fatalf("%s %s: %v %v", binding, path, resp, err)
		}
	}
	for _, bc := range []struct {
		name string
		run  func(b *testing.B, h *host.Host, i int)
	}{
		// The counter example: one get and one put of a small value.
		{"increment", func(b *testing.B, h *host.Host, i int) { fetch(b, h, "COUNTER", "c", "/increment") }},
		// 100 blind puts of 100 bytes over the same keys.
		{"overwrite-100", func(b *testing.B, h *host.Host, i int) { fetch(b, h, "HOG", "o", "/fill?prefix=k&n=100&size=100") }},
		// 100 puts of 100 bytes of keys never written.
		{"new-100", func(b *testing.B, h *host.Host, i int) {
			fetch(b, h, "HOG", "n", "/fill?prefix=p"+strconv.Itoa(i)+"-&n=100&size=100")
		}},
	} {
		for _, sd := range sides { // on and off alternate, case by case
			b.Run(bc.name+"/"+sd.name, func(b *testing.B) {
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					bc.run(b, sd.h, i)
					i++
				}
			})
		}
	}
}
