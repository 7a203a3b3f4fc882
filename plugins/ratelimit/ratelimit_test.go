//go:build !wasip1

package main_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/conformance"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/edgeshard/edgeshard/plugins/internal/plugintest"
)

const binding = "RATE_LIMIT_SHARD"

func start(t *testing.T) *plugintest.Fixture {
	t.Helper()
	return plugintest.New(t, plugintest.Options{Plugin: "plugins/ratelimit", Binding: binding})
}

// bucketResult is one entry of the "buckets" array.
type bucketResult map[string]any

func buckets(t *testing.T, r plugintest.Resp) []bucketResult {
	t.Helper()
	raw, ok := r.JSON["buckets"].([]any)
	if !ok {
		t.Fatalf("no buckets in %s", r.Body)
	}
	out := make([]bucketResult, len(raw))
	for i, b := range raw {
		out[i] = b.(map[string]any)
	}
	return out
}

func (b bucketResult) int(name string) int64 { v, _ := b[name].(float64); return int64(v) }

func check(t *testing.T, f *plugintest.Fixture, body string) plugintest.Resp {
	t.Helper()
	key, _, _ := strings.Cut(body, "\t")
	r := f.Fetch(t, key, "POST", "/check", body)
	if r.Status != 200 {
		t.Fatalf("check %q: %d %s", body, r.Status, r.Body)
	}
	return r
}

var startMs = plugintest.Start.UnixMilli()

func TestLimitRemainingAndRetryAfter(t *testing.T) {
	f := start(t)
	for i := 1; i <= 3; i++ {
		r := check(t, f, "user:alice\t3\t60000\n")
		b := buckets(t, r)[0]
		if r.JSON["allowed"] != true || b.int("remaining") != int64(3-i) || b.int("retry_after_ms") != 0 {
			t.Fatalf("request %d: %s", i, r.Body)
		}
	}
	f.Clock.Advance(500 * time.Millisecond)
	r := check(t, f, "user:alice\t3\t60000\n")
	want := fmt.Sprintf(`{"allowed":false,"buckets":[{"key":"user:alice","allowed":false,"limit":3,"remaining":0,"window_ms":60000,"reset_ms":%d,"retry_after_ms":79500}]}`, startMs+60000)
	if r.Body != want {
		t.Fatalf("denied response\n got %s\nwant %s", r.Body, want)
	}
	// In the next window the 3 earlier requests weigh 3·(1 − e/W): one more
	// fits once that is ≤ 2, i.e. e ≥ 20 s.
	f.Clock.Advance(79499 * time.Millisecond)
	r = check(t, f, "user:alice\t3\t60000\n")
	if b := buckets(t, r)[0]; r.JSON["allowed"] != false || b.int("retry_after_ms") != 1 {
		t.Fatalf("1 ms before the retry time: %s", r.Body)
	}
	f.Clock.Advance(time.Millisecond)
	r = check(t, f, "user:alice\t3\t60000\n")
	if b := buckets(t, r)[0]; r.JSON["allowed"] != true || b.int("reset_ms") != startMs+120000 {
		t.Fatalf("at the retry time: %s", r.Body)
	}
}

func TestWindowSlides(t *testing.T) {
	f := start(t)
	for i := 0; i < 10; i++ {
		check(t, f, "ip:10.0.0.1\t10\t10000\n")
	}
	if r := check(t, f, "ip:10.0.0.1\t10\t10000\n"); r.JSON["allowed"] != false {
		t.Fatalf("11th request allowed: %s", r.Body)
	}
	// 2.5 s into the next window: 10·0.75 = 7.5 used, two more fit.
	f.Clock.Advance(12500 * time.Millisecond)
	for i := 0; i < 2; i++ {
		if r := check(t, f, "ip:10.0.0.1\t10\t10000\n"); r.JSON["allowed"] != true {
			t.Fatalf("request %d after sliding: %s", i, r.Body)
		}
	}
	r := check(t, f, "ip:10.0.0.1\t10\t10000\n")
	if r.JSON["allowed"] != false {
		t.Fatalf("third request after sliding allowed: %s", r.Body)
	}
	st := f.Fetch(t, "ip:10.0.0.1", "GET", "/bucket?key=ip:10.0.0.1", "")
	if st.Status != 200 || st.Int("count") != 2 || st.Int("prev_count") != 10 || st.JSON["estimate"] != 9.5 || st.Int("window_start_ms") != startMs+10000 {
		t.Fatalf("bucket state: %s", st.Body)
	}
	// Two windows later nothing weighs any more.
	f.Clock.Advance(20 * time.Second)
	if r := check(t, f, "ip:10.0.0.1\t10\t10000\t10\n"); r.JSON["allowed"] != true {
		t.Fatalf("full-cost request two windows later: %s", r.Body)
	}
}

