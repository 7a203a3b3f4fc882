package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/host/config"
	"github.com/edgeshard/edgeshard/internal/configtext"
	"github.com/edgeshard/edgeshard/internal/server"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/rs/zerolog"
)

// TestEdgeShardsAreNotReachableOverDO: with the edge API on, its shards
// (COUNTER_SHARD, RUNTIME_EVENT_SHARD, RATE_LIMIT_SHARD) are internal — an
// edge client cannot call their protocols at /do (inject counter deltas or
// events, move a rate-limit bucket), only the edge API's authenticated
// routes reach them — while other bindings stay public at /do.
func TestEdgeShardsAreNotReachableOverDO(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the plugins")
	}
	dir := t.TempDir()
	text := fmt.Sprintf("listen = \"127.0.0.1:0\"\ndata_dir = %q\ncache_dir = %q\n", filepath.Join(dir, "data"), testutil.CacheDir()) +
		configtext.Pipelines(testutil.Plugin(t, "plugins/runtimeevents"), testutil.Plugin(t, "plugins/counters"), 4, "sqlite://"+filepath.Join(dir, "analytics.db")) +
		configtext.Binding("COUNTER", testutil.Plugin(t, "examples/counter", "-X main.version=v1"), 0, "", "") +
		configtext.D1("DB", "sqlite://"+filepath.Join(dir, "d1.db")) + `
[auth]
trust_user_header = "X-User-Id"
`
	cfg, err := config.Parse([]byte(text), "edgeshard.toml")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + serveUntilEnd(t, cfg)
	do := func(method, path, body string) (int, string) {
		return testutil.Do(t, method, base+path, body, "X-User-Id", "mallory")
	}
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/do/COUNTER_SHARD/p1/increment", "post_stats\tp1\tlikes\t1000000\n"},
		{"POST", "/do/COUNTER_SHARD/p1/flush", ""},
		{"GET", "/do/COUNTER_SHARD/p1/pending", ""},
		{"POST", "/do/RUNTIME_EVENT_SHARD/c/enqueue", "0b6f7c8e-5d3a-4e7b-9a51-2f0c1d9e8a7b\tc\t\tforged\t0\t0\t\n"},
	} {
		if st, body := do(c.method, c.path, c.body); st != 404 || !strings.Contains(body, `"unknown_binding"`) {
			t.Fatalf("%s %s: %d %s, want 404 unknown_binding", c.method, c.path, st, body)
		}
	}
	if st, body := do("POST", "/posts/p1/views", ""); st != 202 {
		t.Fatalf("the edge route to the same shard: %d %s", st, body)
	}
	if st, body := do("POST", "/do/COUNTER/alice/increment", ""); st != 200 {
		t.Fatalf("a binding the edge API does not use stays public: %d %s", st, body)
	}
}

// serveUntilEnd runs serve with cfg until the test ends and returns the
// address of its main listener once it is ready. A serve that stops
// before it is ready, or does not get ready within 2 minutes, fails t;
// so does an error of serve when the test ends.
func serveUntilEnd(t *testing.T, cfg *config.File) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, zerolog.Nop(), server.Options{Ready: func(a string) { ready <- a }}) }()
	stopped := false
	t.Cleanup(func() {
		cancel()
		if !stopped {
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
		}
	})
	select {
	case a := <-ready:
		return a
	case err := <-done:
		stopped = true
		t.Fatalf("serve stopped: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("serve not ready after 2 minutes")
	}
	return ""
}
