//go:build !wasip1

package main_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/conformance"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/edgeshard/edgeshard/plugins/internal/plugintest"
)

const (
	binding = "COUNTER_SHARD"
	okCode  = "E-VIBECODR-2140"
	errCode = "E-VIBECODR-2141"
)

func start(t *testing.T) *plugintest.Fixture {
	t.Helper()
	return plugintest.New(t, plugintest.Options{Plugin: "plugins/counters", Binding: binding, SQL: true})
}

func incr(t *testing.T, f *plugintest.Fixture, key, body string) plugintest.Resp {
	t.Helper()
	r := f.Fetch(t, key, "POST", "/increment", body)
	if r.Status != 202 {
		t.Fatalf("increment %q: %d %s", body, r.Status, r.Body)
	}
	return r
}

func likes(t *testing.T, f *plugintest.Fixture, post string) int64 {
	t.Helper()
	return f.QueryInt(t, "SELECT likes FROM post_stats WHERE post_id = ?", post)
}

func flushSeq(t *testing.T, f *plugintest.Fixture, key string) int64 {
	t.Helper()
	return f.QueryInt(t, "SELECT seq FROM counter_flushes WHERE node = ? AND shard = ?", f.Opts.Node, binding+"/"+f.Shard(t, key))
}

// flushAll runs the alarm chain to the end: 5 s for the freeze, then the
// alarm the freeze sets to now sends the batch.
func flushAll(t *testing.T, f *plugintest.Fixture, key string) {
	t.Helper()
	f.Advance(t, key, 5*time.Second)
	plugintest.WaitFor(t, "flush chain to finish", func() bool {
		st := f.Storage(t, key)
		_, inflight := st["inflight"]
		_, due := f.Alarm(t, key)
		return !inflight && !due
	})
}

func TestDeltasCoalesceAndFlushOnAlarm(t *testing.T) {
	f := start(t)
	r := incr(t, f, "p1", "post_stats\tp1\tlikes\t1\npost_stats\tp1\tviews\t10\n")
	if r.Body != `{"ok":true,"buffered":2}` {
		t.Fatalf("response: %s", r.Body)
	}
	if in := f.AlarmIn(t, "p1"); in != 5*time.Second {
		t.Fatalf("alarm in %v, want 5s", in)
	}
	f.Clock.Advance(time.Second)
	incr(t, f, "p1", "post_stats\tp1\tlikes\t2\n")
	incr(t, f, "p1", "post_stats\tp1\tlikes\t1\npost_stats\tp1\tlikes\t-1\npost_stats\tp1\tviews\t5\n")
	st := f.Storage(t, "p1")
	if st["d:post_stats\tp1\tlikes"] != "3" || st["d:post_stats\tp1\tviews"] != "15" || f.CountPrefix(t, "p1", "d:") != 2 {
		t.Fatalf("buffer: %q", st)
	}
	if in := f.AlarmIn(t, "p1"); in != 4*time.Second {
		t.Fatalf("alarm moved: in %v, want 4s (5 s after the first delta)", in)
	}
	if p := f.Fetch(t, "p1", "GET", "/pending", ""); p.Body != `{"buffered":2,"inflight":0,"seq":0}` {
		t.Fatalf("pending: %s", p.Body)
	}
	f.Advance(t, "p1", 4*time.Second)
	plugintest.WaitFor(t, "flush", func() bool { return likes(t, f, "p1") == 3 })
	if v := f.QueryInt(t, "SELECT views FROM post_stats WHERE post_id = 'p1'"); v != 15 {
		t.Fatalf("views = %d", v)
	}
	if u := f.QueryInt(t, "SELECT updated_at FROM post_stats WHERE post_id = 'p1'"); u != plugintest.Start.UnixMilli()+5000 {
		t.Fatalf("updated_at = %d", u)
	}
	plugintest.WaitFor(t, "cleanup", func() bool { _, ok := f.Storage(t, "p1")["inflight"]; return !ok })
	st = f.Storage(t, "p1")
	if st["seq"] != "1" || f.CountPrefix(t, "p1", "d:") != 0 {
		t.Fatalf("storage after the flush: %q", st)
	}
	if s := flushSeq(t, f, "p1"); s != 1 {
		t.Fatalf("counter_flushes seq = %d", s)
	}
	logs := f.Logs.WithCode(okCode)
	shard := binding + "/" + f.Shard(t, "p1")
	if len(logs) != 1 || logs[0]["shard"] != shard || logs[0]["count"] != "2" || logs[0]["seq"] != "1" || logs[0]["duration_ms"] != "0" {
		t.Fatalf("flush logs: %v", logs)
	}
	if _, ok := f.Alarm(t, "p1"); ok {
		t.Fatal("alarm left with nothing buffered")
	}
}

