package admin_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/host/admin"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/edgeshard/edgeshard/storage"
)

// chromium returns Debian's Chromium (scripts/deps.sh installs it), or
// skips the test when it is missing — except under CI=true, where a
// skipped browser test would be a test that cannot fail.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{os.Getenv("EDGESHARD_CHROMIUM"), "/usr/bin/chromium", "chromium", "chromium-browser"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is missing (CI=true): install it with scripts/deps.sh (apt-get install chromium)")
	}
	t.Skip("chromium is missing: install it with scripts/deps.sh (apt-get install chromium) to run the browser test")
	return ""
}

// TestInspectorInBrowser drives the inspector in headless Chromium: the
// login form, the bindings page, a binding's charts and shards (with a
// prefix search), a shard's storage and one of its values as JSON and hex,
// and its log tail after switching tracing on from the page. It saves a
// screenshot of each page in its artifact directory (go test -artifacts
// keeps them) and, when EDGESHARD_INSPECTOR_SHOTS names a directory
// (relative to the repository root, e.g. docs/inspector), there too.
func TestInspectorInBrowser(t *testing.T) {
	exe := chromium(t)
	start := time.Now()
	deadline := start.Add(55 * time.Second)

	// alice has a few entries of her own besides the counter's, seeded
	// before the host starts.
	seed := &storage.Batch{Shard: storage.ShardID{Namespace: "COUNTER", Name: "alice"}}
	for k, v := range map[string]string{
		"profile":            `{"name":"Alice","plan":"pro","since":"2026-03-14","limits":{"requests_per_minute":600,"burst":40},"tags":["beta","eu-west"]}`,
		"session:7f3a9c":     `{"ip":"203.0.113.7","agent":"curl/8.5.0","expires":1767225600000}`,
		"session:b81e02":     `{"ip":"198.51.100.23","agent":"Mozilla/5.0","expires":1767229200000}`,
		"window:1767225540":  "17",
		"window:1767225600":  "42",
		"blob:thumbnail.bin": "\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10",
	} {
		seed.Puts = append(seed.Puts, abi.KV{Key: k, Value: []byte(v)})
	}
	backend := storage.NewMemory()
	if err := backend.Apply([]*storage.Batch{seed}); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, admin.Options{SampleInterval: 500 * time.Millisecond, SampleWindow: 2 * time.Minute},
		func(c *host.Config) { c.Storage = backend })

	// A history to show: a push, and a refused one.
	if st, b := f.do(t, "PUT", "/admin/bindings/COUNTER/module", counterWasm(t, "v2"), nil); st != 200 {
		t.Fatalf("push: %d %s", st, b)
	}
	f.do(t, "PUT", "/admin/bindings/COUNTER/module", []byte("\x00asm\x01\x00\x00\x00 truncated"), nil)
	f.edgeCall(t, "POST", "/do/COUNTER/carol/reset-after?ms=600000")

	// Steady traffic for the charts and the trace.
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			for _, k := range []string{"alice", "bob", "carol"} {
				f.edgeCall(t, "POST", "/do/COUNTER/"+k+"/increment")
			}
			f.edgeCall(t, "POST", fmt.Sprintf("/do/SHARDED/key-%d/increment", i%16))
			if i%25 == 0 {
				f.edgeCall(t, "POST", "/do/COUNTER/bob/nope") // a 404 from the shard, not an error
			}
			time.Sleep(15 * time.Millisecond)
		}
	})
	defer func() { stop(); wg.Wait() }()

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true), chromedp.WindowSize(1360, 900), chromedp.Flag("hide-scrollbars", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	quiet := func(string, ...any) {}
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(quiet), chromedp.WithErrorf(quiet))
	defer cancelBrowser()
	if err := chromedp.Do(bctx); err != nil { // starts the browser, without a timeout (see chromedp.Run)
		t.Fatalf("start chromium: %v", err)
	}
	t.Logf("chromium started in %v", time.Since(start).Round(time.Millisecond))

	shotDirs := []string{t.ArtifactDir()}
	if d := os.Getenv("EDGESHARD_INSPECTOR_SHOTS"); d != "" {
		if !filepath.IsAbs(d) {
			d = filepath.Join(testutil.RepoRoot(), d)
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		shotDirs = append(shotDirs, d)
	}
	shot := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			png, err := chromedp.FullScreenshot(100)(ctx, tg)
			if err != nil {
				return err
			}
			for _, d := range shotDirs {
				if err := os.WriteFile(filepath.Join(d, name+".png"), png, 0o644); err != nil {
					return err
				}
			}
			return nil
		})
	}
	// until waits for a JavaScript expression to be true.
	until := func(expr string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(time.Until(deadline)), chromedp.WithPollingInterval(50*time.Millisecond))(ctx, tg)
			if err != nil {
				return fmt.Errorf("waiting for %s: %w", expr, err)
			}
			return nil
		})
	}
	eval := func(expr string) chromedp.Action[chromedp.Void] { return chromedp.Evaluate[chromedp.Void](expr) }
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }

	steps := []struct {
		name    string
		actions []chromedp.Action[chromedp.Void]
	}{
		{"the login form", []chromedp.Action[chromedp.Void]{
			chromedp.Navigate(f.admin.URL + "/"),
			chromedp.WaitVisible(css("#token")),
			shot("login"),
		}},
		{"log in: the bindings", []chromedp.Action[chromedp.Void]{
			chromedp.SendKeys(css("#token"), token),
			chromedp.Click(css("#login")),
			chromedp.WaitVisible(css(`#bindings tr[data-binding="COUNTER"]`)),
			chromedp.WaitVisible(css(`#bindings tr[data-binding="SHARDED"]`)),
			until(`document.querySelectorAll("table.history tbody tr td .pill.swapped").length === 1`),
			until(`Number(document.querySelector('canvas.spark[data-binding="COUNTER"]').dataset.points) >= 2`),
			shot("bindings"),
		}},
		{"a binding: charts and shards", []chromedp.Action[chromedp.Void]{
			chromedp.Click(css(`#bindings tr[data-binding="COUNTER"] a.binding-link`)),
			chromedp.WaitVisible(css(`#shards tr[data-shard="alice"]`)),
			until(`document.querySelectorAll("#shards tr[data-shard]").length === 3`),
			until(`Number(document.querySelector('canvas[data-series="rps"]').dataset.points) >= 3`),
			until(`Number(document.querySelector('canvas[data-series="p99_ms"]').dataset.points) >= 3`),
			until(`document.getElementById("module-sha").textContent.length === 64`),
			chromedp.SendKeys(css("#shard-search"), "b"),
			until(`[...document.querySelectorAll("#shards tr[data-shard]")].map(r => r.dataset.shard).join() === "bob"`),
			eval(`(() => { const s = document.getElementById("shard-search"); s.value = ""; s.dispatchEvent(new Event("input")); })()`),
			until(`document.querySelectorAll("#shards tr[data-shard]").length === 3`),
			shot("binding"),
		}},
		{"a shard: storage and a value", []chromedp.Action[chromedp.Void]{
			chromedp.Click(css(`#shards tr[data-shard="alice"] a.shard-link`)),
			chromedp.WaitVisible(css(`#entries tr[data-key="profile"]`)),
			until(`document.querySelectorAll("#entries tr[data-key]").length === 7`),
			chromedp.Click(css(`#entries tr[data-key="profile"]`)),
			until(`document.getElementById("value-content")?.dataset.view === "json" && JSON.parse(document.getElementById("value-content").textContent).limits.burst === 40`),
			chromedp.Click(css(`.tabs button[data-view="hex"]`)),
			until(`document.getElementById("value-content").textContent.startsWith("00000000  7b 22")`),
			chromedp.Click(css(`#entries tr[data-key="blob:thumbnail.bin"]`)),
			until(`document.getElementById("value-key")?.textContent === "blob:thumbnail.bin" && document.getElementById("value-content").dataset.view === "hex"`),
			chromedp.SendKeys(css("#storage-prefix"), "session:\n"),
			until(`[...document.querySelectorAll("#entries tr[data-key]")].map(r => r.dataset.key).join() === "session:7f3a9c,session:b81e02"`),
			eval(`(() => { const p = document.getElementById("storage-prefix"); p.value = ""; p.dispatchEvent(new Event("change")); })()`),
			until(`document.querySelectorAll("#entries tr[data-key]").length === 7`),
			chromedp.Click(css(`#entries tr[data-key="profile"]`)),
			until(`document.getElementById("value-content")?.dataset.view === "json"`),
		}},
		{"its log tail, tracing switched on", []chromedp.Action[chromedp.Void]{
			until(`document.getElementById("trace-toggle").dataset.on === "false"`),
			chromedp.Click(css("#trace-toggle")),
			until(`document.getElementById("trace-toggle").dataset.on === "true"`),
			until(`document.querySelectorAll('#log li[data-source="trace"]').length >= 5`),
			shot("shard"),
		}},
	}
	for _, st := range steps {
		t0 := time.Now()
		sctx, cancel := context.WithDeadline(bctx, deadline)
		err := chromedp.Do(sctx, st.actions...)
		cancel()
		if err != nil {
			t.Fatalf("%s: %v (after %v)", st.name, err, time.Since(start).Round(time.Millisecond))
		}
		t.Logf("%-36s %v", st.name, time.Since(t0).Round(time.Millisecond))
	}
	ns, _ := f.h.Namespace("COUNTER")
	if !ns.Tracing("alice") || ns.Tracing("bob") {
		t.Fatal("the page's switch did not trace alice alone")
	}
	t.Logf("browser test took %v; screenshots in %v", time.Since(start).Round(time.Millisecond), shotDirs)
}
