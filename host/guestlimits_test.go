package host_test

// The limits on what a plugin may make the host do (host.Limits): each is
// met by a hostile guest (testdata/hostile/hog, testdata/hostile/alarm)
// that asks for far more, and must get exactly the limit, a clear errno,
// one warning per event and a metric.

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/host/clock"
	"github.com/edgeshard/edgeshard/host/internal/wasm/wasmtest"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/prometheus/client_golang/prometheus"
)

// hogBinding is a binding serving the hostile hog plugin.
func hogBinding(t *testing.T, name string, mutate func(*host.Binding)) host.Binding {
	b := host.Binding{Name: name, Module: testutil.Plugin(t, "host/testdata/hostile/hog")}
	if mutate != nil {
		mutate(&b)
	}
	return b
}

// ask sends one request to a shard of binding and returns its body.
func (f *fixture) ask(t *testing.T, binding, shard, method, path string) string {
	t.Helper()
	resp, err := f.h.Fetch(context.Background(), binding, shard, &abi.Request{Method: method, Path: path})
	if err != nil {
		t.Fatalf("%s %s on %s/%s: %v", method, path, binding, shard, err)
	}
	return string(resp.Body)
}

// limitWarnings returns the host's warnings about limit on binding.
func limitWarnings(f *fixture, binding, limit string) []map[string]any {
	return f.logs.Records(func(m map[string]any) bool {
		return m["binding"] == binding && m["limit"] == limit && m["component"] != "guest"
	})
}

// counterValue returns the value of a counter of reg with the labels.
func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// TestHostileWriterStopsAtTheEventBudget: one event putting 8,000 values
// of 128 KiB (1 GB; it took the host from 0.5 to 3.2 GB of RSS) is
// refused once it has written event_write_bytes (16 MiB: 127 puts), with
// ErrnoLimit, in every event; the host allocates a bounded amount for it.
// A guest writing 20,000 empty keys stops at event_write_keys (10,000).
func TestHostileWriterStopsAtTheEventBudget(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := startMemory(t, func(c *host.Config) {
		c.Registerer = reg
		c.Bindings = append(c.Bindings, hogBinding(t, "HOG", nil))
	})
	for ev := 0; ev < 3; ev++ {
		var body string
		alloc := wasmtest.AllocBytes(func() { body = f.ask(t, "HOG", "h", "POST", "/overwrite?n=8000&size=131072") })
		if want := "written=127 errno=13 storage.put: event limit exceeded: storage_put of 131073 bytes refused: this event already wrote 16646271 bytes; event_write_bytes is 16777216"; body != want {
			t.Fatalf("event %d: %q, want %q", ev, body, want)
		}
		if alloc > 512<<20 {
			t.Fatalf("event %d: the host allocated %d MiB for it", ev, alloc>>20)
		}
	}
	if n := len(limitWarnings(f, "HOG", "event_write_bytes")); n != 3 {
		t.Fatalf("%d warnings, want one per event", n)
	}
	if body := f.ask(t, "HOG", "keys", "POST", "/fill?prefix=k&n=20000&size=0"); !strings.HasPrefix(body, "written=10000 errno=13 ") ||
		!strings.Contains(body, "event_write_keys is 10000") {
		t.Fatalf("fill: %q", body)
	}
	if got := counterValue(t, reg, "edgeshard_guest_limit_refusals_total", map[string]string{"binding": "HOG", "limit": "event_write_bytes"}); got != 3 {
		t.Fatalf("refusals counted %v, want 3", got)
	}
	(&healthy{f: f}).check(t)
}