func TestBucketsOfOneCallAreAtomic(t *testing.T) {
	f := start(t)
	call := "user:bob\t5\t60000\nip:1.2.3.4\t2\t60000\nhost:example.com\t100\t60000\t3\n"
	for i := 0; i < 2; i++ {
		if r := check(t, f, call); r.JSON["allowed"] != true {
			t.Fatalf("call %d: %s", i, r.Body)
		}
	}
	r := check(t, f, call)
	bs := buckets(t, r)
	if r.JSON["allowed"] != false || bs[0]["allowed"] != true || bs[1]["allowed"] != false || bs[2]["allowed"] != true {
		t.Fatalf("third call: %s", r.Body)
	}
	if bs[0].int("retry_after_ms") != 0 || bs[1].int("retry_after_ms") <= 0 || bs[2].int("remaining") != 94 {
		t.Fatalf("third call details: %s", r.Body)
	}
	// Nothing was counted by the denied call.
	for key, want := range map[string]int64{"user:bob": 2, "ip:1.2.3.4": 2, "host:example.com": 6} {
		st := f.Fetch(t, "user:bob", "GET", "/bucket?key="+key, "")
		if st.Int("count") != want {
			t.Fatalf("%s count = %d, want %d: %s", key, st.Int("count"), want, st.Body)
		}
	}
	// The allowed bucket still has room on its own.
	if r := check(t, f, "user:bob\t5\t60000\n"); r.JSON["allowed"] != true || buckets(t, r)[0].int("remaining") != 2 {
		t.Fatalf("user bucket alone: %s", r.Body)
	}
}

func TestBadRequests(t *testing.T) {
	f := start(t)
	f.WantRefused(t, "user:a", "/check", []plugintest.Refusal{
		{Body: "", Code: "empty_body"},
		{Body: "user:a\t10\n", Code: "bad_line", Where: "line 1"},
		{Body: "user:a\t10\t60000\nuser:b\t0\t60000\n", Code: "bad_limit", Where: "line 2"},
		{Body: "user:a\t10\t999\n", Code: "bad_window", Where: "line 1"},
		{Body: "user:a\t10\t60000\t11\n", Code: "bad_cost", Where: "line 1"},
		{Body: "user:a\t10\t60000\t0\n", Code: "bad_cost", Where: "line 1"},
		{Body: "user:a\tten\t60000\n", Code: "bad_limit", Where: "line 1"},
		{Body: "\t10\t60000\n", Code: "bad_key", Where: "line 1"},
		{Body: "user:a\t10\t60000\n\nuser:a\t5\t1000\n", Code: "duplicate_key", Where: "line 3"},
		{Body: "user:a\t10\t60000\t1\tx\n", Code: "bad_line", Where: "line 1"},
	})
	var many strings.Builder
	for i := 0; i < 129; i++ {
		fmt.Fprintf(&many, "k%d\t10\t60000\n", i)
	}
	if r := f.Fetch(t, "k", "POST", "/check", many.String()); r.Status != 400 || r.Code() != "too_many_buckets" {
		t.Errorf("129 buckets: %d %s", r.Status, r.Body)
	}
	if r := f.Fetch(t, "k", "GET", "/check", ""); r.Status != 405 || r.Code() != "method_not_allowed" {
		t.Errorf("GET /check: %d %s", r.Status, r.Body)
	}
	if r := f.Fetch(t, "k", "GET", "/nope", ""); r.Status != 404 || r.Code() != "not_found" {
		t.Errorf("GET /nope: %d %s", r.Status, r.Body)
	}
	if r := f.Fetch(t, "k", "GET", "/bucket?key=user:zed", ""); r.Status != 404 || r.Code() != "bucket_not_found" {
		t.Errorf("unknown bucket: %d %s", r.Status, r.Body)
	}
	if r := f.Fetch(t, "k", "GET", "/bucket", ""); r.Status != 400 || r.Code() != "bad_key" {
		t.Errorf("bucket without key: %d %s", r.Status, r.Body)
	}
	// Nothing was stored by any refused call.
	if n := len(f.Storage(t, "user:a")); n != 0 {
		t.Errorf("refused calls stored %d keys", n)
	}
}

