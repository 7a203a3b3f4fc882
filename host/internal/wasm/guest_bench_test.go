package wasm

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
)

// BenchmarkGuestCheck is the cost of one rate-limit /check in the guest
// alone: Instance.Fetch (and FetchBatch, 16 at a time) of the
// RateLimitShard plugin over in-memory storage, without the actor, the
// output gate or Badger. cpu-µs/op is the process's CPU time per request
// (steadier than ns/op on a shared machine). The module is
// $EDGESHARD_GUEST, or the one the benchmark driver built
// (build/bench/wasm/plugins_ratelimit.wasm), so variants of a plugin or
// of the SDK can be compared side by side:
//
//	EDGESHARD_GUEST=/tmp/a.wasm go test -run - -bench GuestCheck -count 5 ./host/internal/wasm/
//
// EDGESHARD_GUEST_PATH (default /check) and EDGESHARD_GUEST_BODY (a
// template whose %d is the request's number, newlines written \n) send
// another POST, e.g. a runtime event to /enqueue of RuntimeEventShard.
func BenchmarkGuestCheck(b *testing.B) {
	path := os.Getenv("EDGESHARD_GUEST")
	if path == "" {
		path = filepath.Join("..", "..", "..", "build", "bench", "wasm", "plugins_ratelimit.wasm")
	}
	bin, err := os.ReadFile(path)
	if err != nil {
		b.Skipf("needs %s (go run ./cmd/edgeshard-bench -quick -only ratelimit_wasm_vs_native builds it): %v", path, err)
	}
	eng := newTestEngine(b, Config{CacheDir: os.Getenv("EDGESHARD_TEST_CACHE")})
	ctx := context.Background()
	m, err := eng.Load(ctx, bin, abi.AllGroups)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close(ctx)
	reqPath, tmpl := os.Getenv("EDGESHARD_GUEST_PATH"), os.Getenv("EDGESHARD_GUEST_BODY")
	if reqPath == "" {
		reqPath, tmpl = "/check", "user:u%d\t1000000000\t60000\n"
	}
	tmpl = strings.ReplaceAll(strings.ReplaceAll(tmpl, `\n`, "\n"), `\t`, "\t")
	bodies := make([][]byte, 1000)
	for i := range bodies {
		bodies[i] = []byte(strings.ReplaceAll(tmpl, "%d", strconv.Itoa(i)))
	}
	request := func(i int) *abi.Request {
		return &abi.Request{Method: "POST", Path: reqPath, Body: bodies[i%len(bodies)],
			Header: []abi.Header{{Name: "X-Edgeshard-Shard", Value: "RATE_LIMIT_SHARD/0"}}}
	}
	// EDGESHARD_GUEST_INSTANCES=N spreads the requests round-robin over N
	// instances, as N busy shards do (default 1).
	ninst, _ := strconv.Atoi(os.Getenv("EDGESHARD_GUEST_INSTANCES"))
	ninst = max(ninst, 1)
	for _, batch := range []int{1, 16} {
		b.Run("batch"+strconv.Itoa(batch), func(b *testing.B) {
			insts := make([]*Instance, ninst)
			envs := make([]*fakeEnv, ninst)
			for k := range insts {
				inst, err := m.Instantiate(ctx, InstanceConfig{})
				if err != nil {
					b.Fatal(err)
				}
				defer inst.Close(ctx)
				insts[k], envs[k] = inst, newFakeEnv(b)
			}
			reqs := make([]*abi.Request, batch)
			check := func(resp *abi.Response) {
				if resp.Status/100 != 2 {
					b.Fatalf("status %d: %s", resp.Status, resp.Body)
				}
			}
			i := 0
			var lat []time.Duration
			b.ReportAllocs()
			c0 := cpuTime()
			for n := 0; n < b.N; n += batch {
				inst, env := insts[(n/batch)%ninst], envs[(n/batch)%ninst]
				ectx, cancel := context.WithTimeout(EventRoot, 10*time.Second)
				if batch == 1 {
					t0 := time.Now()
					resp, err := inst.Fetch(ectx, env, request(i))
					lat = append(lat, time.Since(t0))
					if err != nil {
						b.Fatal(err)
					}
					check(resp)
					if os.Getenv("EDGESHARD_NOCOMMIT") == "" {
						env.st.Commit()
					}
				} else {
					for k := range reqs {
						reqs[k] = request(i + k)
					}
					_, err := inst.FetchBatch(ectx, env, reqs, func(k int, resp *abi.Response) context.Context {
						check(resp)
						env.st.Commit()
						return ectx
					})
					if err != nil {
						b.Fatal(err)
					}
				}
				cancel()
				i += batch
			}
			b.ReportMetric(float64(cpuTime()-c0)/float64(time.Microsecond)/float64(b.N), "cpu-µs/op")
			if len(lat) > 100 {
				slices.Sort(lat)
				b.ReportMetric(float64(lat[len(lat)*99/100])/float64(time.Microsecond), "p99-µs")
				b.ReportMetric(float64(lat[len(lat)*999/1000])/float64(time.Microsecond), "p999-µs")
				b.ReportMetric(float64(lat[len(lat)-1])/float64(time.Microsecond), "max-µs")
				b.ReportMetric(float64(lat[len(lat)/2])/float64(time.Microsecond), "p50-µs")
			}
		})
	}
}

// cpuTime is the process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
