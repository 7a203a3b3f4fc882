package edge

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/edgeshard/edgeshard/storage"
)

// Fault injection on the real plugins in a real host, through the edge API:
// the shards' SQL failing for a while, a shard whose storage keeps failing,
// alarm handlers that keep trapping. See also host/fault_test.go (the
// storage engine under a failing disk) and cmd/edgeshard-crashtest
// (kill -9).

// diskFull is what a write to a full disk returns.
var diskFull = fmt.Errorf("badger: write WAL: %w", &os.PathError{Op: "write", Path: "00001.mem", Err: syscall.ENOSPC})

// faultStorage wraps the shards' storage backend: a group of batches with
// one of a failing namespace is refused whole (as a failing disk would
// refuse the group's transaction). The tests keep other namespaces quiet
// while one fails, so no other shard shares a refused group.
type faultStorage struct {
	storage.Backend
	mu      sync.Mutex
	failing map[string]bool
	refused atomic.Int64
	delay   atomic.Int64 // nanoseconds every Apply takes first (a stalling fsync)
}

func newFaultStorage() *faultStorage {
	return &faultStorage{Backend: storage.NewMemory(), failing: map[string]bool{}}
}

func (s *faultStorage) fail(namespace string, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failing[namespace] = on
}

func (s *faultStorage) Apply(batches []*storage.Batch) error {
	time.Sleep(time.Duration(s.delay.Load()))
	s.mu.Lock()
	refuse := false
	for _, b := range batches {
		refuse = refuse || s.failing[b.Shard.Namespace]
	}
	s.mu.Unlock()
	if refuse {
		s.refused.Add(int64(len(batches)))
		return diskFull
	}
	return s.Backend.Apply(batches)
}

