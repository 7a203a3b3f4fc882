package admin_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/host/admin"
	"github.com/edgeshard/edgeshard/internal/harness"
	"github.com/edgeshard/edgeshard/internal/hostinternal"
	"github.com/edgeshard/edgeshard/internal/testutil"
)

// browser is a client that keeps the inspector's session cookie, as a
// browser does, and never sends the bearer token.
type browser struct {
	t      *testing.T
	base   string
	cookie *http.Cookie
}

// req sends a request as the browser; headers are name, value pairs.
func (b *browser) req(method, path string, body string, headers ...string) (*http.Response, []byte) {
	b.t.Helper()
	req, err := http.NewRequest(method, b.base+path, strings.NewReader(body))
	if err != nil {
		b.t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	if b.cookie != nil {
		req.AddCookie(b.cookie)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp, out
}

// login posts the login form and keeps the session cookie.
func (b *browser) login(tok string) *http.Response {
	b.t.Helper()
	resp, _ := b.req("POST", "/login", "token="+tok, "Content-Type", "application/x-www-form-urlencoded")
	for _, c := range resp.Cookies() {
		if c.Name == admin.SessionCookie {
			b.cookie = c
		}
	}
	return resp
}

// TestInspectorSession: the login form is the one thing served without
// the token; a session reads and switches tracing, nothing more, and only
// with the inspector's header from its own origin; logout ends it.
func TestInspectorSession(t *testing.T) {
	f := newFixture(t, admin.Options{SessionTTL: time.Hour})
	b := &browser{t: t, base: f.admin.URL}

	// A browser without a session gets the login form; an API client the
	// JSON 401, as for any path.
	resp, body := b.req("GET", "/", "", "Accept", "text/html,application/xhtml+xml")
	if resp.StatusCode != 401 || !bytes.Contains(body, []byte(`id="token"`)) || resp.Header.Get("Content-Security-Policy") == "" {
		t.Fatalf("GET / as a browser: %d %s", resp.StatusCode, body)
	}
	if resp, body = b.req("GET", "/ui/app.js", "", "Accept", "text/html"); resp.StatusCode != 401 || bytes.Contains(body, []byte("function")) {
		t.Fatalf("GET /ui/app.js without a session: %d", resp.StatusCode)
	}
	if resp, body = b.req("GET", "/login", ""); resp.StatusCode != 200 || !bytes.Contains(body, []byte(`action="/login"`)) {
		t.Fatalf("GET /login: %d %s", resp.StatusCode, body)
	}

	// A wrong token: the form again, no cookie.
	if resp := b.login("wrong"); resp.StatusCode != 401 || b.cookie != nil {
		t.Fatalf("wrong token: %d, cookie %v", resp.StatusCode, b.cookie)
	}
	if !strings.Contains(f.logs.String(), "inspector login refused") {
		t.Fatal("a refused login is not logged")
	}

	// The right one: a session cookie and a redirect to the inspector.
	resp = b.login(token)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" || b.cookie == nil {
		t.Fatalf("login: %d %v, cookie %v", resp.StatusCode, resp.Header, b.cookie)
	}
	if !b.cookie.HttpOnly || b.cookie.SameSite != http.SameSiteStrictMode || b.cookie.Path != "/" || strings.Contains(b.cookie.Value, token) {
		t.Fatalf("cookie = %+v", b.cookie)
	}

	// Reading is allowed: the page, its assets, the API.
	for path, want := range map[string]string{"/": `src="/ui/app.js"`, "/ui/app.js": "textContent", "/ui/style.css": "--accent", "/admin/bindings": `"COUNTER"`} {
		resp, body := b.req("GET", path, "")
		if resp.StatusCode != 200 || !bytes.Contains(body, []byte(want)) {
			t.Fatalf("GET %s with a session: %d %.200s", path, resp.StatusCode, body)
		}
	}
	if resp, _ := b.req("GET", "/ui/", ""); resp.StatusCode != 404 {
		t.Fatalf("GET /ui/: %d, want 404 (no listing)", resp.StatusCode)
	}
	if resp, _ := b.req("GET", "/ui/..%2fadmin.go", ""); resp.StatusCode != 404 {
		t.Fatalf("GET /ui/..%%2fadmin.go: %d, want 404", resp.StatusCode)
	}

	// Changing something needs the inspector's header, from this origin.
	const trace = "/admin/bindings/COUNTER/shards/alice/trace"
	if resp, body := b.req("PUT", trace, `{"on":true}`); resp.StatusCode != 403 || errorOf(t, body).Error.Code != "forbidden" {
		t.Fatalf("PUT trace without the header: %d %s", resp.StatusCode, body)
	}
	if resp, body := b.req("PUT", trace, `{"on":true}`, admin.InspectorHeader, "1", "Origin", "http://evil.example"); resp.StatusCode != 403 {
		t.Fatalf("PUT trace from another origin: %d %s", resp.StatusCode, body)
	}
	ns, _ := f.h.Namespace("COUNTER")
	if ns.Tracing("alice") {
		t.Fatal("a refused request switched tracing on")
	}
	if resp, body := b.req("PUT", trace, `{"on":true}`, admin.InspectorHeader, "1", "Origin", f.admin.URL); resp.StatusCode != 200 || !ns.Tracing("alice") {
		t.Fatalf("PUT trace: %d %s", resp.StatusCode, body)
	}

	// What the inspector does not do needs the token itself.
	before := ns.Current().SHA256()
	for _, rt := range []struct{ method, path string }{
		{"PUT", "/admin/bindings/COUNTER/module"},
		{"POST", "/admin/bindings/COUNTER/rollback"},
		{"POST", "/admin/jobs/reconcile-counters"},
		{"POST", "/admin/jobs/drain"},
		{"POST", "/admin/backup"},
		{"GET", "/admin/bindings/COUNTER/shards/alice/export"},
		{"PUT", "/admin/bindings/COUNTER/shards/alice/import"},
	} {
		resp, body := b.req(rt.method, rt.path, "junk", admin.InspectorHeader, "1")
		if resp.StatusCode != 403 || errorOf(t, body).Error.Code != "bearer_required" {
			t.Fatalf("%s %s with a session: %d %s", rt.method, rt.path, resp.StatusCode, body)
		}
	}
	if ns.Current().SHA256() != before {
		t.Fatal("a session changed the module")
	}

	// A forged cookie is nobody's session.
	forged := &browser{t: t, base: f.admin.URL, cookie: &http.Cookie{Name: admin.SessionCookie, Value: strings.Repeat("ab", 32)}}
	if resp, _ := forged.req("GET", "/admin/bindings", ""); resp.StatusCode != 401 {
		t.Fatalf("forged cookie: %d", resp.StatusCode)
	}

	// Logout ends the session.
	if resp, body := b.req("POST", "/logout", "", admin.InspectorHeader, "1"); resp.StatusCode != 204 {
		t.Fatalf("logout: %d %s", resp.StatusCode, body)
	}
	if resp, _ := b.req("GET", "/admin/bindings", ""); resp.StatusCode != 401 {
		t.Fatalf("after logout: %d", resp.StatusCode)
	}
}

func TestInspectorSessionExpires(t *testing.T) {
	f := newFixture(t, admin.Options{SessionTTL: 300 * time.Millisecond})
	b := &browser{t: t, base: f.admin.URL}
	b.login(token)
	if resp, _ := b.req("GET", "/admin/bindings", ""); resp.StatusCode != 200 {
		t.Fatalf("fresh session: %d", resp.StatusCode)
	}
	time.Sleep(400 * time.Millisecond)
	if resp, _ := b.req("GET", "/admin/bindings", ""); resp.StatusCode != 401 {
		t.Fatalf("expired session: %d", resp.StatusCode)
	}
}

// TestInspectorShardsValuesAndLog covers the routes the shard pages use:
// paged shards with their queue, last event and alarm; whole values; the
// log tap, and tracing switched at run time.
func TestInspectorShardsValuesAndLog(t *testing.T) {
	f := newFixture(t, admin.Options{})
	t0 := time.Now().Add(-time.Second)
	for _, k := range []string{"alice", "bob", "carol", "bob"} {
		if _, st := f.edgeCall(t, "POST", "/do/COUNTER/"+k+"/increment"); st != 200 {
			t.Fatalf("increment %s: %d", k, st)
		}
	}
	f.edgeCall(t, "POST", "/do/COUNTER/carol/reset-after?ms=600000")

	var p admin.ShardPage
	if st, b := f.do(t, "GET", "/admin/bindings/COUNTER/shards", nil, &p); st != 200 {
		t.Fatalf("shards: %d %s", st, b)
	}
	if p.Active != 3 || p.Matching != 3 || p.More || len(p.Shards) != 3 || p.Limit != admin.DefaultListLimit {
		t.Fatalf("page = %+v", p)
	}
	for i, name := range []string{"alice", "bob", "carol"} {
		s := p.Shards[i]
		if s.Shard != name || s.Instance != "live" || s.LastEvent == nil || s.LastEvent.Before(t0) || s.Tracing || s.MemoryBytes == 0 {
			t.Fatalf("shard %d = %+v", i, s)
		}
		if (s.Alarm != nil) != (name == "carol") {
			t.Fatalf("%s alarm = %v", name, s.Alarm)
		}
	}
	if st, b := f.do(t, "GET", "/admin/bindings/COUNTER/shards?prefix=b", nil, &p); st != 200 || p.Matching != 1 || len(p.Shards) != 1 || p.Shards[0].Shard != "bob" {
		t.Fatalf("prefix b: %d %s", st, b)
	}
	var names []string
	for path := "/admin/bindings/COUNTER/shards?limit=2"; path != ""; path = p.Next {
		p = admin.ShardPage{}
		if st, b := f.do(t, "GET", path, nil, &p); st != 200 {
			t.Fatalf("%s: %d %s", path, st, b)
		}
		for _, s := range p.Shards {
			names = append(names, s.Shard)
		}
	}
	if !slices.Equal(names, []string{"alice", "bob", "carol"}) {
		t.Fatalf("paged shards = %v", names)
	}
	f.wantErrorCodes(t, map[string]string{
		"/admin/bindings/COUNTER/shards?limit=0":                "bad_limit",
		"/admin/bindings/NOPE/shards":                           "unknown_binding",
		"/admin/bindings/COUNTER/shards/bob/value":              "bad_key",
		"/admin/bindings/COUNTER/shards/bob/value?key":          "no_such_key",
		"/admin/bindings/COUNTER/shards/bob/value?key_b64=%%%":  "bad_key",
		"/admin/bindings/COUNTER/shards/bob/log?after=x":        "bad_after",
		"/admin/bindings/SHARDED/shards/9/log":                  "unknown_shard",
		"/admin/bindings/SHARDED/shards/9/trace":                "unknown_shard",
		"/admin/series?binding=NOPE":                            "unknown_binding",
		"/admin/bindings/COUNTER/shards/bob/value?key=missing":  "no_such_key",
		"/admin/bindings/COUNTER/shards/bob/value?key_b64=eA==": "no_such_key",
	})

	// A whole value, base64.
	var v admin.ShardValue
	if st, b := f.do(t, "GET", "/admin/bindings/COUNTER/shards/bob/value?key=count", nil, &v); st != 200 || v.Value != base64.StdEncoding.EncodeToString([]byte("2")) || v.Size != 1 || v.Key != "count" {
		t.Fatalf("value: %d %s", st, b)
	}
	if st, b := f.do(t, "GET", "/admin/bindings/COUNTER/shards/bob/value?key_b64="+base64.StdEncoding.EncodeToString([]byte("count")), nil, &v); st != 200 || v.Size != 1 {
		t.Fatalf("value by key_b64: %d %s", st, b)
	}

	// The log tap: nothing until tracing is on; then the host calls.
	var lg admin.ShardLog
	if st, b := f.do(t, "GET", "/admin/bindings/COUNTER/shards/alice/log", nil, &lg); st != 200 || len(lg.Lines) != 0 || lg.Tracing {
		t.Fatalf("log before tracing: %d %s", st, b)
	}
	var ts admin.TraceState
	if st, b := f.do(t, "PUT", "/admin/bindings/COUNTER/shards/alice/trace", []byte(`{"on":true}`), &ts); st != 200 || !ts.On {
		t.Fatalf("trace on: %d %s", st, b)
	}
	if st, b := f.do(t, "PUT", "/admin/bindings/COUNTER/shards/alice/trace", []byte(`{"on":"yes"}`), nil); st != 400 {
		t.Fatalf("bad trace body: %d %s", st, b)
	}
	f.edgeCall(t, "POST", "/do/COUNTER/alice/increment")
	f.edgeCall(t, "POST", "/do/COUNTER/bob/increment") // not traced
	if st, b := f.do(t, "GET", "/admin/bindings/COUNTER/shards/alice/log", nil, &lg); st != 200 || !lg.Tracing || len(lg.Lines) == 0 {
		t.Fatalf("log while tracing: %d %s", st, b)
	}
	fns := map[string]bool{}
	for _, l := range lg.Lines {
		if l.Source != "trace" || !strings.HasPrefix(l.Message, fieldOf(l.Fields, "fn")+" ") || l.Seq == 0 || l.Seq > lg.Last {
			t.Fatalf("trace line = %+v", l)
		}
		for _, fl := range l.Fields {
			if fl.Name == "fn" {
				fns[fl.Value] = true
			}
		}
	}
	if !fns["storage_get"] || !fns["storage_put"] {
		t.Fatalf("traced host calls = %v, want storage_get and storage_put among them", fns)
	}
	if !strings.Contains(f.logs.String(), `"component":"trace"`) {
		t.Fatal("a run-time trace does not reach the host log as --trace does")
	}
	if st, _ := f.do(t, "GET", "/admin/bindings/COUNTER/shards/bob/log", nil, &lg); st != 200 || len(lg.Lines) != 0 {
		t.Fatalf("untraced bob has %d lines", len(lg.Lines))
	}
	f.do(t, "GET", "/admin/bindings/COUNTER/shards/alice/log", nil, &lg)
	last := lg.Last
	if st, _ := f.do(t, "GET", fmt.Sprintf("/admin/bindings/COUNTER/shards/alice/log?after=%d", last), nil, &lg); st != 200 || len(lg.Lines) != 0 || lg.Last != last {
		t.Fatalf("log after the last line: %+v", lg)
	}
	f.do(t, "PUT", "/admin/bindings/COUNTER/shards/alice/trace", []byte(`{"on":false}`), &ts)
	f.edgeCall(t, "POST", "/do/COUNTER/alice/increment")
	if f.do(t, "GET", fmt.Sprintf("/admin/bindings/COUNTER/shards/alice/log?after=%d", last), nil, &lg); len(lg.Lines) != 0 || lg.Tracing {
		t.Fatalf("lines after tracing went off: %+v", lg)
	}

	// A guest's own log record lands in its shard's tap.
	f.edgeCall(t, "POST", "/do/COUNTER/dave/reset-after?ms=1")
	testutil.WaitFor(t, 10*time.Second, "the alarm's log line in dave's tap", func() bool {
		f.do(t, "GET", "/admin/bindings/COUNTER/shards/dave/log", nil, &lg)
		return len(lg.Lines) > 0 && lg.Lines[0].Source == "guest" && lg.Lines[0].Message == "counter reset by alarm"
	})
}

// TestInspectorSwapHistory: pushes, refusals and rollbacks are listed with
// the binding, newest first.
func TestInspectorSwapHistory(t *testing.T) {
	f := newFixture(t, admin.Options{})
	ns, _ := f.h.Namespace("COUNTER")
	v1 := ns.Current().SHA256()
	if st, b := f.do(t, "PUT", "/admin/bindings/COUNTER/module", counterWasm(t, "v2"), nil); st != 200 {
		t.Fatalf("push: %d %s", st, b)
	}
	v2 := ns.Current().SHA256()
	if st, _ := f.do(t, "PUT", "/admin/bindings/COUNTER/module", []byte("not wasm"), nil); st != 422 {
		t.Fatalf("junk push: %d", st)
	}
	if st, b := f.do(t, "POST", "/admin/bindings/COUNTER/rollback", nil, nil); st != 200 {
		t.Fatalf("rollback: %d %s", st, b)
	}
	var bi admin.BindingInfo
	f.do(t, "GET", "/admin/bindings/COUNTER", nil, &bi)
	h := bi.History
	if len(h) != 3 {
		t.Fatalf("history = %+v", h)
	}
	if h[0].Action != "rollback" || h[0].Outcome != "rolled_back" || h[0].From != v2 || h[0].To != v1 {
		t.Fatalf("newest = %+v", h[0])
	}
	if h[1].Outcome != "refused" || h[1].From != v2 || h[1].To != "" || h[1].Error == "" || h[1].Source != "push" {
		t.Fatalf("refused = %+v", h[1])
	}
	if h[2].Outcome != "swapped" || h[2].From != v1 || h[2].To != v2 || h[2].Source != "push" || h[2].Time.After(h[0].Time) {
		t.Fatalf("oldest = %+v", h[2])
	}
	var list admin.BindingList
	f.do(t, "GET", "/admin/bindings", nil, &list)
	if len(list.Bindings[0].History) != 3 || list.Bindings[1].History == nil || len(list.Bindings[1].History) != 0 {
		t.Fatalf("list histories: %+v / %+v", list.Bindings[0].History, list.Bindings[1].History)
	}
}

// TestInspectorSeries: the sampler turns the host's counters into
// requests/s and p99 per binding.
func TestInspectorSeries(t *testing.T) {
	f := newFixture(t, admin.Options{SampleInterval: 100 * time.Millisecond, SampleWindow: 10 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			f.edgeCall(t, "POST", "/do/COUNTER/a/increment")
		}
	})
	defer func() { cancel(); wg.Wait() }()
	var s admin.SeriesList
	testutil.WaitFor(t, 15*time.Second, "a sample with requests and a p99", func() bool {
		if st, b := f.do(t, "GET", "/admin/series?binding=COUNTER", nil, &s); st != 200 {
			t.Fatalf("series: %d %s", st, b)
		}
		se := s.Bindings[0]
		for i := range se.T {
			if se.RPS[i] > 0 && se.P99[i] != nil && *se.P99[i] > 0 {
				return true
			}
		}
		return false
	})
	if s.IntervalMS != 100 || s.WindowMS != 10000 || len(s.Bindings) != 1 || s.Bindings[0].Binding != "COUNTER" {
		t.Fatalf("series = %+v", s)
	}
	se := s.Bindings[0]
	if n := len(se.T); len(se.RPS) != n || len(se.P99) != n || len(se.Flushes) != n || len(se.Fallbacks) != n || len(se.Errors) != n || n > 100 {
		t.Fatalf("series lengths differ or exceed the window: %+v", se)
	}
	f.do(t, "GET", "/admin/series", nil, &s)
	if len(s.Bindings) != 2 {
		t.Fatalf("all series: %+v", s)
	}
}

