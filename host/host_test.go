package host_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/host/clock"
	"github.com/edgeshard/edgeshard/internal/harness"
	"github.com/edgeshard/edgeshard/internal/hostinternal"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/edgeshard/edgeshard/storage"
)

// fixture is a host of the harness (testutil.Host).
type fixture struct {
	h    *host.Host
	logs *testutil.LogBuffer
	cfg  host.Config
}

// counterConfig is a host configuration on a temporary directory with the
// counter example as COUNTER, edited by mutate.
func counterConfig(t *testing.T, mutate func(*host.Config)) host.Config {
	t.Helper()
	cfg := testutil.HostConfig(t, harness.Bindings(host.Binding{Name: "COUNTER", Module: testutil.Plugin(t, "examples/counter", "-X main.version=test")}))
	if mutate != nil {
		mutate(&cfg)
	}
	return cfg
}

// memoryConfig is counterConfig on in-memory storage (mutate, if set,
// edits it after).
func memoryConfig(t *testing.T, mutate func(*host.Config)) host.Config {
	t.Helper()
	return counterConfig(t, func(c *host.Config) {
		c.Storage = storage.NewMemory()
		if mutate != nil {
			mutate(c)
		}
	})
}

// onlyPlugin is a mutate for counterConfig or startMemory: the test
// plugin at path (testutil.Plugin) becomes the host's only binding, as name.
func onlyPlugin(t *testing.T, name, path string) func(*host.Config) {
	return func(c *host.Config) {
		c.Bindings = []host.Binding{{Name: name, Module: testutil.Plugin(t, path)}}
	}
}

// startMemory starts a host of memoryConfig.
func startMemory(t *testing.T, mutate func(*host.Config)) *fixture {
	t.Helper()
	return start(t, memoryConfig(t, mutate))
}

// startNative starts a host of memoryConfig in which each binding named
// in natives runs that native shard (internal/hostinternal.WithNative),
// every object the same value; mutate declares the bindings.
func startNative(t *testing.T, natives map[string]hostinternal.NativeShard, mutate func(*host.Config)) *fixture {
	t.Helper()
	ctx := context.Background()
	for name, s := range natives {
		ctx = hostinternal.WithNative(ctx, name, func(string) hostinternal.NativeShard { return s })
	}
	return startCtx(t, ctx, memoryConfig(t, mutate))
}

// serve serves the host's routes (Host.Handler) until the test ends.
func (f *fixture) serve(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(f.h.Handler())
	t.Cleanup(srv.Close)
	return srv
}

func start(t *testing.T, cfg host.Config) *fixture {
	t.Helper()
	return startCtx(t, context.Background(), cfg)
}

// startCtx starts a host with ctx, which may carry hooks of
// internal/hostinternal.
func startCtx(t *testing.T, ctx context.Context, cfg host.Config) *fixture {
	t.Helper()
	env := testutil.Host(t, harness.HostConfig(cfg), harness.Context(ctx))
	return &fixture{h: env.Host, logs: env.Logs, cfg: env.Config}
}

func (f *fixture) call(t *testing.T, name, method, path string) (*abi.Response, error) {
	t.Helper()
	return f.h.Fetch(context.Background(), "COUNTER", name, &abi.Request{Method: method, Path: path})
}

// reply returns the counter's answer to GET / on the object name.
func (f *fixture) reply(t *testing.T, name string) testutil.CounterReply {
	t.Helper()
	resp, err := f.call(t, name, "GET", "/")
	if err != nil {
		t.Fatalf("GET %s: %v", name, err)
	}
	var r testutil.CounterReply
	if err := json.Unmarshal(resp.Body, &r); err != nil {
		t.Fatalf("decode %q: %v", resp.Body, err)
	}
	return r
}

func (f *fixture) count(t *testing.T, name string) int {
	t.Helper()
	return f.reply(t, name).Count
}

func TestConcurrentIncrementsArePersisted(t *testing.T) {
	cfg := counterConfig(t, nil)
	f := start(t, cfg)
	const n = 200
	testutil.Concurrently(t, n, func(int) error {
		resp, err := f.call(t, "a", "POST", "/increment")
		if err == nil && resp.Status != 200 {
			err = fmt.Errorf("status %d: %s", resp.Status, resp.Body)
		}
		return err
	})
	if got := f.count(t, "a"); got != n {
		t.Fatalf("count = %d, want %d", got, n)
	}
	if got := f.count(t, "b"); got != 0 {
		t.Fatalf("other object count = %d, want 0", got)
	}
	// A new host on the same data dir sees every acknowledged increment.
	if err := f.h.Close(context.Background()); err != nil {
		t.Fatalf("close: %v", err)
	}
	f2 := start(t, cfg)
	if got := f2.count(t, "a"); got != n {
		t.Fatalf("after restart count = %d, want %d", got, n)
	}
}