func TestDeltasSummingToZeroAreDeleted(t *testing.T) {
	f := start(t)
	incr(t, f, "p2", "post_stats\tp2\tlikes\t1\n")
	incr(t, f, "p2", "post_stats\tp2\tlikes\t-1\n")
	if n := f.CountPrefix(t, "p2", "d:"); n != 0 {
		t.Fatalf("%d buffered keys after +1 −1", n)
	}
	flushAll(t, f, "p2")
	if n := likes(t, f, "p2"); n != -1 {
		t.Fatalf("a zero sum reached SQL: likes = %d", n)
	}
}

func TestUpdatesClampAtZero(t *testing.T) {
	f := start(t)
	if _, err := f.DB.SQL().Exec(`INSERT INTO post_stats (post_id, likes, runs) VALUES ('old', 2, 7)`); err != nil {
		t.Fatal(err)
	}
	incr(t, f, "x", "post_stats\tnew\tlikes\t-5\npost_stats\told\tlikes\t-5\npost_stats\told\truns\t3\n"+
		"user_counters\tu1\tfollowers\t4\nuser_counters\tu1\tlikes_received\t-1\n")
	flushAll(t, f, "x")
	if n := likes(t, f, "new"); n != 0 {
		t.Fatalf("new row likes = %d, want 0", n)
	}
	if n := likes(t, f, "old"); n != 0 {
		t.Fatalf("old row likes = %d, want 0 (2 − 5 clamped)", n)
	}
	if n := f.QueryInt(t, "SELECT runs FROM post_stats WHERE post_id = 'old'"); n != 10 {
		t.Fatalf("runs = %d", n)
	}
	if n := f.QueryInt(t, "SELECT followers + 100 * likes_received FROM user_counters WHERE user_id = 'u1'"); n != 4 {
		t.Fatalf("user_counters: %d", n)
	}
	// A clamped counter goes up from 0, not from the negative sum.
	incr(t, f, "x", "post_stats\told\tlikes\t1\n")
	flushAll(t, f, "x")
	if n := likes(t, f, "old"); n != 1 {
		t.Fatalf("likes after +1 = %d, want 1", n)
	}
}

func TestShadowModeWritesNothing(t *testing.T) {
	f := start(t)
	r := f.Fetch(t, "p3", "POST", "/increment?mode=shadow", "post_stats\tp3\tlikes\t1\n")
	if r.Status != 202 || r.Body != `{"ok":true,"shadow":true}` {
		t.Fatalf("shadow: %d %s", r.Status, r.Body)
	}
	if st := f.Storage(t, "p3"); len(st) != 0 {
		t.Fatalf("shadow mode stored %q", st)
	}
	if _, ok := f.Alarm(t, "p3"); ok {
		t.Fatal("shadow mode set an alarm")
	}
	if r := f.Fetch(t, "p3", "POST", "/increment?mode=shadow", "post_stats\tp3\tlykes\t1\n"); r.Status != 400 || r.Code() != "unknown_column" {
		t.Fatalf("shadow mode must still validate: %d %s", r.Status, r.Body)
	}
	if r := f.Fetch(t, "p3", "POST", "/increment?mode=off", "post_stats\tp3\tlikes\t1\n"); r.Status != 400 || r.Code() != "bad_mode" {
		t.Fatalf("mode=off: %d %s", r.Status, r.Body)
	}
	if r := f.Fetch(t, "p3", "POST", "/increment?mode=primary", "post_stats\tp3\tlikes\t1\n"); r.Status != 202 {
		t.Fatalf("mode=primary: %d %s", r.Status, r.Body)
	}
}

