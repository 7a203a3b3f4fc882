package host_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/testutil"
)

// TestHotSwapUnderLoad pushes a new module version while clients increment
// counters: no request fails, every acknowledged increment is counted, and
// responses switch to the new version.
func TestHotSwapUnderLoad(t *testing.T) {
	f := start(t, counterConfig(t, nil))
	ns, _ := f.h.Namespace("COUNTER")
	v2 := counterBin(t, "v2")
	var (
		acked    atomic.Int64
		failures atomic.Int64
		sawV2    atomic.Bool
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	names := []string{"a", "b", "c", "d"}
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := ns.Fetch(context.Background(), names[(w+i)%len(names)], &abi.Request{Method: "POST", Path: "/increment"})
				if err != nil || resp.Status != 200 {
					failures.Add(1)
					continue
				}
				acked.Add(1)
				var r testutil.CounterReply
				json.Unmarshal(resp.Body, &r)
				if r.Version == "v2" {
					sawV2.Store(true)
				}
			}
		}(w)
	}
	time.Sleep(200 * time.Millisecond)
	before := ns.Current().SHA256()
	v, err := ns.Swap(context.Background(), v2, "test")
	if err != nil {
		t.Fatalf("swap: %v", err)
	}
	if v.SHA256() == before {
		t.Fatal("swap did not change the version")
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d requests failed during the swap", n)
	}
	if !sawV2.Load() {
		t.Fatal("no response came from the new version")
	}
	total := 0
	for _, n := range names {
		total += f.count(t, n)
	}
	if int64(total) != acked.Load() {
		t.Fatalf("counted %d, acknowledged %d", total, acked.Load())
	}
	if ns.Previous() == nil || ns.Previous().SHA256() != before {
		t.Fatal("previous version not kept for rollback")
	}
	if _, err := ns.Rollback(context.Background()); err != nil {
		t.Fatalf("rollback: %v", err)
	}
	resp, _ := f.call(t, "a", "GET", "/")
	if !strings.Contains(string(resp.Body), `"version":"test"`) {
		t.Fatalf("after rollback: %s", resp.Body)
	}
}

func TestSwapRefusesBrokenModuleAndKeepsServing(t *testing.T) {
	f := start(t, counterConfig(t, nil))
	ns, _ := f.h.Namespace("COUNTER")
	f.call(t, "k", "POST", "/increment")
	before := ns.Current().SHA256()
	bad, _ := os.ReadFile(testutil.Plugin(t, "host/testdata/plugins/badabi"))
	cases := map[string][]byte{
		"garbage":   []byte("definitely not wasm"),
		"empty":     nil,
		"wrong ABI": bad,
	}
	var keys []string
	for k := range cases {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, name := range keys {
		_, err := ns.Swap(context.Background(), cases[name], name)
		if err == nil || !errors.Is(err, host.ErrInvalidModule) {
			t.Fatalf("%s: swap error = %v, want ErrInvalidModule", name, err)
		}
		if ns.Current().SHA256() != before {
			t.Fatalf("%s: a refused module changed the current version", name)
		}
	}
	if got := f.count(t, "k"); got != 1 {
		t.Fatalf("count = %d after refused swaps, want 1", got)
	}
}

// touch makes each shard live, one event each.
func (f *fixture) touch(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if resp, err := f.call(t, n, "POST", "/increment"); err != nil || resp.Status != 200 {
			t.Fatalf("increment %s: %v %v", n, resp, err)
		}
	}
}

// versionOf returns the version string the shard's instance answers with;
// since a shard handles its events in order, it also waits for every event
// queued to the shard before it (a swap's switch among them).
func (f *fixture) versionOf(t *testing.T, name string) string {
	t.Helper()
	return f.reply(t, name).Version
}

func counterBin(t *testing.T, version string) []byte {
	t.Helper()
	return testutil.PluginBytes(t, "examples/counter", "-X main.version="+version)
}

// TestSwapPreparesEveryLiveShard: a swap and a rollback each have every
// live shard instantiate the new version on its own goroutine before the
// switch, so no shard instantiates inline when its next event comes.
func TestSwapPreparesEveryLiveShard(t *testing.T) {
	f := startMemory(t, nil)
	ns, _ := f.h.Namespace("COUNTER")
	names := []string{"a", "b", "c"}
	f.touch(t, names...)
	started := func() int { return strings.Count(f.logs.String(), "shard instance started") }
	prepared := func() int { return strings.Count(f.logs.String(), "new version prepared") }
	if started() != 3 || prepared() != 0 {
		t.Fatalf("before the swap: %d started, %d prepared", started(), prepared())
	}
	check := func(step, want string, wantPrepared int) {
		t.Helper()
		for _, n := range names {
			if got := f.versionOf(t, n); got != want {
				t.Fatalf("%s: shard %s answers %q, want %q", step, n, got, want)
			}
		}
		if started() != 3 || prepared() != wantPrepared {
			t.Fatalf("%s: %d started inline (want 3, all before the swap), %d prepared (want %d)", step, started(), prepared(), wantPrepared)
		}
	}
	if _, err := ns.Swap(context.Background(), counterBin(t, "v2"), "test"); err != nil {
		t.Fatal(err)
	}
	check("after the swap", "v2", 3)
	if _, err := ns.Rollback(context.Background()); err != nil {
		t.Fatal(err)
	}
	check("after the rollback", "test", 6)
}

