package host_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/host/internal/wasm/wasmtest"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/edgeshard/edgeshard/storage"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"
)

// countingPlugin returns a plugin written in wasm by hand that keeps a
// counter, as examples/counter does, but starts in microseconds rather
// than milliseconds, so that a test can start tens of thousands of
// instances. Every fetch adds 1 to the little-endian i64 under key "n"
// and answers it as an 8-byte body. Its memory is pages × 64 KiB, all of
// which _initialize writes, so that each live instance holds that much
// resident memory, as a Go guest holds the ~2–3 MiB its runtime touches.
func countingPlugin(pages uint32) []byte {
	const (
		key  = 0x200 // "n"
		resp = 0x300 // status 200, no headers, an 8-byte body: the count
		val  = resp + 12
	)
	m := residentPlugin(pages)
	get := m.AddImport(wasmtest.HostImport(abi.FnStorageGet))
	put := m.AddImport(wasmtest.HostImport(abi.FnStoragePut))
	m.Data = append(m.Data,
		wasmtest.Data{Offset: key, Bytes: []byte("n")},
		wasmtest.Data{Offset: resp, Bytes: wasmtest.EncodeResponse(200, 0, make([]byte, 8))[:12]},
	)
	const (
		i64Load  = 0x29
		i64Store = 0x37
		i64Eq    = 0x51
		i64Ne    = 0x52
		i64Add   = 0x7c
	)
	m.SetExport(abi.ExportFetch, wasmtest.Func{
		Params: []wasmtest.ValType{wasmtest.I32, wasmtest.I32}, Results: []wasmtest.ValType{wasmtest.I64},
		Locals: []wasmtest.ValType{wasmtest.I64},
		Body: wasmtest.Code(
			wasmtest.I32Const(key), wasmtest.I32Const(1), wasmtest.I32Const(val), wasmtest.I32Const(8),
			wasmtest.Call(get), []byte{0x22, 0x02}, // local.tee 2
			wasmtest.I64Const(-1), []byte{i64Eq},
			wasmtest.If(wasmtest.I32Const(val), wasmtest.I64Const(0), wasmtest.Mem(i64Store, 0)), // absent: 0
			wasmtest.LocalGet(2), wasmtest.I64Const(-1), []byte{i64Ne},
			wasmtest.LocalGet(2), wasmtest.I64Const(8), []byte{i64Ne},
			wasmtest.Op(0x71), // i32.and: neither absent nor 8 bytes
			wasmtest.If(wasmtest.Op(wasmtest.OpUnreachable)),
			wasmtest.I32Const(val),
			wasmtest.I32Const(val), wasmtest.Mem(i64Load, 0), wasmtest.I64Const(1), []byte{i64Add},
			wasmtest.Mem(i64Store, 0),
			wasmtest.I32Const(key), wasmtest.I32Const(1), wasmtest.I32Const(val), wasmtest.I32Const(8), wasmtest.I32Const(0),
			wasmtest.Call(put),
			wasmtest.If(wasmtest.Op(wasmtest.OpUnreachable)), // a storage error traps
			wasmtest.I64Const(wasmtest.Packed(resp, 20)),
		),
	})
	return m.Bytes()
}

// residentPlugin is wasmtest.Plugin with pages × 64 KiB of memory, all
// of which _initialize writes: each live instance holds that much.
func residentPlugin(pages uint32) *wasmtest.Module {
	m := wasmtest.Plugin()
	m.Memory = &wasmtest.Limits{Min: pages, Max: -1}
	m.SetExport("_initialize", wasmtest.Func{Body: wasmtest.Code(
		// memory.fill(0x1000, 1, pages*64Ki - 0x1000)
		wasmtest.I32Const(0x1000), wasmtest.I32Const(1), wasmtest.I32Const(int32(pages)<<16-0x1000),
		[]byte{0xfc, 11, 0},
	)})
	return m
}

// spinningPlugin is residentPlugin whose fetch loops until the host stops
// it at the event deadline: an instance that stays busy.
func spinningPlugin(pages uint32) []byte {
	m := residentPlugin(pages)
	m.SetExport(abi.ExportFetch, wasmtest.Func{
		Params: []wasmtest.ValType{wasmtest.I32, wasmtest.I32}, Results: []wasmtest.ValType{wasmtest.I64},
		Body: wasmtest.Forever(),
	})
	return m.Bytes()
}