// TestCrashAfterCommitIsExactlyOnce crashes the shard right after SQL
// committed a flush (before the shard could clear its inflight batch):
// the replay must not count twice, and deltas that arrive after the crash
// must not be lost.
func TestCrashAfterCommitIsExactlyOnce(t *testing.T) {
	f := start(t)
	incr(t, f, "p4", "post_stats\tp4\tlikes\t2\n")
	// Let the freeze happen, but not the send: one flush step (advancing
	// the clock to the 5 s alarm could also run the send it sets, within
	// the same Advance).
	if r := f.Fetch(t, "p4", "POST", "/flush", ""); r.Status != 200 {
		t.Fatalf("flush: %d %s", r.Status, r.Body)
	}
	if p := f.Fetch(t, "p4", "GET", "/pending", ""); p.Body != `{"buffered":0,"inflight":1,"seq":0}` {
		t.Fatalf("pending after freeze: %s", p.Body)
	}
	f.SQL.Set(testutil.SQLCrashAfter, 1)
	calls := f.SQL.Calls()
	f.Settle(t, "p4") // fires the send, which commits and crashes
	plugintest.WaitFor(t, "crashed send", func() bool { return f.SQL.Calls() > calls })
	plugintest.WaitFor(t, "retry alarm", func() bool { _, ok := f.Alarm(t, "p4"); return ok })
	if n := likes(t, f, "p4"); n != 2 {
		t.Fatalf("likes after the committed send = %d, want 2", n)
	}
	st := f.Storage(t, "p4")
	if _, ok := st["inflight"]; !ok || st["seq"] != "0" {
		t.Fatalf("the crash should have lost the event's cleanup: %q", st)
	}
	if !strings.Contains(f.Logs.String(), "injected crash") {
		t.Fatal("no crash in the host log")
	}
	// Deltas arriving after the crash.
	incr(t, f, "p4", "post_stats\tp4\tlikes\t5\n")
	// The host retries the failed alarm after 2 s: the replay of seq 1
	// changes nothing, then seq 2 carries the new delta.
	f.Advance(t, "p4", 2*time.Second)
	plugintest.WaitFor(t, "seq 2", func() bool { return flushSeq(t, f, "p4") == 2 })
	if n := likes(t, f, "p4"); n != 7 {
		t.Fatalf("likes = %d, want 7 (2 once, then 5)", n)
	}
	plugintest.WaitFor(t, "cleanup", func() bool { return f.Storage(t, "p4")["seq"] == "2" })
	var replayed, fresh int
	for _, l := range f.Logs.WithCode(okCode) {
		if l["replay"] == "true" {
			replayed++
			if l["seq"] != "1" {
				t.Fatalf("replay log: %v", l)
			}
		} else {
			fresh++
		}
	}
	if replayed != 1 || fresh != 1 {
		t.Fatalf("flush logs: %d replays, %d fresh; want 1 and 1:\n%s", replayed, fresh, f.Logs.String())
	}
}

func TestSQLFailureKeepsBatchAndRetriesAfterOneSecond(t *testing.T) {
	f := start(t)
	incr(t, f, "p5", "post_stats\tp5\tlikes\t1\n")
	flushAll(t, f, "p5") // seq 1 applied; the shard now knows its sequence
	incr(t, f, "p5", "post_stats\tp5\tlikes\t4\n")
	f.SQL.Set(testutil.SQLFail, 0)
	f.Advance(t, "p5", 5*time.Second)
	plugintest.WaitFor(t, "failure log", func() bool { return len(f.Logs.WithCode(errCode)) > 0 })
	l := f.Logs.WithCode(errCode)[0]
	if l["seq"] != "2" || l["count"] != "1" || l["level"] != "error" || !strings.Contains(fmt.Sprint(l["error"]), "injected") {
		t.Fatalf("failure log: %v", l)
	}
	if in := f.AlarmIn(t, "p5"); in != time.Second {
		t.Fatalf("retry alarm in %v, want 1s", in)
	}
	if p := f.Fetch(t, "p5", "GET", "/pending", ""); p.Body != `{"buffered":0,"inflight":1,"seq":1}` {
		t.Fatalf("pending: %s", p.Body)
	}
	// New deltas buffer beside the stuck batch.
	incr(t, f, "p5", "post_stats\tp5\tlikes\t10\n")
	f.Advance(t, "p5", time.Second)
	plugintest.WaitFor(t, "second failure", func() bool { return len(f.Logs.WithCode(errCode)) == 2 })
	f.SQL.Set(testutil.SQLOK, 0)
	f.Advance(t, "p5", time.Second)
	plugintest.WaitFor(t, "recovery", func() bool { return likes(t, f, "p5") == 15 })
	plugintest.WaitFor(t, "seq 3", func() bool { return flushSeq(t, f, "p5") == 3 })
}

