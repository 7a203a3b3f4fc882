package admin_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/host/admin"
	"github.com/edgeshard/edgeshard/storage"
)

func TestNewRequiresToken(t *testing.T) {
	if _, err := admin.New(nil, admin.Options{Token: "x"}); err == nil {
		t.Fatal("nil host accepted")
	}
	f := newFixture(t, admin.Options{})
	if _, err := admin.New(f.h, admin.Options{}); err == nil || !strings.Contains(err.Error(), "token") {
		t.Fatalf("empty token: err = %v", err)
	}
}

// TestEveryRouteRequiresToken: every route, known or not, answers 401 with
// the error envelope without the right token, and does nothing.
func TestEveryRouteRequiresToken(t *testing.T) {
	f := newFixture(t, admin.Options{Reconcile: func(context.Context) (any, error) {
		t.Error("reconcile ran without a token")
		return nil, nil
	}, Drain: func(context.Context, time.Duration) (any, error) {
		t.Error("drain ran without a token")
		return nil, nil
	}})
	before := f.h.Namespaces()[0].Current().SHA256()
	routes := []struct{ method, path string }{
		{"GET", "/admin/bindings"},
		{"GET", "/admin/bindings/COUNTER"},
		{"PUT", "/admin/bindings/COUNTER/module"},
		{"POST", "/admin/bindings/COUNTER/rollback"},
		{"GET", "/admin/bindings/COUNTER/shards/a"},
		{"POST", "/admin/jobs/reconcile-counters"},
		{"POST", "/admin/jobs/drain"},
		{"GET", "/admin/bindings/NOPE"}, // unknown binding: no leak either
		{"GET", "/admin/nothing-here"},  // unknown route
		{"DELETE", "/admin/bindings"},   // wrong method
		{"GET", "/"},                    // outside /admin
		{"GET", "/admin/bindings/COUNTER/shards/a?limit=5"},
	}
	auths := map[string]string{
		"none":           "",
		"wrong token":    "Bearer not-the-token",
		"token prefix":   "Bearer " + token[:len(token)-1],
		"token suffixed": "Bearer " + token + "x",
		"basic scheme":   "Basic " + base64.StdEncoding.EncodeToString([]byte("admin:"+token)),
		"bare token":     token,
		"empty bearer":   "Bearer ",
	}
	for _, rt := range routes {
		for name, auth := range auths {
			t.Run(rt.method+" "+rt.path+"/"+name, func(t *testing.T) {
				req, _ := http.NewRequest(rt.method, f.admin.URL+rt.path, strings.NewReader("junk"))
				if auth != "" {
					req.Header.Set("Authorization", auth)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != http.StatusUnauthorized {
					t.Fatalf("status %d, want 401: %s", resp.StatusCode, b)
				}
				if e := errorOf(t, b); e.Error.Code != "unauthorized" {
					t.Fatalf("code %q, want unauthorized", e.Error.Code)
				}
				if resp.Header.Get("WWW-Authenticate") == "" {
					t.Fatal("no WWW-Authenticate header")
				}
			})
		}
	}
	if f.h.Namespaces()[0].Current().SHA256() != before {
		t.Fatal("an unauthorised request changed the module")
	}
	// With the token (any case of "Bearer"), the same server answers.
	req, _ := http.NewRequest("GET", f.admin.URL+"/admin/bindings", nil)
	req.Header.Set("Authorization", "bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("with token: status %d", resp.StatusCode)
	}
}

func TestBindingsStatus(t *testing.T) {
	f := newFixture(t, admin.Options{})
	for _, k := range []string{"a", "b", "a"} {
		if _, st := f.edgeCall(t, "POST", "/do/COUNTER/"+k+"/increment"); st != 200 {
			t.Fatalf("increment: %d", st)
		}
	}
	f.edgeCall(t, "POST", "/do/COUNTER/c/reset-after?ms=600000")
	var list admin.BindingList
	if st, b := f.do(t, "GET", "/admin/bindings", nil, &list); st != 200 {
		t.Fatalf("status %d: %s", st, b)
	}
	if len(list.Bindings) != 2 || list.Bindings[0].Name != "COUNTER" || list.Bindings[1].Name != "SHARDED" {
		t.Fatalf("bindings = %+v", list.Bindings)
	}
	c := list.Bindings[0]
	want := sha256.Sum256(counterWasm(t, "test"))
	if c.Module.SHA256 != hex.EncodeToString(want[:]) || c.Module.Size != len(counterWasm(t, "test")) || c.Module.ABIVersion != 1 || c.Module.LoadedAt.IsZero() {
		t.Fatalf("module = %+v", c.Module)
	}
	if c.ActiveShards != 3 || c.LiveInstances != 3 || c.AlarmsPending != 1 || c.Previous != nil || c.ShardCount != 0 || c.Shards != nil {
		t.Fatalf("COUNTER = %+v", c)
	}
	if list.Bindings[1].ShardCount != 4 {
		t.Fatalf("SHARDED shard count = %d", list.Bindings[1].ShardCount)
	}

	var one admin.BindingInfo
	if st, b := f.do(t, "GET", "/admin/bindings/COUNTER", nil, &one); st != 200 {
		t.Fatalf("status %d: %s", st, b)
	}
	if len(one.Shards) != 3 || one.Shards[0].Shard != "a" || one.Shards[0].Instance != "live" || one.Shards[0].MemoryBytes == 0 {
		t.Fatalf("shards = %+v", one.Shards)
	}
	if st, b := f.do(t, "GET", "/admin/bindings/NOPE", nil, nil); st != 404 || errorOf(t, b).Error.Code != "unknown_binding" {
		t.Fatalf("unknown binding: %d %s", st, b)
	}
	if st, b := f.do(t, "GET", "/admin/nope", nil, nil); st != 404 || errorOf(t, b).Error.Code != "not_found" {
		t.Fatalf("unknown route with token: %d %s", st, b)
	}
}

func TestShardListing(t *testing.T) {
	// Seed entries the counter never writes straight into the shard's
	// storage, before the host starts.
	big := strings.Repeat("é", admin.ValuePreviewBytes) // 2 bytes a rune: cut on a rune boundary
	seed := &storage.Batch{Shard: storage.ShardID{Namespace: "COUNTER", Name: "alice"}}
	for i := 0; i < 25; i++ {
		seed.Puts = append(seed.Puts, abi.KV{Key: fmt.Sprintf("item:%03d", i), Value: []byte(fmt.Sprint(i))})
	}
	seed.Puts = append(seed.Puts, abi.KV{Key: "bin:\xff\xfe", Value: []byte{0, 1, 2, 0xff}}, abi.KV{Key: "big", Value: []byte(big)})
	backend := storage.NewMemory()
	if err := backend.Apply([]*storage.Batch{seed}); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, admin.Options{}, func(c *host.Config) { c.Storage = backend })
	for i := 0; i < 3; i++ {
		f.edgeCall(t, "POST", "/do/COUNTER/alice/increment")
	}
	f.edgeCall(t, "POST", "/do/COUNTER/alice/reset-after?ms=600000")

	var l admin.ShardListing
	if st, b := f.do(t, "GET", "/admin/bindings/COUNTER/shards/alice", nil, &l); st != 200 {
		t.Fatalf("status %d: %s", st, b)
	}
	if l.Instance != "live" || l.Alarm == nil || time.Until(*l.Alarm) < 9*time.Minute || l.Limit != admin.DefaultListLimit || l.More {
		t.Fatalf("listing = %+v", l)
	}
	byKey := map[string]admin.Entry{}
	for _, e := range l.Entries {
		byKey[e.Key] = e
	}
	if len(l.Entries) != 28 {
		t.Fatalf("%d entries, want 28", len(l.Entries))
	}
	if e := byKey["count"]; e.Value != "3" || e.ValueEncoding != "utf8" {
		t.Fatalf("count entry = %+v", e)
	}
	if e := byKey[base64.StdEncoding.EncodeToString([]byte("bin:\xff\xfe"))]; e.KeyEncoding != "base64" || e.ValueEncoding != "base64" || e.Value != base64.StdEncoding.EncodeToString([]byte{0, 1, 2, 0xff}) {
		t.Fatalf("binary entry = %+v (entries %+v)", e, l.Entries)
	}
	if e := byKey["big"]; !e.Truncated || e.Size != len(big) || len(e.Value) > admin.ValuePreviewBytes || !strings.HasPrefix(big, e.Value) {
		t.Fatalf("big entry: truncated %v size %d shown %d", e.Truncated, e.Size, len(e.Value))
	}

	// Paging with a prefix: 25 items in pages of 10.
	var got []string
	path := "/admin/bindings/COUNTER/shards/alice?prefix=item:&limit=10"
	for pages := 0; path != ""; pages++ {
		if pages > 3 {
			t.Fatal("paging does not end")
		}
		var p admin.ShardListing
		if st, b := f.do(t, "GET", path, nil, &p); st != 200 {
			t.Fatalf("%s: status %d: %s", path, st, b)
		}
		for _, e := range p.Entries {
			got = append(got, e.Key)
		}
		if p.More != (p.Next != "") {
			t.Fatalf("more %v next %q", p.More, p.Next)
		}
		path = p.Next
	}
	if len(got) != 25 || got[0] != "item:000" || got[24] != "item:024" {
		t.Fatalf("paged keys = %v", got)
	}

	// A shard without instance reads as idle and empty; bad input is refused.
	if st, b := f.do(t, "GET", "/admin/bindings/COUNTER/shards/"+url.PathEscape("nobody/here"), nil, &l); st != 200 || l.Instance != "idle" || len(l.Entries) != 0 || l.Alarm != nil || l.Shard != "nobody/here" {
		t.Fatalf("fresh shard: %d %s", st, b)
	}
	f.wantErrorCodes(t, map[string]string{
		"/admin/bindings/COUNTER/shards/alice?limit=0":    "bad_limit",
		"/admin/bindings/COUNTER/shards/alice?limit=1001": "bad_limit",
		"/admin/bindings/COUNTER/shards/alice?limit=x":    "bad_limit",
		"/admin/bindings/SHARDED/shards/4":                "unknown_shard",
		"/admin/bindings/SHARDED/shards/01":               "unknown_shard",
		"/admin/bindings/SHARDED/shards/x":                "unknown_shard",
		"/admin/bindings/NOPE/shards/0":                   "unknown_binding",
	})
	if st, b := f.do(t, "GET", "/admin/bindings/SHARDED/shards/3", nil, &l); st != 200 || l.Shard != "3" {
		t.Fatalf("sharded shard 3: %d %s", st, b)
	}
}