// TestHostileLoggerStopsAtTheLogBudget: a request logging 20,000 lines
// gets event_log_lines (100) into the host log, then ErrnoLimit; the host
// warns once.
func TestHostileLoggerStopsAtTheLogBudget(t *testing.T) {
	f := startMemory(t, func(c *host.Config) {
		c.Bindings = append(c.Bindings, hogBinding(t, "HOG", nil))
	})
	if body := f.ask(t, "HOG", "h", "POST", "/log?n=20000"); body != "written=100 errno=13 log: event limit exceeded" {
		t.Fatalf("%q", body)
	}
	lines := f.logs.Records(func(m map[string]any) bool {
		return m["component"] == "guest" && strings.HasPrefix(fmt.Sprint(m["message"]), "hog line")
	})
	if len(lines) != 100 {
		t.Fatalf("%d guest lines logged, want 100", len(lines))
	}
	if w := limitWarnings(f, "HOG", "event_log_lines"); len(w) != 1 || !strings.Contains(fmt.Sprint(w[0]["detail"]), "event_log_lines is 100") {
		t.Fatalf("warnings %v", w)
	}
	t.Run("bytes", func(t *testing.T) {
		f := startMemory(t, func(c *host.Config) {
			c.Bindings = append(c.Bindings, hogBinding(t, "HOG", func(b *host.Binding) { b.Limits = &host.Limits{EventLogBytes: 100, EventLogLines: -1} }))
		})
		// Each record is 4+10 (message) + 4 (no fields) = 18 or 19 bytes.
		if body := f.ask(t, "HOG", "h", "POST", "/log?n=20000"); body != "written=5 errno=13 log: event limit exceeded" {
			t.Fatalf("%q", body)
		}
	})
}

// TestGuestLogLinesCannotForge: a guest's record cannot pass for the
// host's: the host's level, message, component, binding and shard appear
// once each, the guest's versions of them under guest_*; its code is
// logged as code (and counted) only when the binding's LogCodes allow it,
// else as guest_code (counted as "unlisted"); a record has one code.
func TestGuestLogLinesCannotForge(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := startMemory(t, func(c *host.Config) {
		c.Registerer = reg
		c.Bindings = append(c.Bindings,
			hogBinding(t, "ALL", nil), // LogCodes nil: every code
			hogBinding(t, "LISTED", func(b *host.Binding) { b.LogCodes = []string{"E-VIBECODR-21*"} }),
			hogBinding(t, "NONE", func(b *host.Binding) { b.LogCodes = []string{} }),
		)
	})
	for _, tc := range []struct {
		binding, shard, claims string
		code                   any // the code field, nil for none
		guestShard             any
	}{
		{"ALL", "s", "OTHER/1", "E-VIBECODR-2131", "OTHER/1"},
		{"LISTED", "s", "OTHER/1", "E-VIBECODR-2131", "OTHER/1"},
		{"NONE", "s", "OTHER/1", nil, "OTHER/1"},
		{"NONE", "t", "NONE/t", nil, nil}, // its own name: kept as shard
	} {
		t.Run(tc.binding+" "+tc.claims, func(t *testing.T) {
			f.ask(t, tc.binding, tc.shard, "POST", "/forge?shard="+tc.claims)
			var line string
			for _, l := range strings.Split(f.logs.String(), "\n") {
				if strings.Contains(l, `"message":"forged"`) && strings.Contains(l, `"binding":"`+tc.binding+`"`) && strings.Contains(l, `"guest_shard":"`+tc.claims+`"`) == (tc.guestShard != nil) {
					line = l
				}
			}
			if line == "" {
				t.Fatalf("no forged line of %s in\n%s", tc.binding, f.logs.String())
			}
			for key, n := range map[string]int{`"level":`: 1, `"message":`: 1, `"component":`: 1, `"binding":`: 1, `"shard":`: 1, `"time":`: 0} {
				if got := strings.Count(line, key); got != n {
					t.Errorf("%s appears %d times, want %d: %s", key, got, n, line)
				}
			}
			wantCodes := 0
			if tc.code != nil {
				wantCodes = 1
			}
			if got := strings.Count(line, `"code":`); got != wantCodes {
				t.Errorf(`"code": appears %d times, want %d: %s`, got, wantCodes, line)
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatal(err)
			}
			want := map[string]any{
				"level": "info", "message": "forged", "component": "guest", "binding": tc.binding, "shard": tc.shard,
				"code": tc.code, "guest_shard": tc.guestShard, "guest_level": "error", "guest_time": "0",
				"guest_message": "m", "guest_component": "host", "guest_binding": "OTHER", "guest_guest_code": "g", "k": "v",
			}
			if tc.claims == tc.binding+"/"+tc.shard {
				want["shard"] = tc.claims
			}
			for k, v := range want {
				if m[k] != v {
					t.Errorf("%s = %v, want %v: %s", k, m[k], v, line)
				}
			}
		})
	}
	for _, c := range []struct {
		binding, code string
		want          float64
	}{
		{"ALL", "E-VIBECODR-2131", 1}, {"ALL", "unlisted", 0},
		{"LISTED", "E-VIBECODR-2131", 1}, {"LISTED", "unlisted", 1},
		{"NONE", "E-VIBECODR-2131", 0}, {"NONE", "unlisted", 2}, // once per record
	} {
		if got := counterValue(t, reg, "edgeshard_guest_log_codes_total", map[string]string{"binding": c.binding, "code": c.code}); got != c.want {
			t.Errorf("edgeshard_guest_log_codes_total{binding=%s,code=%s} = %v, want %v", c.binding, c.code, got, c.want)
		}
	}
}