func TestAlarmResetsCounterOnVirtualClock(t *testing.T) {
	vc := clock.NewVirtual(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	f := startMemory(t, func(c *host.Config) {
		c.Clock = vc
	})
	for i := 0; i < 3; i++ {
		f.call(t, "x", "POST", "/increment")
	}
	if _, err := f.call(t, "x", "POST", "/reset-after?ms=2000"); err != nil {
		t.Fatal(err)
	}
	vc.Advance(1999 * time.Millisecond)
	if got := f.count(t, "x"); got != 3 {
		t.Fatalf("before the alarm count = %d, want 3", got)
	}
	vc.Advance(time.Millisecond)
	waitFor(t, func() bool { return f.count(t, "x") == 0 }, "alarm to reset the counter")
	if !strings.Contains(f.logs.String(), "counter reset by alarm") {
		t.Fatalf("guest log line missing from host log:\n%s", f.logs.String())
	}
}

func TestPersistedAlarmFiresAfterRestart(t *testing.T) {
	cfg := counterConfig(t, nil)
	f := start(t, cfg)
	f.call(t, "r", "POST", "/increment")
	if _, err := f.call(t, "r", "POST", "/reset-after?ms=300"); err != nil {
		t.Fatal(err)
	}
	f.h.Close(context.Background()) // the alarm has not fired yet
	time.Sleep(400 * time.Millisecond)
	f2 := start(t, cfg)
	waitFor(t, func() bool { return f2.count(t, "r") == 0 }, "overdue alarm to fire at boot")
}

func TestSpinningShardTimesOutOthersServe(t *testing.T) {
	f := start(t, counterConfig(t, func(c *host.Config) { c.EventTimeout = 300 * time.Millisecond }))
	f.call(t, "ok", "POST", "/increment")
	done := make(chan error, 1)
	go func() {
		_, err := f.call(t, "spinner", "POST", "/spin")
		done <- err
	}()
	// Other shards keep serving while one spins.
	for i := 0; i < 5; i++ {
		if _, err := f.call(t, "ok", "POST", "/increment"); err != nil {
			t.Fatalf("other shard failed while one spins: %v", err)
		}
	}
	err := <-done
	if !errors.Is(err, host.ErrTimeout) {
		t.Fatalf("spin error = %v, want ErrTimeout", err)
	}
	if st, code := host.ErrorStatus(err); st < 500 || code != "shard_timeout" {
		t.Fatalf("status %d %s", st, code)
	}
	// The spinning shard restarts from storage on its next event.
	if _, err := f.call(t, "spinner", "POST", "/increment"); err != nil {
		t.Fatalf("shard did not recover after timeout: %v", err)
	}
	if got := f.count(t, "ok"); got != 6 {
		t.Fatalf("ok count = %d, want 6", got)
	}
}

func TestPanickingShardIsContained(t *testing.T) {
	f := startMemory(t, nil)
	f.call(t, "p", "POST", "/increment")
	_, err := f.call(t, "p", "POST", "/panic")
	if !errors.Is(err, host.ErrTrap) {
		t.Fatalf("panic error = %v, want ErrTrap", err)
	}
	logs := f.logs.String()
	if !strings.Contains(logs, "panic requested by /panic") {
		t.Fatalf("guest panic message missing from host log:\n%s", logs)
	}
	if got := f.count(t, "p"); got != 1 {
		t.Fatalf("count after panic = %d, want 1 (state restored from storage)", got)
	}
}

func TestWrongABIVersionIsRefused(t *testing.T) {
	bad := testutil.Plugin(t, "host/testdata/plugins/badabi")
	cfg := counterConfig(t, func(c *host.Config) {
		c.Bindings = []host.Binding{{Name: "BAD", Module: bad}}
	})
	_, err := host.New(context.Background(), cfg)
	if err == nil || !errors.Is(err, host.ErrInvalidModule) || !strings.Contains(err.Error(), "ABI version 99") {
		t.Fatalf("host.New error = %v, want invalid module naming ABI version 99", err)
	}
	bin, _ := os.ReadFile(bad)
	if _, err := host.ValidateModule(context.Background(), bin, nil, testutil.CacheDir()); err == nil || !strings.Contains(err.Error(), "ABI version 99") {
		t.Fatalf("ValidateModule error = %v", err)
	}
}

func TestHTTPRoutes(t *testing.T) {
	f := startMemory(t, nil)
	srv := f.serve(t)
	do := func(method, path string) (int, string) { return testutil.Do(t, method, srv.URL+path, "") }
	if st, body := do("POST", "/do/COUNTER/web/increment"); st != 200 || !strings.Contains(body, `"count":1`) || !strings.Contains(body, `"version":"test"`) {
		t.Fatalf("increment: %d %s", st, body)
	}
	if st, body := do("GET", "/do/COUNTER/web/"); st != 200 || !strings.Contains(body, `"count":1`) {
		t.Fatalf("get: %d %s", st, body)
	}
	if st, body := do("GET", "/do/NOPE/web/"); st != 404 || !strings.Contains(body, "unknown_binding") {
		t.Fatalf("unknown binding: %d %s", st, body)
	}
	if st, body := do("GET", "/do/COUNTER/web/nope"); st != 404 || !strings.Contains(body, "not_found") {
		t.Fatalf("unknown shard route: %d %s", st, body)
	}
	if st, _ := do("GET", "/healthz"); st != 200 {
		t.Fatalf("healthz: %d", st)
	}
	if st, body := do("GET", "/elsewhere"); st != 404 || !strings.Contains(body, `"code":"not_found"`) {
		t.Fatalf("unknown route: %d %s", st, body)
	}
}

// TestDOKeyIsTheDecodedSegment: a key is its path segment percent-decoded,
// exactly. An encoded slash cannot reach another object, and an empty key
// is a 400, never a redirect to a shard of a shorter path.
func TestDOKeyIsTheDecodedSegment(t *testing.T) {
	f := startMemory(t, nil)
	srv := f.serve(t)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(method, path string) (int, string) {
		t.Helper()
		return testutil.DoWith(t, client, method, srv.URL+path, "")
	}
	if st, body := do("POST", "/do/COUNTER/victim%2Fattacker/increment"); st != 200 || !strings.Contains(body, `"count":1`) {
		t.Fatalf("increment victim%%2Fattacker: %d %s", st, body)
	}
	if got := f.count(t, "victim"); got != 0 {
		t.Fatalf("an encoded slash reached object victim: count %d", got)
	}
	if got := f.count(t, "victim/attacker"); got != 1 {
		t.Fatalf("object %q count %d, want 1", "victim/attacker", got)
	}
	if st, body := do("POST", "/do/COUNTER/caf%C3%A9%20x/increment"); st != 200 || f.count(t, "café x") != 1 {
		t.Fatalf("escaped key: %d %s", st, body)
	}
	for _, path := range []string{"/do/COUNTER//increment", "/do/COUNTER/", "/do/COUNTER", "/do/COUNTER/./increment", "/do/COUNTER/%2E%2E/increment"} {
		if st, body := do("POST", path); st != 400 || !strings.Contains(body, `"code":"bad_key"`) {
			t.Errorf("POST %s: %d %s, want 400 bad_key", path, st, body)
		}
	}
	if f.count(t, "increment") != 0 {
		t.Fatal("an empty key reached the object named after the rest of the path")
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, what, cond)
}

func TestTraceLogsHostCalls(t *testing.T) {
	f := startMemory(t, func(c *host.Config) {
		c.TraceShard = "COUNTER/traced"
	})
	f.call(t, "traced", "POST", "/increment")
	f.call(t, "quiet", "POST", "/increment")
	logs := f.logs.String()
	if !strings.Contains(logs, `"fn":"storage_get"`) || !strings.Contains(logs, `"fn":"storage_put"`) {
		t.Fatalf("trace of the traced shard missing:\n%s", logs)
	}
	if strings.Contains(logs, `"shard":"quiet","component":"trace"`) {
		t.Fatalf("untraced shard was traced:\n%s", logs)
	}
	if strings.Contains(logs, `"args":[`) {
		t.Fatalf("trace shows raw pointers instead of decoded arguments:\n%s", logs)
	}
}

func TestIdleShardsAreEvictedAndRestartFromStorage(t *testing.T) {
	f := start(t, counterConfig(t, func(c *host.Config) { c.IdleTimeout = 100 * time.Millisecond }))
	ns, _ := f.h.Namespace("COUNTER")
	for i := 0; i < 3; i++ {
		f.call(t, "idle", "POST", "/increment")
	}
	if len(ns.Stats()) != 1 {
		t.Fatalf("stats = %+v, want one live shard", ns.Stats())
	}
	waitFor(t, func() bool { return len(ns.Stats()) == 0 }, "idle shard to be evicted")
	if got := f.count(t, "idle"); got != 3 {
		t.Fatalf("count after eviction = %d, want 3", got)
	}
}

// TestTraceShowsDecodedArguments: a traced shard's host calls are logged in
// keys, values, times and errno names, not pointers — each line's message is
// the decoded call, with the raw result and the errno name as fields.
func TestTraceShowsDecodedArguments(t *testing.T) {
	vc := clock.NewVirtual(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	f := startMemory(t, func(c *host.Config) {
		c.Clock = vc
		c.TraceShard = "COUNTER/named"
	})
	f.call(t, "named", "GET", "/")
	f.call(t, "named", "POST", "/increment")
	f.call(t, "named", "POST", "/reset-after?ms=2500")
	var lines []string
	for _, l := range f.logs.Lines() {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["component"] == "trace" {
			lines = append(lines, m["message"].(string))
		}
	}
	for _, want := range []string{
		`storage_get key="count" → not found`,
		`storage_put key="count" value=1 byte "1" → ok`,
		`storage_get key="count" → 1 byte "1"`,
		`alarm_set at=2026-01-01T00:00:02.500Z → ok`,
	} {
		if !slices.Contains(lines, want) {
			t.Errorf("no trace line %q in:\n%s", want, strings.Join(lines, "\n"))
		}
	}
	// The raw result and the errno name stay as fields: i32 results
	// sign-extended.
	logs := f.logs.String()
	if !strings.Contains(logs, `"fn":"storage_get","result":-1,"errno":"not found"`) {
		t.Fatalf("trace of a missing key should show result -1 and errno not found:\n%s", logs)
	}
}

// TestSharedEngineMemoryLimitMismatchIsRefused: a host never quietly starts
// an engine of its own beside the one it was given — a memory cap the
// shared engine was not started with is an error at New.
func TestSharedEngineMemoryLimitMismatchIsRefused(t *testing.T) {
	cfg := memoryConfig(t, func(c *host.Config) {
		c.MemoryLimitMiB = 64 // testutil.Engine caps at the default 128
	})
	h, err := host.New(context.Background(), cfg)
	if err == nil {
		h.Close(context.Background())
		t.Fatal("host.New accepted a MemoryLimitMiB the shared engine does not have")
	}
	if !errors.Is(err, host.ErrEngineMismatch) {
		t.Fatalf("error %v, want ErrEngineMismatch", err)
	}
	for _, ok := range []int{0, 128} {
		cfg.MemoryLimitMiB = ok
		cfg.Storage = storage.NewMemory()
		f := start(t, cfg)
		if got := f.count(t, "k"); got != 0 {
			t.Fatalf("MemoryLimitMiB %d: count %d", ok, got)
		}
	}
}

// TestDOServerErrorsKeepDetailsInTheLog: a shard's crash answers 500 with a
// request id and no stack trace; the log has the details under that id.
func TestDOServerErrorsKeepDetailsInTheLog(t *testing.T) {
	f := startMemory(t, nil)
	srv := f.serve(t)
	resp, err := http.Post(srv.URL+"/do/COUNTER/a/panic", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	id := resp.Header.Get("X-Request-Id")
	if resp.StatusCode != 500 || !strings.Contains(string(b), `"code":"shard_crashed"`) || id == "" || !strings.Contains(string(b), id) {
		t.Fatalf("panic: %d %s (request id %q)", resp.StatusCode, b, id)
	}
	for _, leak := range []string{"wasm", "goroutine", "panic", ".go:"} {
		if strings.Contains(string(b), leak) {
			t.Fatalf("the error body leaks %q: %s", leak, b)
		}
	}
	waitFor(t, func() bool { return strings.Contains(f.logs.String(), `"request_id":"`+id+`"`) }, "the log line with the request id")
}

// TestStartSaysWhatItIsDoing: a start logs that it is loading (compiling)
// modules and each module as it is ready, with durations whose unit is in
// the field name (took_ms), instead of a silent cold start.
func TestStartSaysWhatItIsDoing(t *testing.T) {
	f := start(t, counterConfig(t, nil))
	logs := f.logs.String()
	for _, want := range []string{`"modules":1`, `loading modules`, `"message":"module ready"`, `"took_ms":`, `"binding":"COUNTER"`} {
		if !strings.Contains(logs, want) {
			t.Fatalf("start-up log lacks %s:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, `"took":`) {
		t.Fatalf("a duration without its unit:\n%s", logs)
	}
}