func TestWindowChangeRestartsBucket(t *testing.T) {
	f := start(t)
	check(t, f, "user:c\t1\t60000\n")
	if r := check(t, f, "user:c\t1\t60000\n"); r.JSON["allowed"] != false {
		t.Fatalf("second request allowed: %s", r.Body)
	}
	if r := check(t, f, "user:c\t1\t1000\n"); r.JSON["allowed"] != true {
		t.Fatalf("new window length did not restart the bucket: %s", r.Body)
	}
}

func TestCleanupAlarmDeletesIdleBuckets(t *testing.T) {
	f := start(t)
	check(t, f, "user:d\t5\t10000\n")
	if in := f.AlarmIn(t, "user:d"); in != 20001*time.Millisecond {
		t.Fatalf("cleanup alarm in %v, want 20.001s (two windows after the last request)", in)
	}
	// A bucket with a shorter window moves the alarm earlier.
	f.Fetch(t, "user:d", "POST", "/check", "user:e\t5\t1000\n")
	if in := f.AlarmIn(t, "user:d"); in != 2001*time.Millisecond {
		t.Fatalf("alarm in %v after a 1 s bucket, want 2.001s", in)
	}
	f.Advance(t, "user:d", 2001*time.Millisecond)
	st := f.Storage(t, "user:d")
	if _, ok := st["b:user:e"]; ok {
		t.Fatalf("idle 1 s bucket survived: %v", st)
	}
	if _, ok := st["b:user:d"]; !ok {
		t.Fatalf("active bucket deleted: %v", st)
	}
	// Re-armed for the remaining bucket: expiry at start+20.001s.
	if at, ok := f.Alarm(t, "user:d"); !ok || at.UnixMilli() != startMs+20001 {
		t.Fatalf("re-armed alarm %v %v, want start+20.001s", at, ok)
	}
	// Activity postpones the deletion; the sweep re-arms instead.
	f.Clock.Advance(8 * time.Second)
	check(t, f, "user:d\t5\t10000\n") // last = start+10.001s
	f.Advance(t, "user:d", 10*time.Second)
	if _, ok := f.Storage(t, "user:d")["b:user:d"]; !ok {
		t.Fatal("bucket used 10 s ago was deleted")
	}
	if at, ok := f.Alarm(t, "user:d"); !ok || at.UnixMilli() != startMs+10001+20001 {
		t.Fatalf("alarm %v %v, want start+30.002s", at.Sub(plugintest.Start), ok)
	}
	f.Advance(t, "user:d", 30*time.Second)
	if n := len(f.Storage(t, "user:d")); n != 0 {
		t.Fatalf("%d keys left after the sweep", n)
	}
	if _, ok := f.Alarm(t, "user:d"); ok {
		t.Fatal("alarm still set with no buckets left")
	}
}

func TestCountsSurviveInstanceRestart(t *testing.T) {
	f := start(t)
	check(t, f, "user:r\t2\t60000\n")
	check(t, f, "user:r\t2\t60000\n")
	if err := f.NS.Restart(t.Context(), f.Shard(t, "user:r")); err != nil {
		t.Fatal(err)
	}
	if r := check(t, f, "user:r\t2\t60000\n"); r.JSON["allowed"] != false {
		t.Fatalf("after restart: %s", r.Body)
	}
}

func TestConformanceSuite(t *testing.T) {
	wasm := testutil.Plugin(t, "plugins/ratelimit")
	conformance.Run(t, wasm, "conformance.json", conformance.Options{Schema: plugintest.Schema(t)})
}