func TestStateLossResumesSequenceFromSQL(t *testing.T) {
	f := start(t)
	// SQL remembers seq 41 for this shard; its storage is empty (lost).
	if _, err := f.DB.SQL().Exec(`INSERT INTO counter_flushes (node, shard, seq, flushed_at) VALUES ('', ?, 41, 1)`, binding+"/"+f.Shard(t, "p6")); err != nil {
		t.Fatal(err)
	}
	incr(t, f, "p6", "post_stats\tp6\tlikes\t3\n")
	flushAll(t, f, "p6")
	if n := likes(t, f, "p6"); n != 3 {
		t.Fatalf("likes = %d, want 3 (the first batch must not be taken for a replay)", n)
	}
	if s := flushSeq(t, f, "p6"); s != 42 {
		t.Fatalf("seq = %d, want 42", s)
	}
}

func TestLargeBufferFlushesInSeveralBatches(t *testing.T) {
	f := start(t)
	var b strings.Builder
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(&b, "post_stats\tbig-%04d\tviews\t%d\n", i, i+1)
	}
	incr(t, f, "big", b.String())
	flushAll(t, f, "big")
	if n := f.QueryInt(t, "SELECT SUM(views) FROM post_stats"); n != 1000*1001/2 {
		t.Fatalf("sum of views = %d", n)
	}
	if s := flushSeq(t, f, "big"); s != 2 {
		t.Fatalf("seq = %d, want 2 (900 rows, then 100)", s)
	}
}

func TestFlushEndpoint(t *testing.T) {
	f := start(t)
	incr(t, f, "p7", "post_stats\tp7\tcomments\t2\n")
	r := f.Fetch(t, "p7", "POST", "/flush", "")
	if r.Status != 200 || r.Body != `{"ok":true,"flushed":0,"seq":0,"inflight":1,"buffered":0}` {
		t.Fatalf("first /flush: %d %s", r.Status, r.Body)
	}
	r = f.Fetch(t, "p7", "POST", "/flush", "")
	if r.Status != 200 || r.Body != `{"ok":true,"flushed":1,"seq":1,"inflight":0,"buffered":0}` {
		t.Fatalf("second /flush: %d %s", r.Status, r.Body)
	}
	if n := f.QueryInt(t, "SELECT comments FROM post_stats WHERE post_id = 'p7'"); n != 2 {
		t.Fatalf("comments = %d", n)
	}
	// The alarm the freeze set finds nothing left to do.
	f.Settle(t, "p7")
	if n := f.QueryInt(t, "SELECT comments FROM post_stats WHERE post_id = 'p7'"); n != 2 {
		t.Fatalf("comments = %d after the alarm", n)
	}
	incr(t, f, "p7", "post_stats\tp7\tcomments\t1\n")
	f.Fetch(t, "p7", "POST", "/flush", "")
	f.SQL.Set(testutil.SQLFail, 0)
	if r := f.Fetch(t, "p7", "POST", "/flush", ""); r.Status != 503 || r.Code() != "flush_failed" {
		t.Fatalf("/flush with failing SQL: %d %s", r.Status, r.Body)
	}
}