// startQuiet starts a host that logs warnings and errors only: the tests
// here start tens of thousands of instances, a debug line each.
func startQuiet(t *testing.T, cfg host.Config) (*host.Host, *testutil.LogBuffer) {
	t.Helper()
	logs := &testutil.LogBuffer{}
	cfg.Logger = zerolog.New(logs).Level(zerolog.WarnLevel)
	h, err := host.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("host.New: %v", err)
	}
	t.Cleanup(func() { h.Close(context.Background()) })
	return h, logs
}

// vmRSS returns the process's resident memory (VmRSS), or 0 off Linux.
func vmRSS(t *testing.T) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// counterOf decodes countingPlugin's answer.
func counterOf(t *testing.T, resp *abi.Response) uint64 {
	t.Helper()
	if resp.Status != 200 || len(resp.Body) != 8 {
		t.Fatalf("answer %d %q", resp.Status, resp.Body)
	}
	return binary.LittleEndian.Uint64(resp.Body)
}

// metricValue sums the samples of a metric whose labels include want.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue next
				}
			}
			sum += value(m)
		}
	}
	return sum
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return 0
}

// liveInstances returns how many shards of ns have a live instance.
func liveInstances(ns *host.Namespace) int {
	n := 0
	for _, s := range ns.Stats() {
		if s.Live {
			n++
		}
	}
	return n
}

