package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/edgeshard/edgeshard/host/admin"
	"github.com/edgeshard/edgeshard/internal/benchkit"
	"github.com/edgeshard/edgeshard/internal/configtext"
	"github.com/edgeshard/edgeshard/internal/loadgen"
)

const adminToken = "edgeshard-bench-admin-token"

// swap: p99 latency of counter increments over loopback HTTP while the
// admin API hot-swaps the module, divided by the steady-state p99 just
// before; no request may fail. Each round pushes a new version (its own
// build, so a fresh compile) under a steady, paced load (8 workers, one
// request every 2 ms each, 6 objects), the load of
// host/admin/swap_http_test.go.
func (r *runner) swap(w *scratch) (*result, error) {
	sz := r.sz
	mod, err := r.build.wasm("examples/counter", "-X main.version=test")
	if err != nil {
		return nil, err
	}
	// The server `edgeshard serve` runs: the counter example on the main
	// listener (/do), pushes through its admin API.
	s, err := r.startServer(w, "host", configtext.Binding("COUNTER", mod, 0, "", ""))
	if err != nil {
		return nil, err
	}
	// Each round pushes a version never seen before (its own build stamped
	// with this run's id), so every push compiles, as a real deploy does.
	suffix := ""
	if sz.FreshSwap {
		suffix = "-" + strconv.FormatInt(time.Now().UnixNano()%1e12, 36)
	}
	versions := make([][]byte, sz.SwapRounds)
	for i := range versions {
		p, err := r.build.wasm("examples/counter", "-X main.version=v"+strconv.Itoa(i+2)+suffix)
		if err != nil {
			return nil, err
		}
		if versions[i], err = os.ReadFile(p); err != nil {
			return nil, err
		}
	}
	edgeURL, adminURL := "http://"+s.Addr(), "http://"+s.AdminAddr()
	const workers = 8
	client := newClient(workers)
	defer client.CloseIdleConnections()
	// A push answers once the module is compiled, at the lowest priority:
	// under the race detector on a loaded machine that takes minutes (the
	// edgeshard push CLI waits 5 too).
	pushClient := &http.Client{Timeout: 5 * time.Minute}
	names := []string{"a", "b", "c", "d", "e", "f"}
	for _, n := range names { // every object warm before steady state
		if st, b, err := callHTTP(context.Background(), client, "POST", edgeURL+"/do/COUNTER/"+n+"/increment", nil); err != nil || st != 200 {
			return nil, fmt.Errorf("warm-up %s: %d %s %v", n, st, b, err)
		}
	}
	var ratios, steadyP99, duringP99, pushMs []float64
	errorsTotal := 0
	for i := 0; i < sz.SwapRounds; i++ {
		want := "v" + strconv.Itoa(i+2) + suffix
		var firstNew atomic.Int64
		run := loadgen.New(loadgen.Options{Workers: workers, Interval: 2 * time.Millisecond})
		run.Go(context.Background(), func(ctx context.Context, w, k int) error {
			n := names[(w+k)%len(names)]
			st, b, err := callHTTP(ctx, client, "POST", edgeURL+"/do/COUNTER/"+n+"/increment", nil)
			if err != nil {
				return err
			}
			if st != 200 {
				return fmt.Errorf("status %d: %s", st, b)
			}
			var rep struct{ Version string }
			if json.Unmarshal(b, &rep) == nil && rep.Version == want {
				firstNew.CompareAndSwap(0, int64(run.Elapsed()))
			}
			return nil
		})
		time.Sleep(sz.SwapLoad)
		swapStart := run.Elapsed()
		err := push(pushClient, adminURL, versions[i])
		swapEnd := run.Elapsed()
		time.Sleep(sz.SwapTail)
		out := run.Stop()
		if err != nil {
			return nil, fmt.Errorf("round %d: push: %w", i+1, err)
		}
		if firstNew.Load() == 0 {
			return nil, fmt.Errorf("round %d: no response came from %s", i+1, want)
		}
		steady := out.Window(sz.SwapLoad/4, swapStart)
		during := out.Window(swapStart, max(swapEnd, time.Duration(firstNew.Load()))+100*time.Millisecond)
		errorsTotal += len(out.Errors())
		if errs := out.Errors(); len(errs) > 0 {
			r.logf("swap round %d: %d errors; first: %v", i+1, len(errs), errs[0].Err)
		}
		ratio := float64(during.P99) / float64(max(steady.P99, time.Microsecond))
		r.logf("swap round %d: steady %v | during %v | push %v | ratio %.2f", i+1, steady, during, (swapEnd - swapStart).Round(time.Millisecond), ratio)
		ratios = append(ratios, ratio)
		steadyP99 = append(steadyP99, float64(steady.P99)/float64(time.Millisecond))
		duringP99 = append(duringP99, float64(during.P99)/float64(time.Millisecond))
		pushMs = append(pushMs, float64(swapEnd-swapStart)/float64(time.Millisecond))
	}
	m := benchkit.Median(ratios)
	res := &result{name: "swap_p99_ratio", met: m <= 3 && errorsTotal == 0}
	res.add("ratio", m)
	res.add("max_ratio", maxOf(ratios))
	res.add("steady_p99_ms", benchkit.Median(steadyP99))
	res.add("during_p99_ms", benchkit.Median(duringP99))
	res.add("push_ms", benchkit.Median(pushMs))
	res.add("errors", errorsTotal)
	res.add("rounds", sz.SwapRounds)
	res.add("goal_max", 3)
	res.add("met", yesNo(res.met))
	res.headline = fmt.Sprintf("%.2f, %d errors", m, errorsTotal)
	res.note = fmt.Sprintf("p99 %.2f ms during vs %.2f ms steady; push (compile+prepare+switch) %.0f ms; 8 workers × 500 req/s over HTTP",
		benchkit.Median(duringP99), benchkit.Median(steadyP99), benchkit.Median(pushMs))
	return res, nil
}

// push uploads a module through the admin API and checks it was swapped.
func push(c *http.Client, adminURL string, bin []byte) error {
	req, err := http.NewRequest("PUT", adminURL+"/admin/bindings/COUNTER/module", bytes.NewReader(bin))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var res admin.SwapResult
	if resp.StatusCode != 200 || json.Unmarshal(b, &res) != nil || !res.Changed {
		return fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	return nil
}

func maxOf(xs []float64) float64 {
	m := 0.0
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}
