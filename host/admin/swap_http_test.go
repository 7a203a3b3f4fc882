package admin_test

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/host/admin"
	"github.com/edgeshard/edgeshard/internal/loadgen"
	"github.com/edgeshard/edgeshard/internal/testutil"
)

// TestHotSwapOverHTTPUnderLoad is the check: under a steady, bounded
// load of counter increments over loopback HTTP, push a module with a new
// version string through the admin API. No request fails, the final count
// equals the acknowledged increments, responses switch to the new version,
// and latency during the swap is logged against steady state.
func TestHotSwapOverHTTPUnderLoad(t *testing.T) {
	f := newFixture(t, admin.Options{})
	v2 := counterWasm(t, "v2")
	names := []string{"a", "b", "c", "d", "e", "f"}
	const workers = 8
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}, Timeout: time.Minute}
	defer client.CloseIdleConnections()

	var acked [6]atomic.Int64
	var swapDone atomic.Int64 // run time when the push returned; 0 before
	var oldAfterSwap, firstV2 atomic.Int64
	run := loadgen.New(loadgen.Options{Workers: workers, Interval: 2 * time.Millisecond})
	op := func(ctx context.Context, w, i int) error {
		k := (w + i) % len(names)
		start := run.Elapsed()
		r, err := testutil.Increment(ctx, client, f.edge.URL+"/do/COUNTER/"+names[k])
		if err != nil {
			return err
		}
		acked[k].Add(1)
		if r.Version == "v2" {
			firstV2.CompareAndSwap(0, int64(run.Elapsed()))
		} else if d := swapDone.Load(); d != 0 && int64(start) > d {
			oldAfterSwap.Add(1)
		}
		return nil
	}
	// Start every shard's instance first: steady state is measured warm.
	for i, k := range names {
		if _, st := f.edgeCall(t, "POST", "/do/COUNTER/"+k+"/increment"); st != 200 {
			t.Fatalf("warm-up %s: %d", k, st)
		}
		acked[i].Add(1)
	}
	run.Go(context.Background(), op)
	time.Sleep(2 * time.Second)
	swapStart := run.Elapsed()
	var res admin.SwapResult
	st, b := f.do(t, "PUT", "/admin/bindings/COUNTER/module", v2, &res)
	swapEnd := run.Elapsed()
	swapDone.Store(int64(swapEnd))
	time.Sleep(1500 * time.Millisecond)
	out := run.Stop()
	if st != 200 || !res.Changed {
		t.Fatalf("push: %d %s", st, b)
	}

	if errs := out.Errors(); len(errs) > 0 {
		t.Fatalf("%d of %d requests failed during the swap; first: %v", len(errs), len(out.Samples), errs[0].Err)
	}
	if firstV2.Load() == 0 {
		t.Fatal("no response came from the new version")
	}
	if n := oldAfterSwap.Load(); n > 0 {
		t.Fatalf("%d requests started after the push returned were served by the old version", n)
	}
	var total int64
	for i, k := range names {
		r, st := f.edgeCall(t, "GET", "/do/COUNTER/"+k+"/")
		if st != 200 || r.Version != "v2" {
			t.Fatalf("GET %s: %d %+v", k, st, r)
		}
		if int64(r.Count) != acked[i].Load() {
			t.Errorf("%s: count %d, acknowledged %d", k, r.Count, acked[i].Load())
		}
		total += acked[i].Load()
	}

	steady := out.Window(500*time.Millisecond, swapStart)
	during := out.Window(swapStart, max(swapEnd, time.Duration(firstV2.Load()))+100*time.Millisecond)
	after := out.Window(swapEnd+100*time.Millisecond, time.Hour)
	t.Logf("acknowledged increments: %d; push took %v (server: %s)", total, swapEnd-swapStart, res.Duration)
	t.Logf("steady state: %v", steady)
	t.Logf("during swap:  %v", during)
	t.Logf("after swap:   %v", after)
	if steady.P99 > 0 {
		t.Logf("p99 during swap / steady p99 = %.2f", float64(during.P99)/float64(steady.P99))
	}
}