// keys counts the keys with prefix over every shard of a binding, as each
// shard's next event would see them.
func (e *realEnv) keys(t *testing.T, binding, prefix string) int {
	t.Helper()
	ns := e.ns(t, binding)
	n := 0
	for i := 0; i < ns.Shards(); i++ {
		var lerr error
		err := ns.Inspect(context.Background(), strconv.Itoa(i), func(st host.StorageView) {
			var kvs []abi.KV
			kvs, lerr = st.List(abi.ListOptions{Prefix: prefix})
			n += len(kvs)
		})
		if err = errors.Join(err, lerr); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

// tick advances the virtual clock a second at a time for d, letting the
// alarms of each second run.
func (e *realEnv) tick(d time.Duration) {
	for v := time.Duration(0); v < d; v += time.Second {
		e.vc.Advance(time.Second)
		time.Sleep(60 * time.Millisecond)
	}
}

func postStat(t *testing.T, f *fixture, post, column string) int64 {
	t.Helper()
	var n int64
	err := f.db.SQL().QueryRow(`SELECT `+column+` FROM post_stats WHERE post_id = ?`, post).Scan(&n)
	if err != nil {
		return 0
	}
	return n
}

func hit(t *testing.T, f *fixture, path string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if r := f.do("POST", path, "u1", nil); r.status != 202 {
			t.Fatalf("POST %s: %d %s", path, r.status, r.body)
		}
	}
}

// TestFaultSQLDownForAWhile: the shards' database fails for 20 s (virtual)
// while the edge keeps acknowledging events, views and runs (durable in the
// shards). Every flush fails and is retried by alarm once a second — no
// tighter — with E-VIBECODR-2131/2141; nothing reaches SQL and the buffers
// keep every event and delta. When the database is back (its first flushes
// crash right after their commit, the worst moment) every acknowledged
// write lands exactly once, and stays so.
func TestFaultSQLDownForAWhile(t *testing.T) {
	db := &testutil.FaultDB{}
	e := startReal(t, envOpts{virtual: true, sql: func(inner host.SQLDB) host.SQLDB { db.DB = inner; return db }})
	f := e.fixture(t)
	db.Set(testutil.SQLFail, 0)

	ids := postFlowWrites(t, f, "sq")
	e.tick(20 * time.Second)
	if n := f.scalar(`SELECT COUNT(*) FROM runtime_events`); n != 0 {
		t.Fatalf("%d runtime_events rows while SQL is down", n)
	}
	if n := f.scalar(`SELECT COUNT(*) FROM post_stats`); n != 0 {
		t.Fatalf("%d post_stats rows while SQL is down", n)
	}
	if n := e.keys(t, "RUNTIME_EVENT_SHARD", "ev:"); n != 250 {
		t.Fatalf("%d events buffered, want all 250 kept", n)
	}
	if d, in := e.keys(t, "COUNTER_SHARD", "d:"), e.keys(t, "COUNTER_SHARD", "inflight"); d == 0 && in == 0 {
		t.Fatal("no counter delta kept while SQL is down")
	}
	// Retried about once a second per shard, not in a hot loop.
	failedBy := map[string]int{}
	for _, code := range []string{"E-VIBECODR-2131", "E-VIBECODR-2141"} {
		for _, m := range e.logs.Records(func(m map[string]any) bool { return m["code"] == code }) {
			failedBy[code+" "+fmt.Sprint(m["shard"])]++
		}
	}
	if len(failedBy) == 0 {
		t.Fatal("no failed flush was logged")
	}
	for k, n := range failedBy {
		if n > 22 {
			t.Fatalf("%s: %d failed flushes in 20 s: retried faster than once a second", k, n)
		}
	}
	for _, code := range []string{"E-VIBECODR-2131", "E-VIBECODR-2141"} {
		busiest := 0
		for k, n := range failedBy {
			if strings.HasPrefix(k, code) {
				busiest = max(busiest, n)
			}
		}
		if busiest < 10 {
			t.Fatalf("%s: at most %d failed flushes per shard in 20 s: not retried every second", code, busiest)
		}
	}

	// Back, with the worst timing for the first flushes.
	db.Set(testutil.SQLCrashAfter, 4)
	checkFlowWritesOnce(t, e, f, "sq", ids)
	if n := e.keys(t, "RUNTIME_EVENT_SHARD", "ev:") + e.keys(t, "COUNTER_SHARD", "d:") + e.keys(t, "COUNTER_SHARD", "inflight"); n != 0 {
		t.Fatalf("%d keys still buffered after the flushes", n)
	}
	if db.Hits() < 20 {
		t.Fatalf("only %d SQL calls failed", db.Hits())
	}
}

// TestFaultShardKeepsFailingFallsBack: a shard namespace whose storage
// keeps refusing writes (disk full) answers storage_commit_failed; the
// edge falls back per request with E-VIBECODR-2144 (legacy counter update)
// or 2137 (inline event insert) and still acknowledges; when the storage is
// back the shards serve again with no fallback; with SQL down too the
// client gets 503 and 2145 / 2138 — never a 2xx for a write that is not
// durable. Every acknowledged write is in SQL exactly once.
func TestFaultShardKeepsFailingFallsBack(t *testing.T) {
	st := newFaultStorage()
	e := startReal(t, envOpts{virtual: true, storage: st})
	f := e.fixture(t)

	// Counters: 5 views buffered in the shard, then 10 while its storage
	// refuses writes, then 5 more once it is back.
	hit(t, f, "/posts/fb1/views", 5)
	st.fail("COUNTER_SHARD", true)
	hit(t, f, "/posts/fb1/views", 10)
	if r := f.do("PUT", "/posts/fb1/like", "liker", nil); r.status != 200 {
		t.Fatalf("like while the shard fails: %d %s", r.status, r.body)
	}
	if n := f.logs.count(CodeCounterEnqueueFailed); n != 11 {
		t.Fatalf("%d %s logs, want one per request (11)", n, CodeCounterEnqueueFailed)
	}
	if !strings.Contains(f.logs.String(), "no space left on device") {
		t.Fatal("the fallback log does not carry the shard's error")
	}
	if v, l := postStat(t, f, "fb1", "views"), postStat(t, f, "fb1", "likes"); v != 10 || l != 1 {
		t.Fatalf("legacy path: views %d likes %d, want 10 and 1 at once", v, l)
	}
	st.fail("COUNTER_SHARD", false)
	hit(t, f, "/posts/fb1/views", 5)
	if n := f.logs.count(CodeCounterEnqueueFailed); n != 11 {
		t.Fatalf("fallback taken with the shard healthy again (%d logs)", n)
	}

	// Events: the same with the event shards.
	ids := postEvents(t, f, 30, 10)
	st.fail("RUNTIME_EVENT_SHARD", true)
	ids = append(ids, postEvents(t, f, 30, 10)...)
	if f.logs.count(CodeEventEnqueueFailed) == 0 {
		t.Fatalf("no %s logged", CodeEventEnqueueFailed)
	}
	if n := f.scalar(`SELECT COUNT(*) FROM runtime_events`); n != 30 {
		t.Fatalf("%d rows after the inline fallback, want the 30 events sent while the shards failed", n)
	}
	st.fail("RUNTIME_EVENT_SHARD", false)
	ids = append(ids, postEvents(t, f, 30, 10)...)

	e.settle(t, time.Minute, "shards flushed", func() bool {
		return postStat(t, f, "fb1", "views") >= 20 && f.scalar(`SELECT COUNT(*) FROM runtime_events`) >= 90
	})
	e.idle(t)
	if v := postStat(t, f, "fb1", "views"); v != 20 {
		t.Fatalf("views = %d, want 20 (5 + 10 legacy + 5)", v)
	}
	checkEventsOnce(t, f, ids)
	if st.refused.Load() == 0 {
		t.Fatal("no write was refused")
	}

	// Storage failing and SQL down: 503, never a 2xx.
	st.fail("COUNTER_SHARD", true)
	st.fail("RUNTIME_EVENT_SHARD", true)
	e.db.Close()
	if r := f.do("POST", "/posts/fb1/views", "u1", nil); r.status != 503 || r.errCode() != "counters_unavailable" {
		t.Fatalf("views with shard and SQL down: %d %s", r.status, r.body)
	}
	r := f.do("POST", "/runtime-events", "u1", batch(3, 0))
	if r.status != 503 || r.errCode() != "events_unavailable" {
		t.Fatalf("events with shard and SQL down: %d %s", r.status, r.body)
	}
	var fail eventsFailure
	r.json(t, &fail)
	if len(fail.FailedIDs) != 3 || len(fail.IDs) != 0 {
		t.Fatalf("503 body: %s", r.body)
	}
	if f.logs.count(CodeCounterLegacyFailed) == 0 || f.logs.count(CodeEventFallbackFailed) == 0 {
		t.Fatalf("%s / %s not logged", CodeCounterLegacyFailed, CodeEventFallbackFailed)
	}
}

// TestFaultAlarmRetriesCappedThenRevived: a flush alarm whose handler
// traps every time (the SQL binding crashes the guest) is retried by the
// host on its virtual clock after 2, 4, 8, 16, 32 and 64 s, then abandoned
// — and nothing is lost: the events and deltas stay buffered, the next
// write re-arms the flush, and everything reaches SQL exactly once.
func TestFaultAlarmRetriesCappedThenRevived(t *testing.T) {
	for _, tc := range []struct {
		binding string
		write   func(t *testing.T, f *fixture) []string
		key     string // routes to the shard written
	}{
		{
			binding: "RUNTIME_EVENT_SHARD",
			key:     "cap-alarm",
			write: func(t *testing.T, f *fixture) []string {
				r := f.do("POST", "/runtime-events", "u1", `{"events":[{"type":"a","capsule_id":"cap-alarm"},{"type":"b","capsule_id":"cap-alarm"}]}`)
				if r.status != 202 {
					t.Fatalf("events: %d %s", r.status, r.body)
				}
				var rep eventsReply
				r.json(t, &rep)
				return rep.IDs
			},
		},
		{
			binding: "COUNTER_SHARD",
			key:     "p-alarm",
			write: func(t *testing.T, f *fixture) []string {
				hit(t, f, "/posts/p-alarm/views", 2)
				return nil
			},
		},
	} {
		t.Run(tc.binding, func(t *testing.T) {
			db := &testutil.FaultDB{}
			e := startReal(t, envOpts{virtual: true, sql: func(inner host.SQLDB) host.SQLDB { db.DB = inner; return db }})
			f := e.fixture(t)
			ns := e.ns(t, tc.binding)
			shard, err := ns.ShardFor(tc.key)
			if err != nil {
				t.Fatal(err)
			}
			db.Set(testutil.SQLCrashBefore, 0)
			ids := tc.write(t, f)
			due, ok := ns.AlarmAt(shard)
			if !ok || !due.Equal(e.vc.Now().Add(5*time.Second)) {
				t.Fatalf("flush alarm at %v (%v), want in 5 s", due, ok)
			}
			retries := func() []map[string]any {
				return e.logs.Records(func(m map[string]any) bool {
					return m["binding"] == tc.binding && m["shard"] == shard && m["message"] == "alarm failed; retrying with backoff"
				})
			}
			e.vc.Set(due)
			for retry := 1; retry <= 6; retry++ {
				waitFor(t, 30*time.Second, fmt.Sprintf("failure %d", retry), func() bool { return len(retries()) == retry })
				last := retries()[retry-1]
				if fmt.Sprint(last["retry"]) != strconv.Itoa(retry) || !strings.Contains(fmt.Sprint(last["error"]), "injected crash") {
					t.Fatalf("retry log %v", last)
				}
				next, ok := ns.AlarmAt(shard)
				want := due.Add(time.Duration(2<<(retry-1)) * time.Second)
				if !ok || !next.Equal(want) {
					t.Fatalf("retry %d scheduled at %v (%v), want %v (+%ds)", retry, next, ok, want, 2<<(retry-1))
				}
				e.vc.Advance(want.Sub(due) - time.Millisecond)
				time.Sleep(50 * time.Millisecond)
				if n := len(retries()); n != retry {
					t.Fatalf("retry %d ran early", retry)
				}
				e.vc.Advance(time.Millisecond)
				due = want
			}
			waitFor(t, 30*time.Second, "the alarm to be abandoned", func() bool {
				return len(e.logs.Records(func(m map[string]any) bool {
					return m["binding"] == tc.binding && m["shard"] == shard && m["message"] == "alarm abandoned after its last retry"
				})) == 1
			})
			if _, ok := ns.AlarmAt(shard); ok {
				t.Fatal("alarm still scheduled after its sixth retry")
			}
			if n := db.Hits(); n != 7 {
				t.Fatalf("%d flush attempts, want 7 (the alarm and 6 retries)", n)
			}
			e.vc.Advance(10 * time.Minute) // nothing more runs by itself
			time.Sleep(200 * time.Millisecond)
			if n := db.Hits(); n != 7 {
				t.Fatalf("the abandoned alarm ran again (%d attempts)", n)
			}
			// Abandoned is not lost: the data waits in the shard.
			buffered := e.keys(t, tc.binding, "ev:") + e.keys(t, tc.binding, "d:") + e.keys(t, tc.binding, "inflight")
			if buffered == 0 {
				t.Fatal("the buffered writes were dropped with the alarm")
			}

			// Revived by the next write, with SQL healthy.
			db.Set(testutil.SQLOK, 0)
			ids = append(ids, tc.write(t, f)...)
			e.settle(t, time.Minute, "flushed after the revival", func() bool {
				if tc.binding == "COUNTER_SHARD" {
					return postStat(t, f, "p-alarm", "views") >= 4
				}
				return f.scalar(`SELECT COUNT(*) FROM runtime_events`) >= 4
			})
			e.idle(t)
			if tc.binding == "COUNTER_SHARD" {
				if v := postStat(t, f, "p-alarm", "views"); v != 4 {
					t.Fatalf("views = %d, want 4", v)
				}
			} else {
				checkEventsOnce(t, f, ids)
			}
		})
	}
}

// TestFaultSlowDiskDoesNotDoubleCount: when the shard's commit outlasts the
// edge's shard_timeout (a stalling disk), the write is not taken for
// failed: the edge waits for its real outcome instead of also applying it
// through the legacy SQL path, which would count it twice once the commit
// lands.
func TestFaultSlowDiskDoesNotDoubleCount(t *testing.T) {
	st := newFaultStorage()
	e := startReal(t, envOpts{virtual: true, storage: st})
	cfg := testConfig()
	cfg.ShardTimeout = 300 * time.Millisecond
	f := newFixture(t, cfg, e.deps())
	hit(t, f, "/posts/slow/views", 1) // instances up, alarm set
	st.delay.Store(int64(time.Second))
	hit(t, f, "/posts/slow/views", 1)
	st.delay.Store(0)
	if n := f.logs.count(CodeCounterEnqueueFailed); n != 0 {
		t.Fatalf("%d fallbacks for a write the shard made durable", n)
	}
	e.settle(t, time.Minute, "views flushed", func() bool { return postStat(t, f, "slow", "views") >= 2 })
	e.idle(t)
	if v := postStat(t, f, "slow", "views"); v != 2 {
		t.Fatalf("views = %d, want 2", v)
	}
}

// postFlowWrites posts 250 runtime events (batches of 50) and 10 views and
// 5 runs to each of the posts <prefix>0..3; it returns the events' ids.
func postFlowWrites(t *testing.T, f *fixture, prefix string) []string {
	t.Helper()
	ids := postEvents(t, f, 250, 50)
	for p := 0; p < 4; p++ {
		hit(t, f, fmt.Sprintf("/posts/%s%d/views", prefix, p), 10)
		hit(t, f, fmt.Sprintf("/posts/%s%d/runs", prefix, p), 5)
	}
	return ids
}

// checkFlowWritesOnce waits until postFlowWrites' writes are flushed, lets
// every pending alarm run, and wants each in SQL exactly once.
func checkFlowWritesOnce(t *testing.T, e *realEnv, f *fixture, prefix string, ids []string) {
	t.Helper()
	e.settle(t, 2*time.Minute, "every write flushed", func() bool {
		if f.scalar(`SELECT COUNT(*) FROM runtime_events`) < 250 {
			return false
		}
		for p := 0; p < 4; p++ {
			if postStat(t, f, fmt.Sprintf("%s%d", prefix, p), "views") < 10 || postStat(t, f, fmt.Sprintf("%s%d", prefix, p), "runs") < 5 {
				return false
			}
		}
		return true
	})
	e.idle(t)
	e.tick(10 * time.Second)
	e.idle(t)
	checkEventsOnce(t, f, ids)
	for p := 0; p < 4; p++ {
		if v, r := postStat(t, f, fmt.Sprintf("%s%d", prefix, p), "views"), postStat(t, f, fmt.Sprintf("%s%d", prefix, p), "runs"); v != 10 || r != 5 {
			t.Fatalf("%s%d: views %d runs %d, want 10 and 5", prefix, p, v, r)
		}
	}
}