func TestPushRollbackAndRefusals(t *testing.T) {
	f := newFixture(t, admin.Options{})
	v2 := counterWasm(t, "v2")
	f.edgeCall(t, "POST", "/do/COUNTER/k/increment")
	ns, _ := f.h.Namespace("COUNTER")
	sha1 := ns.Current().SHA256()

	// Rollback with nothing to roll back to.
	if st, b := f.do(t, "POST", "/admin/bindings/COUNTER/rollback", nil, nil); st != 409 || errorOf(t, b).Error.Code != "no_previous_version" {
		t.Fatalf("rollback without previous: %d %s", st, b)
	}

	// Broken modules are refused with a clear error and change nothing.
	for name, bin := range map[string][]byte{
		"garbage":   []byte("definitely not wasm"),
		"empty":     nil,
		"truncated": v2[:len(v2)/2],
	} {
		st, b := f.do(t, "PUT", "/admin/bindings/COUNTER/module", bin, nil)
		e := errorOf(t, b)
		if st != 422 || e.Error.Code != "invalid_module" || !strings.Contains(e.Error.Message, "invalid module") || !strings.Contains(e.Error.Message, "keeps serving") {
			t.Fatalf("%s: %d %s", name, st, b)
		}
		if ns.Current().SHA256() != sha1 || ns.Previous() != nil {
			t.Fatalf("%s: a refused push changed the binding", name)
		}
	}
	if r, _ := f.edgeCall(t, "GET", "/do/COUNTER/k/"); r.Count != 1 || r.Version != "test" {
		t.Fatalf("after refused pushes: %+v", r)
	}
	if st, b := f.do(t, "PUT", "/admin/bindings/NOPE/module", v2, nil); st != 404 {
		t.Fatalf("push to unknown binding: %d %s", st, b)
	}

	// A real push.
	var res admin.SwapResult
	if st, b := f.do(t, "PUT", "/admin/bindings/COUNTER/module", v2, &res); st != 200 {
		t.Fatalf("push: %d %s", st, b)
	}
	sum2 := sha256.Sum256(v2)
	if !res.Changed || res.Module.SHA256 != hex.EncodeToString(sum2[:]) || res.Module.Source != "push" || res.Previous == nil || res.Previous.SHA256 != sha1 {
		t.Fatalf("push result = %+v", res)
	}
	if r, _ := f.edgeCall(t, "POST", "/do/COUNTER/k/increment"); r.Count != 2 || r.Version != "v2" {
		t.Fatalf("after push: %+v", r)
	}
	// Pushing the serving bytes again changes nothing.
	if st, _ := f.do(t, "PUT", "/admin/bindings/COUNTER/module", v2, &res); st != 200 || res.Changed {
		t.Fatalf("same push: %d %+v", st, res)
	}

	// Rollback, and rollback of the rollback.
	if st, b := f.do(t, "POST", "/admin/bindings/COUNTER/rollback", nil, &res); st != 200 || res.Module.SHA256 != sha1 {
		t.Fatalf("rollback: %d %s", st, b)
	}
	if r, _ := f.edgeCall(t, "POST", "/do/COUNTER/k/increment"); r.Count != 3 || r.Version != "test" {
		t.Fatalf("after rollback: %+v", r)
	}
	var info admin.BindingInfo
	f.do(t, "GET", "/admin/bindings/COUNTER", nil, &info)
	if info.Previous == nil || info.Previous.SHA256 != hex.EncodeToString(sum2[:]) {
		t.Fatalf("previous after rollback = %+v", info.Previous)
	}
}