// quotaBinding is the hog with a storage quota of quota bytes.
func quotaBinding(t *testing.T, quota int64) host.Binding {
	return hogBinding(t, "HOG", func(b *host.Binding) { b.Limits = &host.Limits{StorageQuotaBytes: quota} })
}

// restart closes f's host and starts one on the same data with binding.
func restart(t *testing.T, f *fixture, b host.Binding) *fixture {
	t.Helper()
	if err := f.h.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	cfg := f.cfg
	cfg.Bindings = []host.Binding{cfg.Bindings[0], b}
	return start(t, cfg)
}

// TestStorageQuota: a shard stores at most storage_quota_bytes of keys
// and values; a write past it answers ErrnoQuota and changes nothing,
// deleting makes room, shrinking is always allowed; the count survives a
// restart and does not move for an event that crashed; the guest and the
// inspector never see the key that holds it.
func TestStorageQuota(t *testing.T) {
	f := start(t, counterConfig(t, func(c *host.Config) { c.Bindings = append(c.Bindings, quotaBinding(t, 10_000)) }))
	const quotaErr = "errno=14 storage.put: storage quota exceeded: storage quota: the shard stores"
	// Keys a0..a8 of 2 bytes with 1000-byte values: 9 × 1002 = 9018 bytes.
	if body := f.ask(t, "HOG", "q", "POST", "/fill?prefix=a&n=20&size=1000"); !strings.HasPrefix(body, "written=9 "+quotaErr+" 9018 bytes; 1002 more would exceed storage_quota_bytes = 10000") {
		t.Fatalf("fill: %q", body)
	}
	if w := limitWarnings(f, "HOG", "storage_quota_bytes"); len(w) != 1 {
		t.Fatalf("%d quota warnings, want 1", len(w))
	}
	key := hex.EncodeToString([]byte(host.StoredKey))
	if body := f.ask(t, "HOG", "q", "POST", "/reserved?key="+key); !strings.HasPrefix(body, "2,2,2,0,") || strings.Contains(body, key) {
		t.Fatalf("the guest reached the reserved key: %q", body)
	}
	ns, _ := f.h.Namespace("HOG")
	err := ns.Inspect(context.Background(), "q", func(st host.StorageView) {
		kvs, err := st.List(abi.ListOptions{})
		if err != nil || len(kvs) != 9 {
			t.Errorf("inspector lists %d keys (%v), want the 9 of the guest", len(kvs), err)
		}
		if _, found, _ := st.Get(host.StoredKey); found {
			t.Error("the inspector shows the reserved key")
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	// A crashed event's writes are not counted.
	if _, err := f.h.Fetch(context.Background(), "HOG", "q", &abi.Request{Method: "POST", Path: "/fill?prefix=z&n=3&size=100&crash=1"}); err == nil {
		t.Fatal("the crashing fill did not crash")
	}
	if body := f.ask(t, "HOG", "q", "POST", "/fill?prefix=c&n=1&size=900"); body != "written=1 errno=0" {
		t.Fatalf("fill after the crash: %q (the crashed event was counted?)", body)
	}
	// 9018 + 902 = 9920 stored: 102 more do not fit, after a restart too.
	f = restart(t, f, quotaBinding(t, 10_000))
	if body := f.ask(t, "HOG", "q", "POST", "/fill?prefix=d&n=1&size=100"); !strings.HasPrefix(body, "written=0 "+quotaErr+" 9920 bytes;") {
		t.Fatalf("after a restart: %q", body)
	}
	if body := f.ask(t, "HOG", "q", "POST", "/delete?prefix=a"); body != "written=9 errno=0" {
		t.Fatalf("delete: %q", body)
	}
	if body := f.ask(t, "HOG", "q", "POST", "/fill?prefix=d&n=1&size=100"); body != "written=1 errno=0" {
		t.Fatalf("after deleting: %q", body)
	}
	// Over a lowered quota, a shrinking write passes and a growing one not.
	// c0 (902 bytes) and d0 (102) are stored; the quota is lowered to 100.
	f = restart(t, f, quotaBinding(t, 100))
	if body := f.ask(t, "HOG", "q", "POST", "/fill?prefix=c&n=1&size=10"); body != "written=1 errno=0" {
		t.Fatalf("shrinking over the quota: %q", body)
	}
	if body := f.ask(t, "HOG", "q", "POST", "/fill?prefix=e&n=1&size=10"); !strings.HasPrefix(body, "written=0 errno=14 ") {
		t.Fatalf("growing over the quota: %q", body)
	}
}

// TestStorageQuotaOverwritesDoNotAddUp: below half its quota a shard's
// count is an upper bound that adds every put in full (no read of the
// value it replaces); overwriting one key of 1,000 bytes 100 times, in
// one event and in 100 events — 10 times the quota of 10,000 bytes —
// must never be refused: the bound is recounted before it could refuse.
func TestStorageQuotaOverwritesDoNotAddUp(t *testing.T) {
	f := start(t, counterConfig(t, func(c *host.Config) { c.Bindings = append(c.Bindings, quotaBinding(t, 10_000)) }))
	if body := f.ask(t, "HOG", "q", "POST", "/overwrite?n=100&size=1000"); body != "written=100 errno=0" {
		t.Fatalf("one event: %q", body)
	}
	for i := 0; i < 100; i++ {
		if body := f.ask(t, "HOG", "q", "POST", "/overwrite?n=1&size=1000"); body != "written=1 errno=0" {
			t.Fatalf("event %d: %q", i, body)
		}
	}
	// 1001 stored: 8 keys of 1002 more fit (9017), the ninth not.
	if body := f.ask(t, "HOG", "q", "POST", "/fill?prefix=a&n=20&size=1000"); !strings.HasPrefix(body, "written=8 errno=14 ") {
		t.Fatalf("fill: %q", body)
	}
}

// TestStorageQuotaCountsShardsWrittenWithoutIt: a shard written with the
// quota off (before it existed, or turned off since) is counted once on
// its next write with the quota on, so the quota holds at once.
func TestStorageQuotaCountsShardsWrittenWithoutIt(t *testing.T) {
	f := start(t, counterConfig(t, func(c *host.Config) { c.Bindings = append(c.Bindings, quotaBinding(t, -1)) }))
	if body := f.ask(t, "HOG", "q", "POST", "/fill?prefix=a&n=20&size=1000"); body != "written=20 errno=0" {
		t.Fatalf("without a quota: %q", body)
	}
	f = restart(t, f, quotaBinding(t, 10_000))
	if body := f.ask(t, "HOG", "q", "POST", "/fill?prefix=b&n=1&size=1"); !strings.HasPrefix(body, "written=0 errno=14 ") || !strings.Contains(body, "stores 20050 bytes") {
		t.Fatalf("first write under the quota: %q", body)
	}
	if body := f.ask(t, "HOG", "q", "POST", "/delete?prefix=a"); body != "written=20 errno=0" {
		t.Fatalf("delete: %q", body)
	}
	if body := f.ask(t, "HOG", "q", "POST", "/fill?prefix=c&n=5&size=1000"); body != "written=5 errno=0" {
		t.Fatalf("fill: %q", body)
	}
	// Off again: the count (5010) is dropped, not left to go stale.
	f = restart(t, f, quotaBinding(t, -1))
	if body := f.ask(t, "HOG", "q", "POST", "/fill?prefix=d&n=5&size=1000"); body != "written=5 errno=0" {
		t.Fatalf("fill without a quota: %q", body)
	}
	f = restart(t, f, quotaBinding(t, 10_000))
	if body := f.ask(t, "HOG", "q", "POST", "/fill?prefix=e&n=1&size=1"); !strings.Contains(body, "stores 10020 bytes") {
		t.Fatalf("recounted: %q", body)
	}
}

// TestAlarmRearmIsPaced: an alarm handler that sets its alarm again for
// now (on the real host it fired 29,948 times in 20 s) runs a burst of
// alarm_rearm_burst (10) re-arms, then one per alarm_rearm_interval
// (100 ms): the alarm it sets is moved later, alarm_get shows where, and
// the host warns once. A handler re-arming one interval ahead or more is
// not paced.
func TestAlarmRearmIsPaced(t *testing.T) {
	vc := clock.NewVirtual(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	reg := prometheus.NewRegistry()
	f := startMemory(t, func(c *host.Config) {
		c.Clock = vc
		c.Registerer = reg
		c.Bindings = append(c.Bindings, host.Binding{Name: "ALARM", Module: testutil.Plugin(t, "host/testdata/hostile/alarm")})
	})
	ns, _ := f.h.Namespace("ALARM")
	runs := func(shard string) int {
		return len(f.logs.Records(func(m map[string]any) bool { return m["shard"] == shard && m["message"] == "hostile alarm ran" }))
	}
	arm := func(shard, mode string) time.Time {
		at := vc.Now().Add(time.Second)
		f.ask(t, "ALARM", shard, "POST", fmt.Sprintf("/arm?mode=%s&at=%d", mode, at.UnixMilli()))
		return at
	}
	// tick moves the clock to t and waits for the alarms due by then.
	tick := func(shard string, to time.Time) {
		for i := 0; i < 3; i++ {
			vc.Set(to)
			f.ask(t, "ALARM", shard, "GET", "/") // queued behind a due alarm
		}
	}

	at := arm("loop", "rearm")
	for i := 0; i < 20; i++ {
		tick("loop", at)
	}
	if n := runs("loop"); n != 11 {
		t.Fatalf("%d runs at one instant, want 11 (the armed one and a burst of 10)", n)
	}
	if next, ok := ns.AlarmAt("loop"); !ok || !next.Equal(at.Add(100*time.Millisecond)) {
		t.Fatalf("next alarm at %v (%v), want %v", next, ok, at.Add(100*time.Millisecond))
	}
	for i := 1; i <= 5; i++ {
		tick("loop", at.Add(time.Duration(i)*100*time.Millisecond))
	}
	if n := runs("loop"); n != 16 {
		t.Fatalf("%d runs after 500 ms more, want 16 (one per 100 ms)", n)
	}
	if w := limitWarnings(f, "ALARM", "alarm_rearm_interval"); len(w) != 1 {
		t.Fatalf("%d pacing warnings, want 1", len(w))
	}
	if got := counterValue(t, reg, "edgeshard_guest_limit_refusals_total", map[string]string{"binding": "ALARM", "limit": "alarm_rearm_interval"}); got != 6 {
		t.Fatalf("%v re-arms counted as paced, want 6", got)
	}

	at = arm("slow", "rearm-1s")
	for i := 0; i < 15; i++ {
		tick("slow", at.Add(time.Duration(i)*time.Second))
	}
	if n := runs("slow"); n != 15 {
		t.Fatalf("a handler re-arming 1 s ahead ran %d times in 15 s, want 15", n)
	}
	(&healthy{f: f}).check(t)
}

// TestAlarmRearmIsPacedOnTheRealClock: the same loop on the real clock
// runs about ten times a second, not thousands.
func TestAlarmRearmIsPacedOnTheRealClock(t *testing.T) {
	f := startMemory(t, func(c *host.Config) {
		c.Bindings = append(c.Bindings, host.Binding{Name: "ALARM", Module: testutil.Plugin(t, "host/testdata/hostile/alarm")})
	})
	runs := func() int {
		return len(f.logs.Records(func(m map[string]any) bool { return m["message"] == "hostile alarm ran" }))
	}
	f.ask(t, "ALARM", "loop", "POST", fmt.Sprintf("/arm?mode=rearm&at=%d", time.Now().UnixMilli()))
	deadline := time.Now().Add(10 * time.Second)
	for runs() < 11 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	before := runs()
	time.Sleep(time.Second)
	if n := runs() - before; n > 12 {
		t.Fatalf("%d alarm runs in one second, want at most 12 (one per 100 ms)", n)
	}
}
