package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestDrainCLI: `edgeshard drain` passes --wait on, prints the report and
// exits 0 only when every buffer shard is empty.
func TestDrainCLI(t *testing.T) {
	empty := true
	var gotWait string
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != "POST" || r.URL.Path != "/admin/jobs/drain" || r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, "no", 404)
			return
		}
		gotWait = r.URL.Query().Get("wait")
		w.Header().Set("Content-Type", "application/json")
		if empty {
			w.Write([]byte(`{"job":"drain","duration":"1s","result":{"node":"pop-c","empty":true,"duration_ns":1200000000,"bindings":[
				{"binding":"RUNTIME_EVENT_SHARD","shards":32,"flushed":120,"pending":[]},{"binding":"COUNTER_SHARD","shards":32,"flushed":7,"pending":[]}]}}`))
			return
		}
		w.Write([]byte(`{"job":"drain","duration":"5s","result":{"node":"pop-c","empty":false,"duration_ns":5000000000,"bindings":[
			{"binding":"RUNTIME_EVENT_SHARD","shards":32,"flushed":0,"pending":[{"shard":4,"buffered":12,"error":"flush: shard answered 503"}]},
			{"binding":"COUNTER_SHARD","shards":32,"flushed":0,"pending":[{"shard":9,"buffered":0,"inflight":3}]}]}}`))
	}))
	defer ts.Close()
	cli := func(args ...string) (int, string, string) {
		var out, errb strings.Builder
		code := run(args, &out, &errb)
		return code, out.String(), errb.String()
	}
	code, out, stderr := cli("drain", "--admin", ts.URL, "--token", "tok", "--wait", "90s")
	if code != 0 || gotWait != "1m30s" || !strings.Contains(out, "node pop-c: every buffer shard is empty") || !strings.Contains(out, "RUNTIME_EVENT_SHARD 120, COUNTER_SHARD 7") {
		t.Fatalf("empty: %d %q %q (wait %q)", code, out, stderr, gotWait)
	}
	empty = false
	code, out, _ = cli("drain", "--admin", ts.URL, "--token", "tok")
	if code != 1 || !strings.Contains(out, "NOT empty") || !strings.Contains(out, "RUNTIME_EVENT_SHARD/4: 12 buffered (flush: shard answered 503)") ||
		!strings.Contains(out, "COUNTER_SHARD/9: 0 buffered, 3 in flight") {
		t.Fatalf("not empty: %d %q", code, out)
	}
	if code, _, _ := cli("drain", "extra"); code != 2 {
		t.Fatalf("an argument: exit %d", code)
	}
}

// TestDrainCLIOnAPOP: on a host of a POP the drain job leaves the POP;
// `edgeshard drain` prints what moved and exits 0 only if nothing was
// kept on the host.
func TestDrainCLIOnAPOP(t *testing.T) {
	kept := ""
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != "POST" || r.URL.Path != "/admin/jobs/drain" {
			http.Error(w, "no", 404)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Query().Get("leave") == "0" { // --leave=false: the buffer flush's report
			w.Write([]byte(`{"job":"drain","result":{"node":"pop-a","empty":true,"duration_ns":1000000000,"bindings":[]}}`))
			return
		}
		w.Write([]byte(`{"job":"drain","duration":"2s","result":{"node":"pop-a","left":true,"moved":3,"shipped":12` + kept + `,"duration_ns":2100000000}}`))
	}))
	defer ts.Close()
	var out strings.Builder
	if code := run([]string{"drain", "--admin", ts.URL, "--token", "tok"}, &out, &out); code != 0 ||
		!strings.Contains(out.String(), "node pop-a left the POP after 2.1s: 3 running shard(s) moved, 12 idle shard(s) shipped; it forwards every request until you stop it") {
		t.Fatalf("left: exit %d %q", code, out.String())
	}
	out.Reset()
	if code := run([]string{"drain", "--admin", ts.URL, "--token", "tok", "--leave=false"}, &out, &out); code != 0 ||
		!strings.Contains(out.String(), "node pop-a: every buffer shard is empty") {
		t.Fatalf("--leave=false: exit %d %q", code, out.String())
	}
	kept = `,"kept":["PAGEVIEWS/home"]`
	out.Reset()
	if code := run([]string{"drain", "--admin", ts.URL, "--token", "tok"}, &out, &out); code != 1 ||
		!strings.Contains(out.String(), "NOT moved (their move failed; see the host's log), unavailable while it is down: PAGEVIEWS/home") {
		t.Fatalf("kept: exit %d %q", code, out.String())
	}
}