func TestModuleSizeCap(t *testing.T) {
	f := newFixture(t, admin.Options{MaxModuleBytes: 1024})
	big := bytes.Repeat([]byte{0}, 4096)
	if st, b := f.do(t, "PUT", "/admin/bindings/COUNTER/module", big, nil); st != 413 || errorOf(t, b).Error.Code != "module_too_large" {
		t.Fatalf("declared length: %d %s", st, b)
	}
	// Chunked (no Content-Length): capped while reading.
	req, _ := http.NewRequest("PUT", f.admin.URL+"/admin/bindings/COUNTER/module", io.MultiReader(bytes.NewReader(big)))
	req.Header.Set("Authorization", "Bearer "+token)
	req.ContentLength = -1
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 413 || errorOf(t, b).Error.Code != "module_too_large" {
		t.Fatalf("chunked: %d %s", resp.StatusCode, b)
	}
}

func TestReconcileJob(t *testing.T) {
	f := newFixture(t, admin.Options{})
	if st, b := f.do(t, "POST", "/admin/jobs/reconcile-counters", nil, nil); st != 404 || errorOf(t, b).Error.Code != "reconcile_unavailable" {
		t.Fatalf("without hook: %d %s", st, b)
	}
	calls := 0
	f = newFixture(t, admin.Options{Reconcile: func(ctx context.Context) (any, error) {
		calls++
		if calls == 2 {
			return nil, errors.New("sql is down")
		}
		return map[string]int{"post_stats": 3}, nil
	}})
	var res admin.ReconcileResult
	if st, b := f.do(t, "POST", "/admin/jobs/reconcile-counters", nil, &res); st != 200 || res.Job != "reconcile-counters" || fmt.Sprint(res.Result) != "map[post_stats:3]" {
		t.Fatalf("with hook: %d %s", st, b)
	}
	if st, b := f.do(t, "POST", "/admin/jobs/reconcile-counters", nil, nil); st != 500 || errorOf(t, b).Error.Code != "reconcile_failed" || !strings.Contains(string(b), "sql is down") {
		t.Fatalf("failing hook: %d %s", st, b)
	}
	f = newFixture(t, admin.Options{Reconcile: func(ctx context.Context) (any, error) {
		return nil, fmt.Errorf("%w: running on pop-b", admin.ErrJobBusy)
	}})
	if st, b := f.do(t, "POST", "/admin/jobs/reconcile-counters", nil, nil); st != 409 || errorOf(t, b).Error.Code != "reconcile_busy" {
		t.Fatalf("busy elsewhere: %d %s", st, b)
	}
}

