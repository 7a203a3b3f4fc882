package scratch

import (
	"context"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/edgeshard/edgeshard/storage"
	"github.com/rs/zerolog"
)

func cpu() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func TestShardCost(t *testing.T) {
	cfg := host.Config{CacheDir: testutil.CacheDir(), Logger: zerolog.Nop(), IdleTimeout: time.Hour, SyncWrites: true, DataDir: t.TempDir()}
	if os.Getenv("MEM") != "" {
		cfg.Storage = storage.NewMemory()
	}
	cfg.Bindings = []host.Binding{{Name: "C", Module: testutil.Plugin(t, "examples/counter")}}
	h, err := host.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(context.Background())
	ns, _ := h.Namespace("C")
	run := func(n, par int) {
		var wg sync.WaitGroup
		for w := 0; w < par; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < n/par; i++ {
					resp, err := ns.Fetch(context.Background(), "hot", &abi.Request{Method: "POST", Path: "/increment"})
					if err != nil || resp.Status != 200 {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
	}
	run(2000, 64)
	c0, t0 := cpu(), time.Now()
	n := 100000
	run(n, 512)
	el, c := time.Since(t0), cpu()-c0
	t.Logf("%d events in %v: %.0f/s; CPU %v = %.1f µs/event", n, el, float64(n)/el.Seconds(), c, float64(c.Microseconds())/float64(n))
}
