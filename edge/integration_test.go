package edge

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/host/clock"
	"github.com/edgeshard/edgeshard/internal/harness"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/edgeshard/edgeshard/storage"
	"github.com/edgeshard/edgeshard/storage/analytics"
	"github.com/edgeshard/edgeshard/storage/sqldb"
)

// These tests run the real plugins (built by testutil) in a real host over
// a real SQLite file, behind a real HTTP server.

// realEnv is a host running the three plugins.
type realEnv struct {
	h    *host.Host
	vc   *clock.Virtual // nil: real clock
	db   *sqldb.DB
	ae   *analytics.Recorder
	logs *testutil.LogBuffer
}

type envOpts struct {
	virtual bool
	omit    string // a binding left out of the host
	// shards per binding: 8 unless set (every shard is a wasm instance to
	// start, which is slow under -race; the tests of the whole flow use
	// the default 32).
	shards int
	// sql, if set, wraps the database the plugins' SQL binding uses (the
	// edge API keeps the database itself); storage replaces the shards'
	// storage backend (fault injection).
	sql     func(host.SQLDB) host.SQLDB
	storage storage.Backend
	// sink replaces the analytics recorder (which keeps every point).
	sink host.AnalyticsSink
	// db opens the database (default openDB: a migrated SQLite file).
	db func(*testing.T) *sqldb.DB
	// node is the host's node id (none when empty).
	node string
}

func startReal(t *testing.T, o envOpts) *realEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: builds and runs the plugins")
	}
	if o.db == nil {
		o.db = openDB
	}
	e := &realEnv{db: o.db(t), ae: &analytics.Recorder{}}
	sink := host.AnalyticsSink(e.ae)
	if o.sink != nil {
		sink = o.sink
	}
	opts := []harness.Option{
		harness.SQL(harness.Database{DB: e.db, Wrap: o.sql}),
		harness.Analytics("AE", "runtime_events", sink),
	}
	if o.storage != nil {
		opts = append(opts, harness.Storage(o.storage))
	}
	if o.virtual {
		opts = append(opts, harness.VirtualClock(time.Now().Truncate(time.Second)))
	}
	if o.node != "" {
		opts = append(opts, harness.Configure(func(c *host.Config) { c.NodeID = o.node }))
	}
	n := o.shards
	if n == 0 {
		n = 8
	}
	for _, b := range []host.Binding{
		{Name: "RATE_LIMIT_SHARD", Module: testutil.Plugin(t, "plugins/ratelimit"), Shards: n},
		{Name: "RUNTIME_EVENT_SHARD", Module: testutil.Plugin(t, "plugins/runtimeevents"), Shards: n, SQL: "DB", Analytics: "AE"},
		{Name: "COUNTER_SHARD", Module: testutil.Plugin(t, "plugins/counters"), Shards: n, SQL: "DB"},
	} {
		if b.Name != o.omit {
			opts = append(opts, harness.Bindings(b))
		}
	}
	env := testutil.Host(t, opts...)
	e.h, e.vc, e.logs = env.Host, env.Clock, env.Logs
	return e
}

// deps returns the API's dependencies on this host.
// fixture is the edge API with the test config over e.
func (e *realEnv) fixture(t *testing.T) *fixture { return newFixture(t, testConfig(), e.deps()) }

func (e *realEnv) deps() Deps {
	d := Deps{Host: e.h, DB: e.db}
	if e.vc != nil {
		d.Now = e.vc.Now
	}
	return d
}

// ns returns a namespace of the host.
func (e *realEnv) ns(t *testing.T, name string) *host.Namespace {
	t.Helper()
	ns, ok := e.h.Namespace(name)
	if !ok {
		t.Fatalf("no namespace %s", name)
	}
	return ns
}

// settle drives the shards' alarms until cond holds and returns how long
// that took: with the virtual clock, the virtual time advanced (a second
// at a time, at most limit) — then it keeps waiting up to 30 s of real
// time for alarm handlers still running; with the real clock, the time
// waited (at most limit).
func (e *realEnv) settle(t *testing.T, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	var virt time.Duration
	for !cond() {
		switch {
		case e.vc != nil && virt < limit:
			e.vc.Advance(time.Second)
			virt += time.Second
			time.Sleep(100 * time.Millisecond) // alarms run on their own goroutines
		case e.vc != nil && time.Since(start) > 30*time.Second:
			t.Fatalf("%s: not done after %v of virtual time and %v of real time", what, virt, time.Since(start))
		case e.vc == nil && time.Since(start) > limit:
			t.Fatalf("%s: not done after %v", what, limit)
		default:
			time.Sleep(50 * time.Millisecond)
		}
	}
	if e.vc != nil {
		return virt
	}
	return time.Since(start)
}

