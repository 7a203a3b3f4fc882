//go:build !wasip1

package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/conformance"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/host/clock"
	"github.com/edgeshard/edgeshard/internal/harness"
	"github.com/edgeshard/edgeshard/internal/testutil"
)

// TestConformance runs the example's suite on the real host's storage
// (Badger) and on the in-memory backend.
func TestConformance(t *testing.T) {
	conformance.RunEachBackend(t, testutil.Plugin(t, "examples/presence"), "conformance.json", conformance.Options{CacheDir: testutil.CacheDir()})
}

// TestOverdueExpiryFiresAfterRestart lets a room's members time out while
// the host is down: the Badger-backed host restarted later fires the
// overdue alarm at boot and the sweep removes every member from storage,
// not just from the GET /members answer.
func TestOverdueExpiryFiresAfterRestart(t *testing.T) {
	wasm := testutil.Plugin(t, "examples/presence")
	dir := t.TempDir()
	vc := clock.NewVirtual(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	h := startHost(t, wasm, dir, vc)

	const users = 100
	testutil.Concurrently(t, users, func(i int) error {
		resp, err := fetch(h, "POST", "/join", fmt.Sprintf(`{"user":"u%03d"}`, i))
		if err == nil && resp.Status != 200 {
			err = fmt.Errorf("join u%03d: status %d: %s", i, resp.Status, resp.Body)
		}
		return err
	})
	if n := memberCount(t, h); n != users {
		t.Fatalf("GET /members count = %d, want %d", n, users)
	}
	if err := h.Close(context.Background()); err != nil {
		t.Fatal(err)
	}

	vc.Advance(time.Minute) // nobody is running the alarm now
	h = startHost(t, wasm, dir, vc)
	deadline := time.Now().Add(30 * time.Second)
	for storedMembers(t, h) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d members still stored a minute past their expiry", storedMembers(t, h))
		}
		vc.Set(vc.Now()) // run the virtual clock's due timers
		time.Sleep(5 * time.Millisecond)
	}
	if n := memberCount(t, h); n != 0 {
		t.Fatalf("GET /members count = %d after the sweep, want 0", n)
	}
	ns, _ := h.Namespace("PRESENCE")
	if at, ok := ns.AlarmAt("lobby"); ok {
		t.Fatalf("alarm still set for %v in an empty room", at)
	}
}

// startHost starts a host on dir (testutil.Host), the example as PRESENCE.
func startHost(t *testing.T, wasm, dir string, c clock.Clock) *host.Host {
	t.Helper()
	return testutil.Host(t, harness.Dir(dir), harness.Clock(c), harness.Bindings(host.Binding{Name: "PRESENCE", Module: wasm})).Host
}

func fetch(h *host.Host, method, path, body string) (*abi.Response, error) {
	return h.Fetch(context.Background(), "PRESENCE", "lobby", &abi.Request{Method: method, Path: path, Body: []byte(body)})
}

func memberCount(t *testing.T, h *host.Host) int {
	t.Helper()
	resp, err := fetch(h, "GET", "/members", "")
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Count int `json:"count"`
	}
	if err := json.Unmarshal(resp.Body, &r); err != nil {
		t.Fatalf("GET /members: %v: %s", err, resp.Body)
	}
	return r.Count
}

// storedMembers counts the room's m: entries.
func storedMembers(t *testing.T, h *host.Host) int {
	t.Helper()
	ns, _ := h.Namespace("PRESENCE")
	kvs, err := conformance.ShardStorage(context.Background(), ns, "lobby", abi.ListOptions{Prefix: "m:"})
	if err != nil {
		t.Fatal(err)
	}
	return len(kvs)
}
