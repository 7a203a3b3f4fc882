package edge

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/internal/eventsbody"
)

// soakDuration is how long TestSoakMemoryPlateausAndNothingLeaks measures
// after its warm-up: 9 s by default (it runs in `make test`),
// EDGESHARD_SOAK=10m for a real soak (the warm-up then takes half as long
// again: bounded caches — Badger's 32 MiB block cache, the storage engine's
// 4 MiB read cache per shard — and each Go guest's heap fill up to their
// steady size slowly at low request rates).
func soakDuration(t *testing.T) time.Duration {
	if v := os.Getenv("EDGESHARD_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("EDGESHARD_SOAK=%q: %v", v, err)
		}
		return d
	}
	return 9 * time.Second
}

// procStatus returns fields of /proc/self/status given in kB, in bytes:
// VmRSS, RssAnon (heap, stacks, malloc: what a leak grows) and RssFile
// (resident pages of mapped files — Badger maps its value log and memtable
// files, SQLite its WAL index — page cache the kernel reclaims, growing
// with the data on disk).
func procStatus(t *testing.T) map[string]uint64 {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	defer f.Close()
	out := map[string]uint64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || !strings.HasSuffix(rest, " kB") {
			continue
		}
		kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err == nil {
			out[name] = kb << 10
		}
	}
	for _, k := range []string{"VmRSS", "RssAnon", "RssFile"} {
		if _, ok := out[k]; !ok {
			t.Skipf("no %s in /proc/self/status", k)
		}
	}
	return out
}

// countingSink is an analytics sink that keeps nothing (the recorder of
// the other tests keeps every point, which would grow the test's memory).
type countingSink struct{ n atomic.Int64 }

func (c *countingSink) Write(string, abi.DataPoint) error { c.n.Add(1); return nil }

type memSample struct {
	at              time.Duration
	rss, anon, file uint64
	heap            uint64 // Go heap in use
	guest           uint64
	byBinding       string // guest MiB per binding
	goroutines      int
}

// plateau checks that the samples after warm-up do not grow: the largest
// value of the last third is at most the largest of the first third × 1.25
// plus slack.
func plateau(t *testing.T, what string, samples []memSample, get func(memSample) uint64, slack uint64, unit uint) {
	t.Helper()
	n := len(samples)
	if n < 6 {
		t.Fatalf("%s: only %d samples", what, n)
	}
	var first, last uint64
	for _, s := range samples[:n/3] {
		first = max(first, get(s))
	}
	for _, s := range samples[n-n/3:] {
		last = max(last, get(s))
	}
	u := map[uint]string{0: "", 20: " MiB"}[unit]
	t.Logf("%s: max %d%s in the first third after warm-up, %d%s in the last", what, first>>unit, u, last>>unit, u)
	if last > first+first/4+slack {
		t.Errorf("%s grew: max %d%s in the first third, %d%s in the last (allowed ×1.25 + %d%s)", what, first>>unit, u, last>>unit, u, slack>>unit, u)
	}
}

