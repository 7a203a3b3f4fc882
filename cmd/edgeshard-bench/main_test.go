package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/host/clock"
	"github.com/edgeshard/edgeshard/internal/benchkit"
	"github.com/edgeshard/edgeshard/internal/harness"
	"github.com/edgeshard/edgeshard/internal/hostinternal"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/rs/zerolog"
)

// benchLine is the output contract: BENCH <name> <figure>=<value> ...
var benchLine = regexp.MustCompile(`^BENCH [a-z0-9_]+( [a-z0-9_]+=[^ =]+)+$`)

// TestSmoke runs every figure with the smallest sizes and checks that each
// prints one well-formed BENCH line. It asserts nothing about timings:
// benchmarks are not timed tests.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("runs every benchmark figure (builds plugins and the binary)")
	}
	root, err := benchkit.FindRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	var out, progress bytes.Buffer
	r := &runner{sz: smokeSizes(), root: root, cacheDir: testutil.CacheDir(), build: &builder{root: root},
		out: &out, progress: &progress, engine: testutil.Engine(t)}
	t0 := time.Now()
	results, failed := r.runAll(nil, &progress)
	t.Logf("all figures in %v:\n%s", time.Since(t0).Round(time.Millisecond), out.String())
	if failed {
		t.Fatalf("a figure failed:\n%s", progress.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != len(figures) || len(results) != len(figures) {
		t.Fatalf("%d lines for %d figures:\n%s", len(lines), len(figures), out.String())
	}
	for i, l := range lines {
		if !benchLine.MatchString(l) {
			t.Errorf("malformed line %q", l)
		}
		if name := strings.Fields(l)[1]; name != figures[i].name {
			t.Errorf("line %d is %s, want %s", i, name, figures[i].name)
		}
		if !strings.Contains(l, " met=") {
			t.Errorf("line %q has no verdict", l)
		}
	}
}

// TestNativeLimiterMatchesPlugin sends the same script of requests to
// RateLimitShard (wasm) and nativeLimiter on one host with a virtual clock
// and checks that every answer is byte for byte the same: the native side
// of ratelimit_wasm_vs_native runs the same algorithm.
func TestNativeLimiterMatchesPlugin(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the rate-limit plugin")
	}
	vc := clock.NewVirtual(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	h := testutil.Host(t, harness.Context(hostinternal.WithNative(context.Background(), "NATIVE", newNativeLimiter(vc))),
		harness.Clock(vc), harness.Memory(), harness.LogLevel(zerolog.Disabled),
		harness.Configure(func(c *host.Config) { c.IdleTimeout = time.Hour }),
		harness.Bindings(
			host.Binding{Name: "WASM", Module: testutil.Plugin(t, "plugins/ratelimit"), Shards: 2},
			host.Binding{Name: "NATIVE", Shards: 2},
		)).Host
	type step struct {
		advance      time.Duration
		method, path string
		body         string
	}
	script := []step{
		{0, "POST", "/check", "user:alice\t3\t60000\n"},
		{0, "POST", "/check", "user:alice\t3\t60000\n"},
		{500 * time.Millisecond, "POST", "/check", "user:alice\t3\t60000\n"},
		{0, "POST", "/check", "user:alice\t3\t60000\n"}, // denied
		{0, "GET", "/bucket?key=user:alice", ""},
		{20 * time.Second, "POST", "/check", "user:alice\t3\t60000\nip:10.0.0.1\t10\t10000\t2\n"},
		{45 * time.Second, "POST", "/check", "user:alice\t3\t60000\r\n\nip:10.0.0.1\t10\t10000\n"},
		{0, "POST", "/check", "user:\"q\"\\\t5\t1000\n"},
		{0, "POST", "/check", "user:bob\t3\t60000\t4\n"},       // bad cost
		{0, "POST", "/check", "user:bob\t0\t60000\n"},          // bad limit
		{0, "POST", "/check", "user:bob\t3\t999\n"},            // bad window
		{0, "POST", "/check", "user:bob\t3\n"},                 // bad line
		{0, "POST", "/check", "a\t1\t1000\na\t1\t1000\n"},      // duplicate
		{0, "POST", "/check", "\n\n"},                          // empty
		{0, "GET", "/check", ""},                               // method
		{0, "GET", "/bucket", ""},                              // bad key
		{0, "GET", "/bucket?key=nobody", ""},                   // not found
		{0, "POST", "/nope", ""},                               // not found
		{3 * time.Minute, "GET", "/bucket?key=user:alice", ""}, // rolled forward
		{0, "POST", "/check", "user:alice\t1\t60000\n"},        // window restarts
	}
	ctx := context.Background()
	statuses := map[int]int{}
	denied := false
	for i, s := range script {
		vc.Advance(s.advance)
		var got [2]*abi.Response
		for j, b := range []string{"WASM", "NATIVE"} {
			key := "k"
			if k, _, ok := strings.Cut(s.body, "\t"); ok {
				key = k
			}
			resp, err := h.Fetch(ctx, b, key, &abi.Request{Method: s.method, Path: s.path, Body: []byte(s.body)})
			if err != nil {
				t.Fatalf("step %d %s: %v", i, b, err)
			}
			got[j] = resp
		}
		statuses[got[1].Status]++
		denied = denied || bytes.HasPrefix(got[1].Body, []byte(`{"allowed":false`))
		if got[0].Status != got[1].Status || !bytes.Equal(got[0].Body, got[1].Body) {
			t.Errorf("step %d %s %s %q:\n wasm   %d %s\n native %d %s", i, s.method, s.path, s.body,
				got[0].Status, got[0].Body, got[1].Status, got[1].Body)
		}
	}
	if !denied || statuses[200] < 8 || statuses[400] < 6 || statuses[404] < 2 || statuses[405] != 1 {
		t.Errorf("the script does not exercise the protocol: statuses %v, a denial seen: %v", statuses, denied)
	}
}

// TestUpdateDocs rewrites a document's marked regions and keeps rows of
// figures the run did not measure.
func TestUpdateDocs(t *testing.T) {
	dir := t.TempDir()
	doc := "# B\n" + envBegin + "\nold\n" + envEnd + "\n" + resultsBegin + "\n| `startup` | warm 0.5 s | x | ✅ yes | kept | then |\n" +
		resultsEnd + "\n" + historyBegin + "\n" + historyEnd + "\n" + uncheckedBegin + "\n" + uncheckedEnd + "\n"
	path := filepath.Join(dir, "docs", "B.md")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	res := &result{name: "counters", headline: "inproc 25.0×", met: true, note: "a | b"}
	env := runEnv{CPU: "CPU X", Cores: 2, LoadAvg: "1 2 3", Go: "go1.26", Commit: "abc", Date: "2026-11-30 00:00 UTC", Command: "go run ./cmd/edgeshard-bench -quick"}
	for i := 0; i < 2; i++ {
		if err := updateDocs(dir, "docs/B.md", env, []*result{res}, true, false, quickSizes()); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := os.ReadFile(path)
	s := string(b)
	for _, want := range []string{"CPU X, 2 cores", "| `counters` | inproc 25.0× |", `a \| b`, "| `startup` | warm 0.5 s | x | ✅ yes | kept | then |", "| `events` | not measured yet |"} {
		if !strings.Contains(s, want) {
			t.Errorf("document lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "\nold\n") {
		t.Error("environment block not replaced")
	}
	if n := strings.Count(s, "| 2026-11-30 00:00 UTC | `abc` | quick |"); n != 2 {
		t.Errorf("history has %d rows of this run, want 2:\n%s", n, s)
	}
	if err := updateDocs(dir, "docs/B.md", env, []*result{res}, true, true, quickSizes()); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(path)
	if u, _ := region(string(b), uncheckedBegin, uncheckedEnd); !strings.Contains(u, "| `counters` | inproc 25.0× |") {
		t.Errorf("unchecked table not written:\n%s", u)
	}
}
