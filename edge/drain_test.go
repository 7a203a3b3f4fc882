package edge

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/testutil"
)

// TestDrain: with the clock held (no alarm fires), events, views and likes
// sit in their shards; Drain flushes every one of them to SQL and reports
// the host empty. With the shards' SQL failing it keeps trying until its
// wait passes and names what is left, with the error; once SQL answers, a
// drain empties them.
func TestDrain(t *testing.T) {
	db := &testutil.FaultDB{}
	e := startReal(t, envOpts{virtual: true, node: "pop-d", sql: func(inner host.SQLDB) host.SQLDB { db.DB = inner; return db }})
	cfg := testConfig()
	cfg.NodeID = "pop-d"
	f := newFixture(t, cfg, e.deps())
	ids := postEvents(t, f, 120, 40)
	hit(t, f, "/posts/d1/views", 7)
	f.do("PUT", "/posts/d1/like", "u1", nil)
	if n := f.scalar(`SELECT COUNT(*) FROM runtime_events`) + f.scalar(`SELECT COUNT(*) FROM post_stats`); n != 0 {
		t.Fatalf("%d rows in SQL before the drain: the clock should hold every flush back", n)
	}
	rep, err := f.api.Drain(context.Background(), 20*time.Second)
	if err != nil || !rep.Empty || rep.Node != "pop-d" || len(rep.Bindings) != 2 {
		t.Fatalf("drain: %+v %v", rep, err)
	}
	if rep.Bindings[0].Binding != "RUNTIME_EVENT_SHARD" || rep.Bindings[0].Flushed != 120 || rep.Bindings[1].Flushed != 2 {
		t.Fatalf("flushed: %+v", rep.Bindings)
	}
	checkEventsOnce(t, f, ids)
	if v, l := postStat(t, f, "d1", "views"), postStat(t, f, "d1", "likes"); v != 7 || l != 1 {
		t.Fatalf("views %d likes %d after the drain, want 7 and 1", v, l)
	}

	db.Set(testutil.SQLFail, 0)
	postEvents(t, f, 10, 10)
	hit(t, f, "/posts/d2/views", 1)
	t0 := time.Now()
	rep, err = f.api.Drain(context.Background(), 700*time.Millisecond)
	if err != nil || rep.Empty || time.Since(t0) < 700*time.Millisecond {
		t.Fatalf("drain with SQL down: %+v %v after %v", rep, err, time.Since(t0))
	}
	var left []string
	held := map[string]int{}
	for _, b := range rep.Bindings {
		for _, p := range b.Pending {
			left = append(left, fmt.Sprintf("%s/%d %d+%d %s", b.Binding, p.Shard, p.Buffered, p.Inflight, p.Error))
			held[b.Binding] += p.Buffered + p.Inflight
			if !strings.Contains(p.Error, "flush_failed") {
				t.Errorf("%s/%d left without the flush's error: %+v", b.Binding, p.Shard, p)
			}
		}
	}
	if held["RUNTIME_EVENT_SHARD"] != 10 || held["COUNTER_SHARD"] != 1 {
		t.Fatalf("pending with SQL down (want 10 events, 1 delta):\n%s", strings.Join(left, "\n"))
	}
	db.Set(testutil.SQLOK, 0)
	if rep, err := f.api.Drain(context.Background(), 20*time.Second); err != nil || !rep.Empty {
		t.Fatalf("drain once SQL is back: %+v %v", rep, err)
	}
	if n := postStat(t, f, "d2", "views"); n != 1 {
		t.Fatalf("views of d2 = %d", n)
	}
}
