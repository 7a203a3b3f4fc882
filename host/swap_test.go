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
	v2, err := os.ReadFile(testutil.Plugin(t, "examples/counter", "-X main.version=v2"))
	if err != nil {
		t.Fatal(err)
	}
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
				var r counterReply
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