// TestSoakMemoryPlateausAndNothingLeaks drives the real plugins through
// the edge API from 64 concurrent clients (runtime events, views, runs,
// likes, proxied requests through the rate limiter) on the real clock, so
// flush alarms run throughout. The host's resident memory (VmRSS and its
// anonymous part RssAnon, which holds the Go heap, the guests' linear
// memories and SQLite; the rest is mapped files' page cache), the guests'
// linear memory (Namespace.Stats) and the goroutine count are sampled twice
// a second: after a warm-up each must plateau (the last third's maximum ≤
// the first third's × 1.25 + slack). Then every acknowledged event is in
// SQL once, and closing the host, the API and the servers leaves no
// goroutine behind (goleak).
func TestSoakMemoryPlateausAndNothingLeaks(t *testing.T) {
	if testing.Short() {
		t.Skip("soak")
	}
	leaks := goleak.IgnoreCurrent()
	dur := soakDuration(t)
	const workers = 64

	sink := &countingSink{}
	e := startReal(t, envOpts{sink: sink})
	up := newUpstream(t, "http://127.0.0.1:1")
	cfg := testConfig()
	cfg.Proxy.AllowHosts = []string{up.hostPort()}
	cfg.Proxy.UserLimit = Limit{1_000_000, time.Minute}
	cfg.Proxy.IPLimit = Limit{1_000_000, time.Minute}
	cfg.Proxy.HostLimit = Limit{1_000_000, time.Minute}
	f := newFixture(t, cfg, e.deps())
	tr := &http.Transport{MaxIdleConnsPerHost: workers}
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}

	var acked atomic.Int64 // events acknowledged
	var reqs, failures, shed atomic.Int64
	var firstErr atomic.Value
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			user := fmt.Sprintf("soak-%d", w)
			for i := 0; ctx.Err() == nil; i++ {
				var method, path, body string
				want := 202
				switch r := rng.IntN(10); {
				case r < 4:
					method, path, body = "POST", "/runtime-events", string(eventsbody.Append(nil, 5, func(b []byte, _ int) []byte {
						return fmt.Appendf(b, `{"type":"soak","capsule_id":"cap-%d","payload":{"w":%d,"i":%d,"pad":%q}}`, rng.IntN(200), w, i, strings.Repeat("p", rng.IntN(512)))
					}))
				case r < 6:
					method, path = "POST", fmt.Sprintf("/posts/soak-%d/views", rng.IntN(500))
				case r < 7:
					method, path = "POST", fmt.Sprintf("/posts/soak-%d/runs", rng.IntN(500))
				case r < 9:
					method, path, want = "PUT", fmt.Sprintf("/posts/soak-%d/like", rng.IntN(500)), 200
				default:
					method, path, want = "GET", proxyPath(up.srv.URL+"/hello"), 200
				}
				req, _ := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
				req.Header.Set("X-User-Id", user)
				resp, err := client.Do(req)
				reqs.Add(1)
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "" {
					shed.Add(1)
					continue
				}
				if resp.StatusCode != want {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%s %s: %d %s", method, path, resp.StatusCode, b))
					continue
				}
				if path == "/runtime-events" {
					var rep eventsReply
					if err := json.Unmarshal(b, &rep); err != nil || rep.Accepted != 5 {
						failures.Add(1)
						firstErr.CompareAndSwap(nil, fmt.Sprintf("events answer %s", b))
					}
					acked.Add(int64(rep.Accepted))
				}
			}
		})
	}

	var samples []memSample
	guest := func() (uint64, string) {
		var n uint64
		var by []string
		for _, ns := range e.h.Namespaces() {
			var m uint64
			for _, s := range ns.Stats() {
				m += s.MemoryBytes
			}
			n += m
			by = append(by, fmt.Sprintf("%s %d", ns.Name(), m>>20))
		}
		return n, strings.Join(by, ", ")
	}
	live := func() (n, want int) {
		for _, ns := range e.h.Namespaces() {
			want += ns.Shards()
			for _, s := range ns.Stats() {
				if s.Live {
					n++
				}
			}
		}
		return n, want
	}
	// Warm-up: until every shard of every binding runs an instance, two
	// seconds more, and at least half the measured duration.
	warmStart := time.Now()
	for n, want := live(); n < want; n, want = live() {
		if time.Since(warmStart) > time.Minute {
			t.Fatalf("only %d of %d shards live after a minute of load", n, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(max(2*time.Second, dur/2-time.Since(warmStart)))
	t.Logf("warm-up: %v (every shard live)", time.Since(warmStart).Round(time.Millisecond))
	start := time.Now()
	reqs.Store(0)
	tick := time.NewTicker(500 * time.Millisecond)
	for time.Since(start) < dur {
		<-tick.C
		runtime.GC() // count live memory rather than garbage
		st := procStatus(t)
		g, by := guest()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		samples = append(samples, memSample{at: time.Since(start), rss: st["VmRSS"], anon: st["RssAnon"], file: st["RssFile"], heap: ms.HeapInuse,
			guest: g, byBinding: by, goroutines: runtime.NumGoroutine()})
		if dir := os.Getenv("EDGESHARD_SOAK_PROFILE"); dir != "" && (len(samples) == 1 || time.Since(start) >= dur) {
			writeHeapProfile(t, filepath.Join(dir, fmt.Sprintf("heap-%03ds.pprof", int(time.Since(start).Seconds()))))
		}
	}
	tick.Stop()
	cancel()
	wg.Wait()
	total := reqs.Load()
	t.Logf("%d requests in %v after warm-up (%.0f/s) from %d clients", total, dur, float64(total)/dur.Seconds(), workers)
	// A 503 (counters_unavailable, events_unavailable) sheds load the
	// database cannot take (SQLITE_BUSY past busy_timeout on a starved
	// machine): never a 2xx for a write that is not durable, and rare.
	if n := shed.Load(); n > 0 {
		t.Logf("%d requests shed with 503; the edge logged e.g.: %s", n, firstLine(f.logs.String(), `"level":"error"`))
	}
	if n := failures.Load(); n > 0 || shed.Load() > total/100 {
		t.Fatalf("%d requests failed, %d shed (503) of %d; first: %v", n, shed.Load(), total, firstErr.Load())
	}
	for i, s := range samples {
		if i%max(1, len(samples)/8) == 0 || i == len(samples)-1 {
			t.Logf("t=%5.1fs VmRSS %4d MiB (anon %4d, file %4d; Go heap %4d), guests %4d MiB (%s), %d goroutines",
				s.at.Seconds(), s.rss>>20, s.anon>>20, s.file>>20, s.heap>>20, s.guest>>20, s.byBinding, s.goroutines)
		}
	}
	// The host's own memory is RssAnon; VmRSS adds the mapped files'
	// resident pages, which follow the data on disk (logged above).
	plateau(t, "host RSS (anonymous)", samples, func(s memSample) uint64 { return s.anon }, 16<<20, 20)
	plateau(t, "guest memory", samples, func(s memSample) uint64 { return s.guest }, 8<<20, 20)
	plateau(t, "goroutines", samples, func(s memSample) uint64 { return uint64(s.goroutines) }, 32, 0)

	// Nothing acknowledged is lost: every event reaches SQL once (ids are
	// the host's UUIDs and the table's primary key).
	want := acked.Load()
	e.settle(t, 30*time.Second, "every acknowledged event flushed", func() bool {
		return f.scalar(`SELECT COUNT(*) FROM runtime_events`) >= want
	})
	time.Sleep(time.Second)
	if n := f.scalar(`SELECT COUNT(*) FROM runtime_events`); n != want {
		t.Fatalf("%d runtime_events rows, %d events acknowledged", n, want)
	}
	if n := sink.n.Load(); n < want {
		t.Fatalf("%d analytics points for %d events", n, want)
	}

	// Closing everything leaves no goroutine behind.
	client.CloseIdleConnections()
	f.srv.Close()
	f.api.Close()
	if err := e.h.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.db.Close()
	up.srv.Close()
	goleak.VerifyNone(t, leaks)
}

// firstLine returns the first line of s containing sub.
func firstLine(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}

// writeHeapProfile writes a heap profile (EDGESHARD_SOAK_PROFILE=dir).
func writeHeapProfile(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		t.Fatal(err)
	}
	t.Logf("heap profile: %s", path)
}
