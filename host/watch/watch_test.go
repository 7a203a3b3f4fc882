package watch_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/host/watch"
	"github.com/edgeshard/edgeshard/internal/harness"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, timeout, what, cond)
}

// TestWatchReloadsDebouncedAndRefusesBrokenFiles writes a module in two
// halves (never loaded half-written), then garbage (refused once, the
// current version keeps serving), then the first version again.
func TestWatchReloadsDebouncedAndRefusesBrokenFiles(t *testing.T) {
	v1 := testutil.PluginBytes(t, "examples/counter", "-X main.version=test")
	v2 := testutil.PluginBytes(t, "examples/counter", "-X main.version=v2")
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	path := filepath.Join(t.TempDir(), "counter.wasm")
	if err := os.WriteFile(path, v1, 0o644); err != nil {
		t.Fatal(err)
	}
	env := testutil.Host(t, harness.Bindings(host.Binding{Name: "COUNTER", Module: path}))
	defer env.Close() // before goleak looks
	h, logs := env.Host, env.Logs
	ns, _ := h.Namespace("COUNTER")

	w, err := watch.New(h, []watch.Target{{Binding: "COUNTER", Path: path}}, watch.Options{Interval: 20 * time.Millisecond, Debounce: 400 * time.Millisecond, Logger: zerolog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	defer func() { cancel(); <-done }()

	version := func() string {
		resp, err := ns.Fetch(context.Background(), "k", &abi.Request{Method: "POST", Path: "/increment"})
		if err != nil {
			t.Fatalf("increment: %v", err)
		}
		var r struct{ Version string }
		json.Unmarshal(resp.Body, &r)
		return r.Version
	}
	if v := version(); v != "test" {
		t.Fatalf("version before = %q", v)
	}

	// Half a file, then the rest shortly after: only the whole is loaded.
	if err := os.WriteFile(path, v2[:len(v2)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if err := os.WriteFile(path, v2, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "v2 to be loaded from the file", 2*time.Minute, func() bool { return ns.Current().SHA256() == sum(v2) })
	if v := version(); v != "v2" {
		t.Fatalf("version after reload = %q", v)
	}
	if strings.Contains(logs.String(), "refused") {
		t.Fatalf("a half-written file was loaded:\n%s", logs)
	}
	if ns.Current().Source != path {
		t.Fatalf("source = %q, want %q", ns.Current().Source, path)
	}

	// A broken file is refused once and changes nothing.
	if err := os.WriteFile(path, []byte("\x00asm but not really a module"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the broken file to be refused", time.Minute, func() bool { return strings.Contains(logs.String(), "was refused") })
	time.Sleep(1200 * time.Millisecond) // three debounce periods: no retry
	if n := strings.Count(logs.String(), "was refused"); n != 1 {
		t.Fatalf("broken file refused %d times, want once", n)
	}
	if ns.Current().SHA256() != sum(v2) || version() != "v2" {
		t.Fatal("a refused file changed the serving version")
	}

	// Back to the first version.
	if err := os.WriteFile(path, v1, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "v1 to be loaded again", time.Minute, func() bool { return ns.Current().SHA256() == sum(v1) })
	if v := version(); v != "test" {
		t.Fatalf("version after second reload = %q", v)
	}
	// The version is current inside Swap; the watcher logs once Swap returns.
	waitFor(t, "the second reload to be logged", time.Minute, func() bool {
		return strings.Count(logs.String(), "module reloaded from file") >= 2
	})
	if n := strings.Count(logs.String(), "module reloaded from file"); n != 2 {
		t.Fatalf("%d reloads logged, want 2:\n%s", n, logs)
	}
}

func TestWatchUnknownBinding(t *testing.T) {
	h := testutil.Host(t, harness.Bindings(host.Binding{Name: "COUNTER", Module: testutil.Plugin(t, "examples/counter", "-X main.version=test")})).Host
	if _, err := watch.New(h, []watch.Target{{Binding: "NOPE", Path: "x.wasm"}}, watch.Options{}); err == nil || !strings.Contains(err.Error(), "NOPE") {
		t.Fatalf("err = %v, want one naming the binding", err)
	}
}