func TestBadLinesAreRefused(t *testing.T) {
	f := start(t)
	f.WantRefused(t, "p", "/increment", []plugintest.Refusal{
		{Body: "", Code: "empty_body"},
		{Body: "post_stats\tp\tlikes\n", Code: "bad_line", Where: "line 1"},
		{Body: "post_stats\tp\tlikes\t1\nposts\tp\tlikes\t1\n", Code: "unknown_table", Where: "line 2"},
		{Body: "post_stats\tp\tfollowers\t1\n", Code: "unknown_column", Where: "line 1"},
		{Body: "post_stats\tp\tlikes = 0; DROP TABLE post_stats; --\t1\n", Code: "unknown_column", Where: "line 1"},
		{Body: "post_stats\tp\tlikes\t0\n", Code: "bad_delta", Where: "line 1"},
		{Body: "post_stats\tp\tlikes\t1.5\n", Code: "bad_delta", Where: "line 1"},
		{Body: "user_counters\t\tposts\t1\n", Code: "bad_id", Where: "line 1"},
		{Body: "post_stats\tp\tlikes\t9223372036854775807\npost_stats\tp\tlikes\t1\n", Code: "delta_overflow", Where: "line 2"},
	})
	incr(t, f, "p", "post_stats\tp\tlikes\t9223372036854775807\n")
	if r := f.Fetch(t, "p", "POST", "/increment", "post_stats\tp\tlikes\t1\npost_stats\tq\tlikes\t1\n"); r.Status != 400 || r.Code() != "delta_overflow" {
		t.Fatalf("overflow against the buffer: %d %s", r.Status, r.Body)
	}
	if f.Storage(t, "p")["d:post_stats\tq\tlikes"] != "" {
		t.Fatal("a refused call buffered part of its deltas")
	}
	if r := f.Fetch(t, "p", "GET", "/increment", ""); r.Status != 405 {
		t.Errorf("GET /increment: %d", r.Status)
	}
}

func TestBufferSurvivesHostRestart(t *testing.T) {
	o := plugintest.Options{Plugin: "plugins/counters", Binding: binding, SQL: true, Badger: true, DataDir: t.TempDir()}
	f := plugintest.New(t, o)
	incr(t, f, "p8", "post_stats\tp8\tlikes\t6\n")
	f.Close()
	o.DB = f.DB
	f2 := plugintest.New(t, o)
	flushAll(t, f2, "p8")
	if n := likes(t, f2, "p8"); n != 6 {
		t.Fatalf("likes after restart = %d", n)
	}
}

// TestNodesKeepSequencesOfTheirOwn: two hosts (node ids pop-a and pop-b,
// each its own shard storage) flush the same shard of the same post into
// one database. Each keeps its own sequence in counter_flushes, so
// neither's batch is taken for a replay of the other's.
func TestNodesKeepSequencesOfTheirOwn(t *testing.T) {
	a := plugintest.New(t, plugintest.Options{Plugin: "plugins/counters", Binding: binding, SQL: true, Node: "pop-a"})
	b := plugintest.New(t, plugintest.Options{Plugin: "plugins/counters", Binding: binding, SQL: true, Node: "pop-b", DB: a.DB})
	for i := 0; i < 3; i++ {
		incr(t, a, "pn", "post_stats\tpn\tviews\t1\n")
		flushAll(t, a, "pn")
		incr(t, b, "pn", "post_stats\tpn\tviews\t10\n")
		flushAll(t, b, "pn")
	}
	if n := a.QueryInt(t, "SELECT views FROM post_stats WHERE post_id = 'pn'"); n != 33 {
		t.Fatalf("views = %d, want 33 (3 from pop-a, 30 from pop-b)", n)
	}
	if sa, sb := flushSeq(t, a, "pn"), flushSeq(t, b, "pn"); sa != 3 || sb != 3 {
		t.Fatalf("sequences pop-a %d, pop-b %d; want 3 each", sa, sb)
	}
	for _, l := range a.Logs.WithCode(okCode) {
		if l["node"] != "pop-a" || l["replay"] == "true" {
			t.Fatalf("pop-a's flush log: %v", l)
		}
	}
}

