package loadgen

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	var lat []time.Duration
	for i := 1; i <= 100; i++ {
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0, time.Millisecond}, {0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {1, 100 * time.Millisecond}} {
		if got := Percentile(lat, c.q); got != c.want {
			t.Errorf("Percentile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if Percentile(nil, 0.5) != 0 {
		t.Error("Percentile of nothing should be 0")
	}
}

func TestRunRecordsEveryRequestAndBoundsConcurrency(t *testing.T) {
	var inflight, peak, calls atomic.Int64
	boom := errors.New("boom")
	run := Start(context.Background(), Options{Workers: 3}, func(ctx context.Context, w, i int) error {
		n := inflight.Add(1)
		defer inflight.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		calls.Add(1)
		time.Sleep(time.Millisecond)
		if i%10 == 9 {
			return boom
		}
		return nil
	})
	time.Sleep(100 * time.Millisecond)
	mid := run.Elapsed()
	time.Sleep(50 * time.Millisecond)
	res := run.Stop()
	if p := peak.Load(); p > 3 {
		t.Fatalf("%d requests in flight, want ≤ 3", p)
	}
	all := res.All()
	if int64(all.Requests) != calls.Load() {
		t.Fatalf("recorded %d requests, made %d", all.Requests, calls.Load())
	}
	if all.Errors != len(res.Errors()) || all.Errors == 0 {
		t.Fatalf("errors = %d (Errors() %d), want > 0 and equal", all.Errors, len(res.Errors()))
	}
	a, b := res.Window(0, mid), res.Window(mid, time.Hour)
	if a.Requests+b.Requests != all.Requests {
		t.Fatalf("windows split %d+%d requests, want %d", a.Requests, b.Requests, all.Requests)
	}
	if all.P50 < time.Millisecond || all.P99 < all.P50 || all.Max < all.P99 {
		t.Fatalf("implausible stats %v", all)
	}
	t.Log(all)
}

func TestIntervalPacesWorkers(t *testing.T) {
	var calls atomic.Int64
	run := Start(context.Background(), Options{Workers: 2, Interval: 20 * time.Millisecond}, func(context.Context, int, int) error {
		calls.Add(1)
		return nil
	})
	time.Sleep(200 * time.Millisecond)
	run.Stop()
	// 2 workers × (200 ms / 20 ms + 1) at most.
	if n := calls.Load(); n > 22 || n < 4 {
		t.Fatalf("%d requests in 200 ms at 2×50/s", n)
	}
}
