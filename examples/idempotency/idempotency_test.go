//go:build !wasip1

package main_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/conformance"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/host/clock"
	"github.com/edgeshard/edgeshard/internal/harness"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/edgeshard/edgeshard/storage"
	"github.com/rs/zerolog"
)

// TestConformance runs the example's suite on the real host's storage
// (Badger) and on the in-memory backend.
func TestConformance(t *testing.T) {
	conformance.RunEachBackend(t, testutil.Plugin(t, "examples/idempotency"), "conformance.json", conformance.Options{CacheDir: testutil.CacheDir()})
}

// startHost starts a host (testutil.Host), the example as IDEMPOTENCY,
// its configuration edited by mutate.
func startHost(t *testing.T, mutate func(*host.Config)) *host.Host {
	t.Helper()
	opts := []harness.Option{harness.Bindings(host.Binding{Name: "IDEMPOTENCY", Module: testutil.Plugin(t, "examples/idempotency")})}
	if mutate != nil {
		opts = append(opts, harness.Configure(mutate))
	}
	return testutil.Host(t, opts...).Host
}

func run(h *host.Host, key, path, body string) (*abi.Response, error) {
	return h.Fetch(context.Background(), "IDEMPOTENCY", "acct-1", &abi.Request{
		Method: "POST", Path: path, Body: []byte(body),
		Header: []abi.Header{{Name: "Idempotency-Key", Value: key}},
	})
}

// TestConcurrentRepeatsRunOnce sends the same key from many goroutines at
// once on a Badger-backed host: the operation runs exactly once and every
// caller gets the same response.
func TestConcurrentRepeatsRunOnce(t *testing.T) {
	h := startHost(t, nil)
	const n = 32
	resps := make([]*abi.Response, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { resps[i], errs[i] = run(h, "pay-1", "/run", `{"amount":5}`) })
	}
	wg.Wait()
	fresh := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		if resps[i].Status != 201 || !bytes.Equal(resps[i].Body, resps[0].Body) {
			t.Fatalf("request %d: status %d body %s, want 201 %s", i, resps[i].Status, resps[i].Body, resps[0].Body)
		}
		if abi.GetHeader(resps[i].Header, "Idempotent-Replayed") == "false" {
			fresh++
		}
	}
	if fresh != 1 || string(resps[0].Body) != `{"seq":1,"request":{"amount":5}}` {
		t.Fatalf("%d fresh responses, body %s; want exactly one run with seq 1", fresh, resps[0].Body)
	}
}

// TestSweepContinuesPastOneEvent expires more keys than one alarm event
// deletes (16 rounds of 64): the handler re-arms for "now" and the rest go
// in the next event.
func TestSweepContinuesPastOneEvent(t *testing.T) {
	vc := clock.NewVirtual(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	logs := &syncBuffer{}
	h := startHost(t, func(c *host.Config) {
		c.Clock = vc
		c.Storage = storage.NewMemory()
		c.Logger = newLogger(logs)
	})
	const keys = 1100
	for i := range keys {
		resp, err := run(h, fmt.Sprintf("k%04d", i), "/run?ttl_ms=1000", "{}")
		if err != nil || resp.Status != 201 {
			t.Fatalf("key %d: %v %v", i, err, resp)
		}
	}
	if n := countRecords(t, h); n != keys {
		t.Fatalf("%d stored records, want %d", n, keys)
	}
	vc.Advance(time.Second)
	deadline := time.Now().Add(30 * time.Second)
	for countRecords(t, h) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d records left after the sweep; log:\n%s", countRecords(t, h), logs)
		}
		// An alarm re-armed for "now" is due at once: let the virtual
		// clock run its due timers.
		vc.Set(vc.Now())
		time.Sleep(5 * time.Millisecond)
	}
	if got := strings.Count(logs.String(), `"idempotency keys expired"`); got < 2 {
		t.Fatalf("%d sweep log records, want at least 2 (one event cannot expire %d keys)", got, keys)
	}
	if !strings.Contains(logs.String(), `"count":"1024"`) {
		t.Fatalf("no sweep of 1024 keys logged:\n%s", logs)
	}
}

// countRecords counts the stored responses of the shard acct-1.
func countRecords(t *testing.T, h *host.Host) int {
	t.Helper()
	ns, _ := h.Namespace("IDEMPOTENCY")
	kvs, err := conformance.ShardStorage(context.Background(), ns, "acct-1", abi.ListOptions{Prefix: "r:"})
	if err != nil {
		t.Fatal(err)
	}
	return len(kvs)
}

// syncBuffer collects the host's log.
type syncBuffer = testutil.LogBuffer

func newLogger(w *syncBuffer) zerolog.Logger { return zerolog.New(w) }