// TestShippedCopyKeepsSequencesApart: a planned move in a POP ships a
// shard's storage from one host to the next (pop-a's copy, with a batch
// frozen on pop-a whose send failed and deltas still buffered, replaces
// pop-b's). pop-b sends pop-a's batch under pop-a's sequence, and freezes
// the rest under its own, read from SQL — not continuing pop-a's, which is
// behind pop-b's there and would make pop-b's batch look like a replay.
// Every delta counts once.
func TestShippedCopyKeepsSequencesApart(t *testing.T) {
	a := plugintest.New(t, plugintest.Options{Plugin: "plugins/counters", Binding: binding, SQL: true, Node: "pop-a"})
	b := plugintest.New(t, plugintest.Options{Plugin: "plugins/counters", Binding: binding, SQL: true, Node: "pop-b", DB: a.DB})
	for range 4 {
		incr(t, b, "ps", "post_stats\tps\tviews\t10\n")
		flushAll(t, b, "ps")
	}
	incr(t, a, "ps", "post_stats\tps\tviews\t1\n")
	flushAll(t, a, "ps")
	// pop-a freezes 2 views; their send fails; 3 more are buffered.
	incr(t, a, "ps", "post_stats\tps\tviews\t2\n")
	a.SQL.Set(testutil.SQLFail, 1)
	calls := a.SQL.Calls()
	a.Advance(t, "ps", 5*time.Second)
	plugintest.WaitFor(t, "pop-a's failed send", func() bool { return a.SQL.Calls() > calls })
	incr(t, a, "ps", "post_stats\tps\tviews\t3\n")
	if st := a.Storage(t, "ps"); st["inflight"] == "" || st["seq"] != "1\tpop-a" {
		t.Fatalf("pop-a's copy: %q, want a batch in flight and seq 1 of pop-a", st)
	}
	if sa, sb := flushSeq(t, a, "ps"), flushSeq(t, b, "ps"); sa != 1 || sb != 4 {
		t.Fatalf("sequences before the move: pop-a %d, pop-b %d; want 1 and 4", sa, sb)
	}

	// The move: pop-a's copy replaces pop-b's.
	shard := a.Shard(t, "ps")
	var snap bytes.Buffer
	if _, err := a.NS.ExportShard(context.Background(), shard, &snap); err != nil {
		t.Fatal(err)
	}
	if err := b.NS.ClearShard(context.Background(), shard); err != nil {
		t.Fatal(err)
	}
	if _, err := b.NS.ImportShard(context.Background(), shard, &snap); err != nil {
		t.Fatal(err)
	}
	incr(t, b, "ps", "post_stats\tps\tviews\t100\n")
	flushAll(t, b, "ps")
	flushAll(t, b, "ps")
	if n := b.QueryInt(t, "SELECT views FROM post_stats WHERE post_id = 'ps'"); n != 146 {
		t.Fatalf("views = %d, want 146 (40 from pop-b, 1+2+3 from pop-a, 100 after the move)\n%s", n, b.Logs.String())
	}
	if sa, sb := flushSeq(t, a, "ps"), flushSeq(t, b, "ps"); sa != 2 || sb != 5 {
		t.Fatalf("sequences after the move: pop-a %d, pop-b %d; want 2 (its batch, sent by pop-b) and 5", sa, sb)
	}
	if st := b.Storage(t, "ps"); st["seq"] != "5\tpop-b" {
		t.Fatalf("pop-b's sequence kept as %q, want 5 of pop-b", st["seq"])
	}
	for _, l := range b.Logs.WithCode(okCode) {
		if l["replay"] == "true" {
			t.Fatalf("a batch taken for a replay: %v", l)
		}
	}
}