// idle waits until no alarm is pending on the virtual clock (every flush
// and retry has run).
func (e *realEnv) idle(t *testing.T) {
	t.Helper()
	e.settle(t, time.Minute, "every alarm run", func() bool { return e.vc.Pending() == 0 })
	time.Sleep(100 * time.Millisecond)
}

// postEvents sends n events in batches of size, spread over capsules (and
// a few with only a run id, and a few with neither), and returns the
// acknowledged ids.
func postEvents(t *testing.T, f *fixture, n, size int) []string {
	t.Helper()
	var ids []string
	for start := 0; start < n; start += size {
		var evs []string
		for i := start; i < min(n, start+size); i++ {
			switch i % 10 {
			case 8:
				evs = append(evs, fmt.Sprintf(`{"type":"run.log","run_id":"run-%d","payload":{"i":%d}}`, i%7, i))
			case 9:
				evs = append(evs, fmt.Sprintf(`{"type":"orphan","payload":%d}`, i))
			default:
				evs = append(evs, fmt.Sprintf(`{"type":"run.step","capsule_id":"cap-%d","run_id":"r%d","payload":{"i":%d,"s":"x\ty"}}`, i%13, i, i))
			}
		}
		r := f.do("POST", "/runtime-events", "u1", `{"events":[`+strings.Join(evs, ",")+`]}`)
		if r.status != 202 {
			t.Fatalf("POST /runtime-events: %d %s", r.status, r.body)
		}
		var rep eventsReply
		r.json(t, &rep)
		if rep.Accepted != len(evs) {
			t.Fatalf("accepted %d of %d", rep.Accepted, len(evs))
		}
		ids = append(ids, rep.IDs...)
	}
	return ids
}