// nopShard is a native shard that answers 200 and writes nothing: cheap
// enough to keep 10,000 of them active.
type nopShard struct{}

func (nopShard) Fetch(context.Context, hostinternal.Env, *abi.Request) (*abi.Response, error) {
	return &abi.Response{Status: 200}, nil
}
func (nopShard) Alarm(context.Context, hostinternal.Env, int) (bool, error) { return true, nil }

// TestInspectorTenThousandShards: with 10,000 active shards the shards
// route pages through all of them, each exactly once and in order, and
// searches by prefix, each answer in milliseconds — never all of them at
// once.
func TestInspectorTenThousandShards(t *testing.T) {
	const n = 10000
	ctx := hostinternal.WithNative(context.Background(), "MANY", func(string) hostinternal.NativeShard { return nopShard{} })
	env := testutil.Host(t, harness.Context(ctx), harness.Memory(), harness.Bindings(host.Binding{Name: "MANY"}),
		harness.Configure(func(c *host.Config) { c.QueueDepth, c.IdleTimeout = 2, time.Hour }),
		harness.Admin(admin.Options{Token: token}))
	f := &fixture{h: env.Host, admin: env.Admin, logs: env.Logs}
	ns, _ := f.h.Namespace("MANY")
	t0 := time.Now()
	testutil.Concurrently(t, 8, func(w int) error {
		for i := w; i < n; i += 8 {
			if _, err := ns.Fetch(context.Background(), fmt.Sprintf("user-%05d", i), &abi.Request{Method: "GET", Path: "/"}); err != nil {
				return err
			}
		}
		return nil
	})
	t.Logf("%d shards started in %v", n, time.Since(t0).Round(time.Millisecond))

	timed := func(path string, out any) time.Duration {
		t.Helper()
		t0 := time.Now()
		if st, b := f.do(t, "GET", path, nil, out); st != 200 {
			t.Fatalf("%s: %d %.300s", path, st, b)
		}
		return time.Since(t0)
	}
	// Every page is bounded by the host, whatever the client asks for.
	var p admin.ShardPage
	if d := timed("/admin/bindings/MANY/shards", &p); len(p.Shards) != admin.DefaultListLimit || p.Active != n || p.Matching != n || !p.More {
		t.Fatalf("first page (%v): %d shards, active %d, matching %d", d, len(p.Shards), p.Active, p.Matching)
	}
	if st, _ := f.do(t, "GET", "/admin/bindings/MANY/shards?limit=100000", nil, nil); st != 400 {
		t.Fatalf("a page above the limit: %d", st)
	}

	// Page through all of them.
	var all []string
	var slowest time.Duration
	pages := 0
	for path := "/admin/bindings/MANY/shards?limit=1000"; path != ""; path = p.Next {
		p = admin.ShardPage{}
		slowest = max(slowest, timed(path, &p))
		pages++
		for _, s := range p.Shards {
			all = append(all, s.Shard)
			if s.LastEvent == nil || s.Instance != "live" {
				t.Fatalf("shard row = %+v", s)
			}
		}
	}
	if len(all) != n || pages != n/1000 || !slices.IsSorted(all) || len(slices.Compact(slices.Clone(all))) != n {
		t.Fatalf("paging gave %d shards in %d pages (sorted %v)", len(all), pages, slices.IsSorted(all))
	}

	// Search by prefix.
	d := timed("/admin/bindings/MANY/shards?prefix=user-0123", &p)
	slowest = max(slowest, d)
	var got []string
	for _, s := range p.Shards {
		got = append(got, s.Shard)
	}
	if p.Matching != 10 || len(got) != 10 || got[0] != "user-01230" || got[9] != "user-01239" || p.More {
		t.Fatalf("prefix search: matching %d, %v", p.Matching, got)
	}
	if timed("/admin/bindings/MANY/shards?prefix=nobody", &p); p.Matching != 0 || len(p.Shards) != 0 || p.Active != n {
		t.Fatalf("prefix without match: %+v", p)
	}
	t.Logf("slowest page or search over %d shards: %v", n, slowest)
	// Generous for a loaded 2-core machine under -race; a page takes a few
	// milliseconds when the machine is idle.
	if slowest > 2*time.Second {
		t.Fatalf("a page took %v", slowest)
	}
}

// fieldOf returns the value of the named field of a log line.
func fieldOf(fields []admin.LogField, name string) string {
	for _, f := range fields {
		if f.Name == name {
			return f.Value
		}
	}
	return ""
}