// TestUpgradeFromAHostWithoutNode is the upgrade path of a single host: a
// batch frozen and committed before the upgrade (under the empty node id, the key of
// a host without a node id) but not yet cleaned up when the host stopped
// is replayed after it restarts with a node id — under the key it was
// applied with, so it counts once — and the batches after it are keyed by
// the node, their sequence continuing the shard's.
func TestUpgradeFromAHostWithoutNode(t *testing.T) {
	o := plugintest.Options{Plugin: "plugins/counters", Binding: binding, SQL: true, Badger: true, DataDir: t.TempDir()}
	f := plugintest.New(t, o)
	incr(t, f, "pu", "post_stats\tpu\tviews\t2\n")
	// One flush step freezes the batch and sets the alarm that sends it.
	// (Advancing the clock to the flush alarm instead could run the send
	// within the same Advance — the virtual clock fires a timer set while
	// it runs due ones — before the crash below is armed.)
	if r := f.Fetch(t, "pu", "POST", "/flush", ""); r.Status != 200 {
		t.Fatalf("flush: %d %s", r.Status, r.Body)
	}
	if _, ok := f.Storage(t, "pu")["inflight"]; !ok {
		t.Fatal("the flush step should have frozen a batch")
	}
	f.SQL.Set(testutil.SQLCrashAfter, 1)
	calls := f.SQL.Calls()
	f.Settle(t, "pu")
	plugintest.WaitFor(t, "crashed send", func() bool { return f.SQL.Calls() > calls })
	if _, ok := f.Storage(t, "pu")["inflight"]; !ok {
		t.Fatal("the crash should have kept the inflight batch")
	}
	f.Close()

	o.DB, o.Node = f.DB, "pop-a"
	g := plugintest.New(t, o)
	incr(t, g, "pu", "post_stats\tpu\tviews\t5\n")
	g.Advance(t, "pu", 10*time.Second)
	plugintest.WaitFor(t, "pop-a's seq 2", func() bool { return flushSeq(t, g, "pu") == 2 })
	if n := g.QueryInt(t, "SELECT views FROM post_stats WHERE post_id = 'pu'"); n != 7 {
		t.Fatalf("views = %d, want 7 (2 once, then 5)", n)
	}
	if n := g.QueryInt(t, "SELECT seq FROM counter_flushes WHERE node = '' AND shard = ?", binding+"/"+g.Shard(t, "pu")); n != 1 {
		t.Fatalf("the pre-upgrade key's sequence = %d, want 1", n)
	}
	replays := 0
	for _, l := range g.Logs.WithCode(okCode) {
		if l["replay"] == "true" {
			replays++
			if l["node"] != "" || l["seq"] != "1" {
				t.Fatalf("replay log: %v", l)
			}
		}
	}
	if replays != 1 {
		t.Fatalf("%d replays after the restart, want 1:\n%s", replays, g.Logs.String())
	}
}

// TestFencedDeltasDropAfterARecount: a delta of a counter with source rows
// counts only while the counter's fence is the one it carries; a recount
// that moved the fence (reconcileCounters) drops it. Deltas of other
// counters of the same row are not affected.
func TestFencedDeltasDropAfterARecount(t *testing.T) {
	f := start(t)
	incr(t, f, "pf", "post_stats\tpf\tlikes\t1\npost_stats\tpf\tviews\t3\n")
	if _, err := f.DB.SQL().Exec(`INSERT INTO counter_fences (table_name, row_id, column_name, epoch) VALUES ('post_stats', 'pf', 'likes', 1)`); err != nil {
		t.Fatal(err)
	}
	flushAll(t, f, "pf")
	if l, v := likes(t, f, "pf"), f.QueryInt(t, "SELECT views FROM post_stats WHERE post_id = 'pf'"); l != 0 || v != 3 {
		t.Fatalf("likes %d views %d; want 0 (dropped: fence 0 < 1) and 3", l, v)
	}
	incr(t, f, "pf", "post_stats\tpf\tlikes\t1\t1\npost_stats\tpf\tlikes\t1\n")
	if st := f.Storage(t, "pf"); st["d:post_stats\tpf\tlikes\t1"] != "1" || st["d:post_stats\tpf\tlikes"] != "1" {
		t.Fatalf("deltas of two fences must be buffered apart: %q", st)
	}
	flushAll(t, f, "pf")
	if l := likes(t, f, "pf"); l != 1 {
		t.Fatalf("likes %d; want 1 (the delta with fence 1 counts, the one with 0 not)", l)
	}
}

func TestConformanceSuite(t *testing.T) {
	wasm := testutil.Plugin(t, "plugins/counters")
	conformance.Run(t, wasm, "conformance.json", conformance.Options{Schema: plugintest.Schema(t)})
}