// checkEventsOnce asserts runtime_events holds exactly ids, once each.
func checkEventsOnce(t *testing.T, f *fixture, ids []string) {
	t.Helper()
	if n := f.scalar(`SELECT COUNT(*) FROM runtime_events`); n != int64(len(ids)) {
		t.Fatalf("%d rows, want %d", n, len(ids))
	}
	rows, err := f.db.SQL().Query(`SELECT id FROM runtime_events ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var id string
		rows.Scan(&id)
		got = append(got, id)
	}
	want := append([]string(nil), ids...)
	sort.Strings(want)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatal("runtime_events ids differ from the acknowledged ids")
	}
}

func TestIntegrationRuntimeEvents250EachMode(t *testing.T) {
	checkRuntimeEvents250(t, envOpts{virtual: true, shards: 32})
}

// checkRuntimeEvents250: in every mode, 250 events posted in batches of 50
// land in runtime_events exactly once: flushed by the shards (primary),
// written inline and by the shards, deduped by id (shadow), inline only
// (off); in primary, one analytics point each.
func checkRuntimeEvents250(t *testing.T, o envOpts) {
	eachMode(t, func(t *testing.T, mode Mode) {
		e := startReal(t, o)
		cfg := testConfig()
		cfg.EventMode = mode
		f := newFixture(t, cfg, e.deps())
		ids := postEvents(t, f, 250, 50)
		// Every buffered event is flushed by its shard's 5 s alarm.
		e.vc.Advance(5 * time.Second)
		waitFor(t, 30*time.Second, "250 events in runtime_events 5 s (virtual) after the last 202", func() bool {
			return f.scalar(`SELECT COUNT(*) FROM runtime_events`) >= 250
		})
		// Let every pending alarm run: nothing is written twice.
		e.idle(t)
		checkEventsOnce(t, f, ids)
		if mode == ModePrimary {
			// One analytics point per event, written by the flush after
			// its SQL batch.
			waitFor(t, 10*time.Second, "250 analytics points", func() bool { return len(e.ae.Points("runtime_events")) >= 250 })
			if n := len(e.ae.Points("runtime_events")); n != 250 {
				t.Errorf("%d analytics points, want 250", n)
			}
		}
	})
}

func TestIntegrationRuntimeEventsRealClock(t *testing.T) {
	e := startReal(t, envOpts{})
	f := e.fixture(t)
	ids := postEvents(t, f, 250, 25)
	took := e.settle(t, 8*time.Second, "250 events flushed by the 5 s alarm", func() bool {
		return f.scalar(`SELECT COUNT(*) FROM runtime_events`) >= 250
	})
	t.Logf("250 events in runtime_events %v after the last 202", took)
	checkEventsOnce(t, f, ids)
}

// like100 has 100 distinct users like post p1, with repeats and an
// unlike/relike, and returns the fixture.
func like100(t *testing.T, f *fixture) {
	t.Helper()
	var wg sync.WaitGroup
	var bad atomic.Int64
	sem := make(chan struct{}, 16)
	for u := 0; u < 100; u++ {
		for rep := 0; rep < 1+u%3; rep++ {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				if r := f.do("PUT", "/posts/p1/like", fmt.Sprintf("user-%03d", u), nil); r.status != 200 {
					bad.Add(1)
					t.Errorf("like: %d %s", r.status, r.body)
				}
			}()
		}
	}
	wg.Wait()
	if r := f.do("DELETE", "/posts/p1/like", "user-007", nil); r.status != 200 {
		t.Fatalf("unlike: %d %s", r.status, r.body)
	}
	if r := f.do("PUT", "/posts/p1/like", "user-007", nil); r.status != 200 {
		t.Fatalf("relike: %d %s", r.status, r.body)
	}
}

func (f *fixture) likes(t *testing.T, post string) int64 {
	t.Helper()
	var st PostStats
	r := f.do("GET", "/posts/"+url.PathEscape(post)+"/stats", "", nil)
	if r.status != 200 {
		t.Fatalf("stats: %d %s", r.status, r.body)
	}
	r.json(t, &st)
	return st.Likes
}

func TestIntegrationLikes100EachMode(t *testing.T) {
	checkLikes100(t, envOpts{virtual: true, shards: 32}, ModePrimary, ModeShadow, ModeOff)
}

// checkLikes100: in each of modes, like100's concurrent likes count each
// like once, in the counter and in the source rows, with no fallback from
// the shards in primary.
func checkLikes100(t *testing.T, o envOpts, modes ...Mode) {
	for _, mode := range modes {
		t.Run(string(mode), func(t *testing.T) {
			e := startReal(t, o)
			cfg := testConfig()
			cfg.CounterMode = mode
			f := newFixture(t, cfg, e.deps())
			like100(t, f)
			e.settle(t, 10*time.Second, "likes = 100", func() bool { return f.likes(t, "p1") >= 100 })
			e.idle(t)
			if n := f.likes(t, "p1"); n != 100 {
				t.Fatalf("likes = %d, want 100", n)
			}
			if n := f.scalar(`SELECT COUNT(*) FROM likes WHERE post_id = ?`, "p1"); n != 100 {
				t.Fatalf("%d likes rows, want 100", n)
			}
			if mode == ModePrimary && f.logs.count(CodeCounterEnqueueFailed) != 0 {
				t.Fatalf("unexpected fallbacks:\n%s", f.logs)
			}
		})
	}
}

func TestIntegrationFollowsAndRuns(t *testing.T) {
	e := startReal(t, envOpts{virtual: true})
	f := e.fixture(t)
	for u := 0; u < 20; u++ {
		f.do("PUT", "/users/star/follow", fmt.Sprint("fan-", u), nil)
	}
	f.do("DELETE", "/users/star/follow", "fan-3", nil)
	for i := 0; i < 7; i++ {
		f.do("POST", "/posts/p2/runs", "fan-1", nil)
	}
	f.do("POST", "/posts/p2/views", "fan-1", nil)
	var c, fan UserCounters
	e.settle(t, 10*time.Second, "followers flushed", func() bool {
		f.do("GET", "/users/star/counters", "", nil).json(t, &c)
		f.do("GET", "/users/fan-0/counters", "", nil).json(t, &fan)
		return c.Followers == 19 && fan.Following == 1
	})
	var st PostStats
	e.settle(t, 10*time.Second, "runs flushed", func() bool {
		f.do("GET", "/posts/p2/stats", "", nil).json(t, &st)
		return st.Runs == 7 && st.Views == 1
	})
}

func TestIntegrationProxyRateLimit(t *testing.T) {
	e := startReal(t, envOpts{})
	up := newUpstream(t, "http://127.0.0.1:1")
	cfg := testConfig()
	cfg.Proxy.AllowHosts = []string{up.hostPort()}
	cfg.Proxy.UserLimit = Limit{5, time.Minute}
	f := newFixture(t, cfg, e.deps())
	for i := 0; i < 5; i++ {
		if r := f.do("GET", proxyPath(up.srv.URL+"/hello"), "alice", nil); r.status != 200 {
			t.Fatalf("request %d: %d %s", i, r.status, r.body)
		}
	}
	r := f.do("GET", proxyPath(up.srv.URL+"/hello"), "alice", nil)
	if r.status != 429 {
		t.Fatalf("6th request: %d %s", r.status, r.body)
	}
	ra, err := strconv.Atoi(r.header.Get("Retry-After"))
	if err != nil || ra < 1 || ra > 120 {
		t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
	}
	if !strings.Contains(r.header.Get("RateLimit"), `"user";r=0`) {
		t.Fatalf("RateLimit %q", r.header.Get("RateLimit"))
	}
	if f.logs.count(CodeRateLimitSQL) != 0 {
		t.Fatalf("the shard path fell back:\n%s", f.logs)
	}
	// The shard holds the bucket.
	resp, err := e.ns(t, "RATE_LIMIT_SHARD").Fetch(context.Background(), "user:alice", &abi.Request{Method: "GET", Path: "/bucket?key=user:alice"})
	if err != nil || resp.Status != 200 {
		t.Fatalf("bucket: %v %+v", err, resp)
	}
	// Refused addresses stay refused with the real limiter in front.
	for _, target := range []string{"http://127.0.0.1:1/", "http://169.254.169.254/latest/meta-data/", up.srv.URL + "/redirect-loopback"} {
		if r := f.do("GET", proxyPath(target), "bob", nil); r.status != 403 || r.errCode() != "forbidden_address" {
			t.Fatalf("%s: %d %s", target, r.status, r.body)
		}
	}
}

// TestIntegrationMissingBindingsFallBack: a host without COUNTER_SHARD or
// RUNTIME_EVENT_SHARD serves every write through the legacy/inline path,
// logging the fallback codes, and loses nothing.
func TestIntegrationMissingBindingsFallBack(t *testing.T) {
	t.Run("counters", func(t *testing.T) {
		e := startReal(t, envOpts{virtual: true, omit: "COUNTER_SHARD"})
		f := e.fixture(t)
		like100(t, f)
		if n := f.likes(t, "p1"); n != 100 {
			t.Fatalf("likes = %d, want 100 at once (legacy path)", n)
		}
		if n := f.logs.count(CodeCounterEnqueueFailed); n < 101 {
			t.Fatalf("%d %s logs, want one per real change (101)", n, CodeCounterEnqueueFailed)
		}
		if !strings.Contains(f.logs.String(), "binding is not configured") {
			t.Fatal("no startup warning for the missing binding")
		}
	})
	t.Run("events", func(t *testing.T) {
		e := startReal(t, envOpts{virtual: true, omit: "RUNTIME_EVENT_SHARD"})
		f := e.fixture(t)
		ids := postEvents(t, f, 250, 50)
		checkEventsOnce(t, f, ids)
		if f.logs.count(CodeEventEnqueueFailed) == 0 {
			t.Fatalf("no %s logged", CodeEventEnqueueFailed)
		}
	})
}

// flaky fails every other call to its namespace.
type flaky struct {
	inner Shards
	n     atomic.Int64
}

func (f *flaky) Shards() int { return f.inner.Shards() }

func (f *flaky) FetchShard(ctx context.Context, shard string, req *abi.Request) (*abi.Response, error) {
	if f.n.Add(1)%2 == 0 {
		return nil, fmt.Errorf("flaky shard %s: %w", shard, errInjected)
	}
	return f.inner.FetchShard(ctx, shard, req)
}

// TestIntegrationFlakyShardsLoseNothing: with half of all shard calls
// failing, every acknowledged event and like is stored exactly once.
func TestIntegrationFlakyShardsLoseNothing(t *testing.T) {
	e := startReal(t, envOpts{virtual: true})
	d := e.deps()
	d.Events = &flaky{inner: e.ns(t, "RUNTIME_EVENT_SHARD")}
	d.Counter = &flaky{inner: e.ns(t, "COUNTER_SHARD")}
	d.RateLimit = &flaky{inner: e.ns(t, "RATE_LIMIT_SHARD")}
	f := newFixture(t, testConfig(), d)
	ids := postEvents(t, f, 250, 10)
	like100(t, f)
	e.settle(t, 10*time.Second, "events and likes flushed", func() bool {
		return f.scalar(`SELECT COUNT(*) FROM runtime_events`) >= 250 && f.likes(t, "p1") >= 100
	})
	e.idle(t)
	checkEventsOnce(t, f, ids)
	if n := f.likes(t, "p1"); n != 100 {
		t.Fatalf("likes = %d, want 100", n)
	}
	if f.logs.count(CodeEventEnqueueFailed) == 0 || f.logs.count(CodeCounterEnqueueFailed) == 0 {
		t.Fatal("fallbacks were not logged")
	}
}

// TestIntegrationSQLDown: shard and SQL both failing → 503 with 2138/2145
// and nothing acknowledged; with a healthy shard a write is acknowledged
// (durable in the shard) and reaches SQL once it is back... here it stays
// buffered, and the shard keeps retrying.
func TestIntegrationSQLDown(t *testing.T) {
	e := startReal(t, envOpts{virtual: true})
	d := e.deps()
	d.Events = failing(e.ns(t, "RUNTIME_EVENT_SHARD"))
	d.Counter = failing(e.ns(t, "COUNTER_SHARD"))
	f := newFixture(t, testConfig(), d)
	e.db.Close()
	r := f.do("POST", "/runtime-events", "u1", batch(3, 0))
	if r.status != 503 || r.errCode() != "events_unavailable" {
		t.Fatalf("events: %d %s", r.status, r.body)
	}
	r = f.do("POST", "/posts/p1/views", "u1", nil)
	if r.status != 503 || r.errCode() != "counters_unavailable" {
		t.Fatalf("views: %d %s", r.status, r.body)
	}
	if f.logs.count(CodeEventFallbackFailed) == 0 || f.logs.count(CodeCounterLegacyFailed) == 0 {
		t.Fatalf("codes missing:\n%s", f.logs)
	}
	if r := f.do("GET", "/posts/p1/stats", "", nil); r.status != 503 {
		t.Fatalf("stats with SQL down: %d", r.status)
	}
}

// TestIntegrationReconcile: reconcile flushes the counter shards first, so
// buffered likes are applied rather than corrected, and repairs real drift.
func TestIntegrationReconcile(t *testing.T) {
	e := startReal(t, envOpts{virtual: true})
	f := e.fixture(t)
	for u := 0; u < 20; u++ {
		f.do("PUT", "/posts/p1/like", fmt.Sprint("u", u), nil)
	}
	f.do("PUT", "/users/b/follow", "a", nil)
	// A like whose delta was lost: the process died between the likes row
	// and the shard call.
	mustExec(t, f.db.SQL(), `INSERT INTO likes (post_id, user_id, created_at) VALUES ('p9', 'ghost', 0)`)
	rep, err := f.api.ReconcileCounters(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Corrected != 1 || rep.Corrections[0].ID != "p9" {
		b, _ := json.Marshal(rep)
		t.Fatalf("report %s", b)
	}
	if n := f.likes(t, "p1"); n != 20 {
		t.Fatalf("p1 likes = %d right after reconcile, want 20 (drained)", n)
	}
	e.idle(t)
	if n := f.likes(t, "p1"); n != 20 {
		t.Fatalf("p1 likes = %d after the alarms, want 20 (not double counted)", n)
	}
	if n := f.likes(t, "p9"); n != 1 {
		t.Fatalf("p9 likes = %d, want 1", n)
	}
	if n := f.scalar(`SELECT COUNT(*) FROM counter_reconcile_log WHERE row_id = 'p9'`); n != 1 {
		t.Fatalf("reconcile log rows %d", n)
	}
}