// TestMemoryBudgetManyObjects is the "one object per user" load that
// used to end with the kernel killing the host: 20,000 distinct objects
// of a per-name namespace, each incremented once, under a 64 MiB budget.
// Instances of 3 MiB (+ overhead) each, so about 19 fit: the least
// recently used idle ones are evicted as new ones start. Resident memory
// stays within the budget plus a fixed overhead, no request fails, and
// every increment is in storage.
func TestMemoryBudgetManyObjects(t *testing.T) {
	const (
		objects   = 20000
		clients   = 4
		budgetMiB = 64
		pages     = 48 // 3 MiB
	)
	// What RSS may exceed the budget by, however many objects are touched:
	// the Go heap (the in-memory storage of 20,000 objects, the churn of
	// instance starts, at twice the live heap by GOGC) and the pool of
	// released memories (16 MiB). Measured: ~30 MiB over the budget. The
	// race detector adds a shadow of the heap and state per goroutine
	// started, which grows with the actors started: ~110 MiB more here.
	fixedOverheadMiB := uint64(64)
	if raceEnabled {
		fixedOverheadMiB = 192
	}
	reg := prometheus.NewRegistry()
	backend := storage.NewMemory()
	h, _ := startQuiet(t, counterConfig(t, func(c *host.Config) {
		c.Storage = backend
		c.Registerer = reg
		c.InstanceMemoryBudgetMiB = budgetMiB
		c.Bindings = []host.Binding{{Name: "U", ModuleBytes: countingPlugin(pages)}}
	}))
	ns, _ := h.Namespace("U")
	ctx := context.Background()
	rss0 := vmRSS(t) // the host with its module compiled, no instance yet
	inc := func(name string) (uint64, error) {
		resp, err := ns.Fetch(ctx, name, &abi.Request{Method: "POST", Path: "/"})
		if err != nil {
			return 0, err
		}
		if resp.Status != 200 || len(resp.Body) != 8 {
			return 0, fmt.Errorf("answer %d %q", resp.Status, resp.Body)
		}
		return binary.LittleEndian.Uint64(resp.Body), nil
	}
	// Warm up to a full budget, then take the baseline: the host, its
	// compiled module, the Go heap of a steady churn.
	for i := range 40 {
		if _, err := inc(fmt.Sprintf("warm-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	base := vmRSS(t)

	var (
		next    atomic.Int64
		peakRSS atomic.Uint64
		peakN   atomic.Int64
		wg      sync.WaitGroup
		errs    = make(chan error, clients)
	)
	t0 := time.Now()
	for range clients {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= objects {
					return
				}
				n, err := inc("user-" + strconv.FormatInt(i, 10))
				if err == nil && n != 1 {
					err = fmt.Errorf("user-%d: count %d after its first increment", i, n)
				}
				if err != nil {
					errs <- fmt.Errorf("user-%d: %w", i, err)
					return
				}
				if i%200 == 0 {
					rss := vmRSS(t)
					for p := peakRSS.Load(); rss > p && !peakRSS.CompareAndSwap(p, rss); p = peakRSS.Load() {
					}
					live := int64(liveInstances(ns))
					for p := peakN.Load(); live > p && !peakN.CompareAndSwap(p, live); p = peakN.Load() {
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	took := time.Since(t0)

	// Every increment is in storage, each object's exactly once.
	for i := range objects {
		name := "user-" + strconv.Itoa(i)
		v, ok, err := backend.Get(storage.ShardID{Namespace: "U", Name: name}, "n")
		if err != nil || !ok || len(v) != 8 || binary.LittleEndian.Uint64(v) != 1 {
			t.Fatalf("%s: stored %x %v %v, want 1", name, v, ok, err)
		}
	}
	// A sample read back through new instances: state comes from storage.
	for i := 0; i < objects; i += objects / 200 {
		if n, err := inc("user-" + strconv.Itoa(i)); err != nil || n != 2 {
			t.Fatalf("user-%d: second increment gave %d, %v; want 2", i, n, err)
		}
	}

	evicted := metricValue(t, reg, "edgeshard_instance_evictions_total", map[string]string{"reason": "budget"})
	charged := metricValue(t, reg, "edgeshard_instance_memory_charged_bytes", nil)
	perInstance := uint64(pages)<<16 + 256<<10
	t.Logf("%d objects in %v (%v each, %d clients); live instances at most %d; RSS %d MiB before any instance, %d MiB with the budget full, peak %d MiB (budget %d MiB); %v budget evictions; %d MiB charged at the end",
		objects, took.Round(time.Millisecond), took/objects, clients, peakN.Load(), rss0>>20, base>>20, peakRSS.Load()>>20, budgetMiB, evicted, uint64(charged)>>20)
	if max := int64(budgetMiB<<20/perInstance) + 1; peakN.Load() > max {
		t.Errorf("%d live instances at once, the budget holds %d", peakN.Load(), max)
	}
	if evicted < objects-budgetMiB {
		t.Errorf("%v instances evicted for the budget, want at least %d", evicted, objects-budgetMiB)
	}
	if charged > budgetMiB<<20 {
		t.Errorf("%v bytes charged, over the budget", charged)
	}
	// RSS: at most the budget above the host without instances, plus a
	// fixed overhead — the Go heap's churn (and the race detector's shadow
	// of it), the pool of released memories (16 MiB) — however many
	// objects were touched.
	if rss0 > 0 && peakRSS.Load() > rss0+(budgetMiB+fixedOverheadMiB)<<20 {
		t.Errorf("peak RSS %d MiB: more than the budget (%d MiB) and %d MiB above the %d MiB of the host without instances",
			peakRSS.Load()>>20, budgetMiB, fixedOverheadMiB, rss0>>20)
	}
}

// budgetHost starts a host with the counting plugin as binding U and the
// spinning one as S, both of 48 pages (3 MiB, charged 3.25 MiB), under
// a budget of budgetMiB.
func budgetHost(t *testing.T, budgetMiB int, mutate func(*host.Config)) (*host.Host, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	h, _ := startQuiet(t, memoryConfig(t, func(c *host.Config) {
		c.Registerer = reg
		c.InstanceMemoryBudgetMiB = budgetMiB
		c.Bindings = []host.Binding{
			{Name: "U", ModuleBytes: countingPlugin(48)},
			{Name: "S", ModuleBytes: spinningPlugin(48)},
		}
		if mutate != nil {
			mutate(c)
		}
	}))
	return h, reg
}

// liveSet returns the shards of a binding with a live instance, sorted.
func liveSet(h *host.Host, binding string) string {
	ns, _ := h.Namespace(binding)
	var live []string
	for _, s := range ns.Stats() {
		if s.Live {
			live = append(live, s.Shard)
		}
	}
	slices.Sort(live)
	return strings.Join(live, " ")
}

// TestMemoryBudgetEvictsLeastRecentlyUsed: with room for three instances,
// a fourth start evicts the idle instance used least recently — not the
// oldest — and an evicted object keeps its state.
func TestMemoryBudgetEvictsLeastRecentlyUsed(t *testing.T) {
	h, reg := budgetHost(t, 10, nil) // 3 × 3.25 MiB fit
	inc := func(name string) uint64 {
		t.Helper()
		resp, err := h.Fetch(context.Background(), "U", name, &abi.Request{Method: "POST", Path: "/"})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return counterOf(t, resp)
	}
	inc("a")
	inc("b")
	inc("c")
	inc("a") // b is now the least recently used
	if got := liveSet(h, "U"); got != "a b c" {
		t.Fatalf("live %q, want a b c", got)
	}
	inc("d")
	if got := liveSet(h, "U"); got != "a c d" {
		t.Fatalf("after d started: live %q, want a c d (b evicted)", got)
	}
	if n := inc("b"); n != 2 {
		t.Fatalf("b after its eviction: count %d, want 2", n)
	}
	if got := liveSet(h, "U"); got != "a b d" {
		t.Fatalf("after b restarted: live %q, want a b d (c evicted)", got)
	}
	if n := metricValue(t, reg, "edgeshard_instance_evictions_total", map[string]string{"binding": "U", "reason": "budget"}); n != 2 {
		t.Fatalf("%v budget evictions, want 2", n)
	}
	if n := metricValue(t, reg, "edgeshard_instance_memory_charged_bytes", nil); n != 3*(48<<16+256<<10) {
		t.Fatalf("%v bytes charged, want three instances' worth", n)
	}
}

// TestMemoryBudgetFullOfBusyInstances: when every instance in the budget
// is running an event, a start waits for one to end — here the spinning
// one, stopped at its event deadline — and, if the wait runs out first,
// fails with ErrOverloaded (503 shard_overloaded) without running. A
// caller that gives up while the start waits gets ErrNotRun: the event
// never runs.
func TestMemoryBudgetFullOfBusyInstances(t *testing.T) {
	for _, tc := range []struct {
		name string
		wait time.Duration
	}{{"wait runs out", 200 * time.Millisecond}, {"busy instance ends", 10 * time.Second}} {
		t.Run(tc.name, func(t *testing.T) {
			h, reg := budgetHost(t, 5, func(c *host.Config) { // room for one
				c.EventTimeout = time.Second
				c.InstanceStartWait = tc.wait
			})
			spun := make(chan error, 1)
			go func() {
				_, err := h.Fetch(context.Background(), "S", "spin", &abi.Request{Method: "POST", Path: "/"})
				spun <- err
			}()
			for liveSet(h, "S") == "" {
				time.Sleep(5 * time.Millisecond)
			}
			// A caller who gives up while the start waits: not run.
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			_, err := h.Fetch(ctx, "U", "quitter", &abi.Request{Method: "POST", Path: "/"})
			cancel()
			if !errors.Is(err, host.ErrNotRun) {
				t.Fatalf("caller gone while waiting: %v, want ErrNotRun", err)
			}
			t0 := time.Now()
			resp, err := h.Fetch(context.Background(), "U", "u", &abi.Request{Method: "POST", Path: "/"})
			took := time.Since(t0)
			if tc.wait < time.Second {
				if code, name := host.ErrorStatus(err); !errors.Is(err, host.ErrOverloaded) || code != 503 || name != "shard_overloaded" {
					t.Fatalf("start with the budget full of busy instances: %v (%d %s), want 503 shard_overloaded", err, code, name)
				}
				if took < tc.wait {
					t.Fatalf("refused after %v, before its wait of %v", took, tc.wait)
				}
				if n := metricValue(t, reg, "edgeshard_instance_start_waits_total", map[string]string{"outcome": "overloaded"}); n < 1 {
					t.Fatal("the refused start is not counted")
				}
			} else {
				if err != nil || counterOf(t, resp) != 1 {
					t.Fatalf("start after waiting: %v", err)
				}
				if n := metricValue(t, reg, "edgeshard_instance_start_waits_total", map[string]string{"outcome": "started"}); n < 1 {
					t.Fatal("the start that waited is not counted")
				}
			}
			if err := <-spun; !errors.Is(err, host.ErrTimeout) {
				t.Fatalf("spinning event: %v, want ErrTimeout", err)
			}
			// The caller who gave up: its increment never happened.
			resp, err = h.Fetch(context.Background(), "U", "quitter", &abi.Request{Method: "POST", Path: "/"})
			if err != nil || counterOf(t, resp) != 1 {
				t.Fatalf("quitter: %v %v, want its first increment now", resp, err)
			}
		})
	}
}

// TestMemoryBudgetGoGuest runs the budget with the Go guest of
// examples/counter (3.25 MiB of linear memory, ~2.3 MiB resident): 500
// objects under a 24 MiB budget, every one incremented and read back
// (through a new instance: each was evicted meanwhile), RSS bounded.
func TestMemoryBudgetGoGuest(t *testing.T) {
	const (
		objects   = 500
		budgetMiB = 24
	)
	reg := prometheus.NewRegistry()
	h, _ := startQuiet(t, memoryConfig(t, func(c *host.Config) {
		c.Registerer = reg
		c.InstanceMemoryBudgetMiB = budgetMiB
	}))
	rss0 := vmRSS(t)
	var peak uint64
	t0 := time.Now()
	for pass, path := range []string{"/increment", "/"} {
		method := "POST"
		if pass == 1 {
			method = "GET"
		}
		for i := range objects {
			name := "user-" + strconv.Itoa(i)
			resp, err := h.Fetch(context.Background(), "COUNTER", name, &abi.Request{Method: method, Path: path})
			if err != nil || resp.Status != 200 || !strings.HasPrefix(string(resp.Body), `{"count":1,`) {
				t.Fatalf("%s %s %s: %v %v", method, path, name, resp, err)
			}
			peak = max(peak, vmRSS(t))
		}
	}
	took := time.Since(t0)
	evicted := metricValue(t, reg, "edgeshard_instance_evictions_total", map[string]string{"reason": "budget"})
	ns, _ := h.Namespace("COUNTER")
	t.Logf("%d Go guest starts in %v (%v each, sequential); %d live at the end; RSS %d MiB before, peak %d MiB (budget %d MiB); %v budget evictions",
		2*objects, took.Round(time.Millisecond), took/(2*objects), liveInstances(ns), rss0>>20, peak>>20, budgetMiB, evicted)
	if evicted < 2*objects-budgetMiB {
		t.Errorf("%v budget evictions, want at least %d", evicted, 2*objects-budgetMiB)
	}
	overhead := uint64(64)
	if raceEnabled {
		overhead = 192
	}
	if rss0 > 0 && peak > rss0+(budgetMiB+overhead)<<20 {
		t.Errorf("peak RSS %d MiB, over %d MiB + the budget above the %d MiB before", peak>>20, overhead, rss0>>20)
	}
}

// TestMemoryBudgetDefersAlarm: an alarm whose shard finds no room in the
// budget is not the handler's failure: it is put off without using up a
// retry, and runs once there is room.
func TestMemoryBudgetDefersAlarm(t *testing.T) {
	reg := prometheus.NewRegistry()
	h, logs := startQuiet(t, memoryConfig(t, func(c *host.Config) {
		c.Registerer = reg
		c.InstanceMemoryBudgetMiB = 5 // one instance
		c.EventTimeout = 1500 * time.Millisecond
		c.InstanceStartWait = 50 * time.Millisecond
		c.AlarmBackoff = 100 * time.Millisecond
		c.AlarmRetries = 1
		c.Bindings = append(c.Bindings, host.Binding{Name: "S", ModuleBytes: spinningPlugin(48)})
	}))
	call := func(method, path string) string {
		t.Helper()
		resp, err := h.Fetch(context.Background(), "COUNTER", "x", &abi.Request{Method: method, Path: path})
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		return string(resp.Body)
	}
	call("POST", "/increment")
	call("POST", "/reset-after?ms=200")
	spun := make(chan error, 1)
	go func() { // takes the budget (x, idle, is evicted) for 1.5 s
		_, err := h.Fetch(context.Background(), "S", "spin", &abi.Request{Method: "POST", Path: "/"})
		spun <- err
	}()
	if err := <-spun; !errors.Is(err, host.ErrTimeout) {
		t.Fatalf("spinning event: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.HasPrefix(call("GET", "/"), `{"count":0,`) {
		if time.Now().After(deadline) {
			t.Fatal("the alarm never ran")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := metricValue(t, reg, "edgeshard_instance_start_waits_total", map[string]string{"binding": "COUNTER", "outcome": "overloaded"}); n < 1 {
		t.Fatal("the alarm never waited for room: the test proves nothing")
	}
	if n := metricValue(t, reg, "edgeshard_alarms_total", map[string]string{"result": "retried"}); n != 0 {
		t.Fatalf("%v alarm retries used up; log:\n%s", n, logs.String())
	}
}