func TestDrainJob(t *testing.T) {
	f := newFixture(t, admin.Options{})
	if st, b := f.do(t, "POST", "/admin/jobs/drain", nil, nil); st != 404 || errorOf(t, b).Error.Code != "drain_unavailable" {
		t.Fatalf("without hook: %d %s", st, b)
	}
	var waited time.Duration
	drain := func(ctx context.Context, wait time.Duration) (any, error) {
		waited = wait
		return map[string]bool{"empty": true}, nil
	}
	f = newFixture(t, admin.Options{Drain: drain})
	var res admin.JobResult
	if st, b := f.do(t, "POST", "/admin/jobs/drain?wait=90s", nil, &res); st != 200 || res.Job != "drain" || fmt.Sprint(res.Result) != "map[empty:true]" || waited != 90*time.Second {
		t.Fatalf("with hook: %d %s (wait %v)", st, b, waited)
	}
	if st, _ := f.do(t, "POST", "/admin/jobs/drain", nil, nil); st != 200 || waited != 30*time.Second {
		t.Fatalf("default wait %v", waited)
	}
	for _, q := range []string{"?wait=soon", "?wait=-1s", "?wait=11m"} {
		if st, b := f.do(t, "POST", "/admin/jobs/drain"+q, nil, nil); st != 400 || errorOf(t, b).Error.Code != "bad_wait" {
			t.Fatalf("%s: %d %s", q, st, b)
		}
	}
	// On a host of a POP drain leaves it; ?leave=0 flushes only.
	var left time.Duration
	f = newFixture(t, admin.Options{Drain: drain, Cluster: &admin.ClusterOps{Leave: func(ctx context.Context, wait time.Duration) (any, error) {
		left = wait
		return map[string]bool{"left": true}, nil
	}}})
	if st, b := f.do(t, "POST", "/admin/jobs/drain?wait=20s", nil, &res); st != 200 || fmt.Sprint(res.Result) != "map[left:true]" || left != 20*time.Second {
		t.Fatalf("on a POP: %d %s (wait %v)", st, b, left)
	}
	if st, b := f.do(t, "POST", "/admin/jobs/drain?wait=5s&leave=0", nil, &res); st != 200 || fmt.Sprint(res.Result) != "map[empty:true]" || waited != 5*time.Second {
		t.Fatalf("on a POP, leave=0: %d %s (wait %v)", st, b, waited)
	}
	if st, b := f.do(t, "POST", "/admin/jobs/drain?leave=yes", nil, nil); st != 400 || errorOf(t, b).Error.Code != "bad_leave" {
		t.Fatalf("leave=yes: %d %s", st, b)
	}
}