// TestVersionsAreFreedWithTheirLastReference: the namespace holds a
// reference to its current and previous versions and every instance one
// to its version; a version neither current nor previous is freed once its
// last shard has switched away, and the host's close frees the rest.
func TestVersionsAreFreedWithTheirLastReference(t *testing.T) {
	f := startMemory(t, nil)
	ns, _ := f.h.Namespace("COUNTER")
	names := []string{"a", "b", "c"}
	f.touch(t, names...)
	v1 := ns.Current()
	refs := func(step string, want map[*host.Version]int64) {
		t.Helper()
		for _, n := range names {
			f.versionOf(t, n) // every shard past its switch
		}
		for v, n := range want {
			if got := host.VersionRefs(v); got != n {
				t.Fatalf("%s: version %s has %d references, want %d", step, v.Source, got, n)
			}
		}
	}
	refs("v1 serving", map[*host.Version]int64{v1: 1 + 3})
	v2, err := ns.Swap(context.Background(), counterBin(t, "v2"), "v2")
	if err != nil {
		t.Fatal(err)
	}
	refs("v2 swapped in", map[*host.Version]int64{v1: 1, v2: 1 + 3})
	v3, err := ns.Swap(context.Background(), counterBin(t, "v3"), "v3")
	if err != nil {
		t.Fatal(err)
	}
	refs("v3 swapped in", map[*host.Version]int64{v1: 0, v2: 1, v3: 1 + 3})
	if _, err := ns.Rollback(context.Background()); err != nil {
		t.Fatal(err)
	}
	refs("rolled back to v2", map[*host.Version]int64{v2: 1 + 3, v3: 1})
	if err := f.h.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, v := range []*host.Version{v1, v2, v3} {
		if got := host.VersionRefs(v); got != 0 {
			t.Fatalf("after Close: version %s has %d references", v.Source, got)
		}
	}
}

// TestSwapAbandonedWhilePreparing: a swap whose context ends while shards
// prepare leaves the old version current; the shards drop what they
// prepared and keep serving, and a later swap goes through.
func TestSwapAbandonedWhilePreparing(t *testing.T) {
	v2 := counterBin(t, "v2")
	f := startMemory(t, func(c *host.Config) {
		// v2 compiled at start, so the swap below reaches the prepare step.
		c.Bindings = append(c.Bindings, host.Binding{Name: "V2", ModuleBytes: v2})
	})
	ns, _ := f.h.Namespace("COUNTER")
	names := []string{"a", "b", "c"}
	f.touch(t, names...)
	before := ns.Current()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := ns.Swap(ctx, v2, "cancelled"); !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "swap abandoned") {
		t.Fatalf("swap with an ended context: %v, want it abandoned with context.Canceled", err)
	}
	if ns.Current() != before || ns.Previous() != nil {
		t.Fatal("an abandoned swap changed the versions")
	}
	for _, n := range names {
		if got := f.versionOf(t, n); got != "test" {
			t.Fatalf("shard %s answers %q after an abandoned swap", n, got)
		}
	}
	if got := host.VersionRefs(before); got != 1+3 {
		t.Fatalf("current version has %d references, want 4", got)
	}
	if _, err := ns.Swap(context.Background(), v2, "v2"); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if got := f.versionOf(t, n); got != "v2" {
			t.Fatalf("shard %s answers %q after the swap", n, got)
		}
	}
}

// TestPushedModuleSurvivesRestart: a pushed version serves again after a
// restart (not the config's module), and so does the rollback target; a
// config whose module changed since the push wins over it.
func TestPushedModuleSurvivesRestart(t *testing.T) {
	cfg := counterConfig(t, nil) // module: the counter built with version "test"
	v2 := counterBin(t, "v2")
	version := func(f *fixture) string {
		t.Helper()
		resp, err := f.call(t, "a", "GET", "/")
		if err != nil {
			t.Fatal(err)
		}
		var r testutil.CounterReply
		json.Unmarshal(resp.Body, &r)
		return r.Version
	}
	f := start(t, cfg)
	ns, _ := f.h.Namespace("COUNTER")
	if _, err := ns.Swap(context.Background(), v2, "push"); err != nil {
		t.Fatal(err)
	}
	f.h.Close(context.Background())

	f = start(t, cfg)
	ns, _ = f.h.Namespace("COUNTER")
	if got := version(f); got != "v2" || ns.Current().Source != host.SourceRestored {
		t.Fatalf("after a restart: version %q from %q, want the pushed v2 from %q", got, ns.Current().Source, host.SourceRestored)
	}
	if !strings.Contains(f.logs.String(), "serving the module version kept from before the restart") {
		t.Fatal("the start-up log does not say a kept version serves")
	}
	if _, err := ns.Rollback(context.Background()); err != nil {
		t.Fatalf("rollback after a restart: %v", err)
	}
	if got := version(f); got != "test" {
		t.Fatalf("after rollback: version %q, want the config's %q", got, "test")
	}
	if _, err := ns.Swap(context.Background(), v2, "push"); err != nil {
		t.Fatal(err)
	}
	f.h.Close(context.Background())

	// A new deploy: the config names another module. It wins.
	cfg.Bindings[0].Module = testutil.Plugin(t, "examples/counter", "-X main.version=v3")
	f = start(t, cfg)
	if got := version(f); got != "v3" {
		t.Fatalf("after the config's module changed: version %q, want v3", got)
	}
	if !strings.Contains(f.logs.String(), "the config's module changed since a module was pushed") {
		t.Fatal("the start-up log does not say the config's module won")
	}
}
