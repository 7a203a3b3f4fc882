//go:build !wasip1

package main_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/conformance"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/edgeshard/edgeshard/plugins/internal/plugintest"
)

const (
	binding = "RUNTIME_EVENT_SHARD"
	capsule = "cap-1"
	okCode  = "E-VIBECODR-2130"
	errCode = "E-VIBECODR-2131"
)

func start(t *testing.T) *plugintest.Fixture {
	t.Helper()
	return plugintest.New(t, plugintest.Options{Plugin: "plugins/runtimeevents", Binding: binding, SQL: true, Analytics: true})
}

// events returns n event lines for capsule cap-1 with ids prefix-1..n.
func events(prefix string, from, n int) string {
	var b strings.Builder
	for i := from; i < from+n; i++ {
		fmt.Fprintf(&b, "%s-%d\t%s\trun-9\trun.finished\t%d\t%d\t{\"i\":%d}\n", prefix, i, capsule, 1767225600000+int64(i), 1767225600500+int64(i), i)
	}
	return b.String()
}

func enqueue(t *testing.T, f *plugintest.Fixture, body string) plugintest.Resp {
	t.Helper()
	r := f.Fetch(t, capsule, "POST", "/enqueue", body)
	if r.Status != 202 {
		t.Fatalf("enqueue: %d %s", r.Status, r.Body)
	}
	return r
}

func rows(t *testing.T, f *plugintest.Fixture) int64 {
	t.Helper()
	return f.QueryInt(t, "SELECT COUNT(*) FROM runtime_events")
}

func points(f *plugintest.Fixture) []abi.DataPoint { return f.AE.Points("runtime_events") }

func TestInlineFlushAtHundred(t *testing.T) {
	f := start(t)
	r := enqueue(t, f, events("a", 1, 99))
	if r.Int("accepted") != 99 || r.Int("buffered") != 99 || r.Int("flushed") != 0 {
		t.Fatalf("99 events: %s", r.Body)
	}
	if n := rows(t, f); n != 0 {
		t.Fatalf("%d rows before the 100th event", n)
	}
	if n := f.CountPrefix(t, capsule, "ev:"); n != 99 {
		t.Fatalf("%d buffered keys, want 99", n)
	}
	if in := f.AlarmIn(t, capsule); in != 5*time.Second {
		t.Fatalf("alarm in %v, want 5s", in)
	}
	r = enqueue(t, f, events("a", 100, 1))
	if r.Int("accepted") != 1 || r.Int("buffered") != 0 || r.Int("flushed") != 100 {
		t.Fatalf("100th event: %s", r.Body)
	}
	if n := rows(t, f); n != 100 {
		t.Fatalf("%d rows after the inline flush, want 100", n)
	}
	if n := len(points(f)); n != 100 {
		t.Fatalf("%d data points, want 100", n)
	}
	if n := f.CountPrefix(t, capsule, "ev:"); n != 0 {
		t.Fatalf("%d buffered keys left", n)
	}
	if in := f.AlarmIn(t, capsule); in != -1 {
		t.Fatalf("alarm still set (in %v) with an empty buffer", in)
	}
	logs := f.Logs.WithCode(okCode)
	shard := binding + "/" + f.Shard(t, capsule)
	if len(logs) != 1 || logs[0]["count"] != "100" || logs[0]["shard"] != shard || logs[0]["duration_ms"] == nil {
		t.Fatalf("flush log: %v (want count 100, shard %s)", logs, shard)
	}
}

func TestAlarmFlushFiveSecondsAfterFirstEvent(t *testing.T) {
	f := start(t)
	enqueue(t, f, events("b", 1, 2))
	f.Clock.Advance(2 * time.Second)
	r := enqueue(t, f, events("b", 3, 1))
	if r.Int("buffered") != 3 {
		t.Fatalf("third event: %s", r.Body)
	}
	if in := f.AlarmIn(t, capsule); in != 3*time.Second {
		t.Fatalf("alarm in %v, want 3s (5 s after the first event)", in)
	}
	f.Advance(t, capsule, 2999*time.Millisecond)
	if n := rows(t, f); n != 0 {
		t.Fatalf("%d rows 1 ms before the alarm", n)
	}
	f.Advance(t, capsule, time.Millisecond)
	plugintest.WaitFor(t, "alarm flush", func() bool { return rows(t, f) == 3 })
	if n := f.CountPrefix(t, capsule, "ev:"); n != 0 {
		t.Fatalf("%d keys left after the alarm flush", n)
	}
	if logs := f.Logs.WithCode(okCode); len(logs) != 1 || logs[0]["count"] != "3" || logs[0]["duration_ms"] != "0" {
		t.Fatalf("flush logs: %v", logs)
	}
	st := f.Fetch(t, capsule, "GET", "/stats", "")
	if st.Int("buffered") != 0 || st.Int("last_flush_ms") != plugintest.Start.UnixMilli()+5000 {
		t.Fatalf("stats: %s", st.Body)
	}
	// The next event starts a new 5 s cycle.
	enqueue(t, f, events("b", 4, 1))
	if in := f.AlarmIn(t, capsule); in != 5*time.Second {
		t.Fatalf("alarm in %v after a new first event, want 5s", in)
	}
}

func TestFailedFlushKeepsBufferAndRetriesAfterOneSecond(t *testing.T) {
	f := start(t)
	f.SQL.Set(testutil.SQLFail, 0)
	enqueue(t, f, events("c", 1, 3))
	f.Advance(t, capsule, 5*time.Second)
	plugintest.WaitFor(t, "failure log", func() bool { return len(f.Logs.WithCode(errCode)) == 1 })
	l := f.Logs.WithCode(errCode)[0]
	if l["count"] != "3" || !strings.Contains(fmt.Sprint(l["error"]), "injected") || l["level"] != "error" {
		t.Fatalf("failure log: %v", l)
	}
	if n := f.CountPrefix(t, capsule, "ev:"); n != 3 {
		t.Fatalf("buffer after a failed flush: %d keys, want 3", n)
	}
	if in := f.AlarmIn(t, capsule); in != time.Second {
		t.Fatalf("retry alarm in %v, want 1s", in)
	}
	if n := len(points(f)); n != 0 {
		t.Fatalf("%d data points written by a failed flush", n)
	}
	f.Advance(t, capsule, time.Second)
	plugintest.WaitFor(t, "second failure", func() bool { return len(f.Logs.WithCode(errCode)) == 2 })
	f.SQL.Set(testutil.SQLOK, 0)
	f.Advance(t, capsule, time.Second)
	plugintest.WaitFor(t, "retry flush", func() bool { return rows(t, f) == 3 })
	if n := len(points(f)); n != 3 {
		t.Fatalf("%d data points, want 3", n)
	}
	if in := f.AlarmIn(t, capsule); in != -1 {
		t.Fatalf("alarm left after success: in %v", in)
	}
}

func TestInlineFlushFailureBacksOff(t *testing.T) {
	f := start(t)
	f.SQL.Set(testutil.SQLFail, 0)
	r := enqueue(t, f, events("d", 1, 100))
	if r.Int("flushed") != 0 || r.Int("buffered") != 100 {
		t.Fatalf("failed inline flush: %s", r.Body)
	}
	if len(f.Logs.WithCode(errCode)) != 1 || f.AlarmIn(t, capsule) != time.Second {
		t.Fatalf("want one failure log and a 1 s retry alarm")
	}
	calls := f.SQL.Calls()
	f.Clock.Advance(500 * time.Millisecond)
	if r := enqueue(t, f, events("d", 101, 1)); r.Int("buffered") != 101 {
		t.Fatalf("event during back-off: %s", r.Body)
	}
	if f.SQL.Calls() != calls {
		t.Fatal("an enqueue during the 1 s back-off retried the failing flush inline")
	}
	f.SQL.Set(testutil.SQLOK, 0)
	f.Advance(t, capsule, 500*time.Millisecond)
	plugintest.WaitFor(t, "retry flush", func() bool { return rows(t, f) == 101 })
	// Back to normal: the next 100 flush inline again.
	if r := enqueue(t, f, events("e", 1, 100)); r.Int("flushed") != 100 {
		t.Fatalf("inline flush after recovery: %s", r.Body)
	}
}

func TestSameIDIsOneRow(t *testing.T) {
	f := start(t)
	// The inline path (shadow mode) already wrote one of them.
	if _, err := f.DB.SQL().Exec(`INSERT INTO runtime_events (id, capsule_id, run_id, type, ts, received_at, payload) VALUES ('s-2', 'cap-1', NULL, 'x', 1, 1, NULL)`); err != nil {
		t.Fatal(err)
	}
	one := events("s", 1, 1)
	enqueue(t, f, one+one+events("s", 2, 1))
	enqueue(t, f, one)
	r := f.Fetch(t, capsule, "POST", "/flush", "")
	if r.Status != 200 || r.Int("flushed") != 4 || r.Int("buffered") != 0 {
		t.Fatalf("flush: %d %s", r.Status, r.Body)
	}
	if n := rows(t, f); n != 2 {
		t.Fatalf("%d rows, want 2 (s-1 once, s-2 kept from the inline write)", n)
	}
	if ty := f.QueryInt(t, "SELECT COUNT(*) FROM runtime_events WHERE id = 's-2' AND type = 'x'"); ty != 1 {
		t.Fatal("the flush replaced the inline row")
	}
	if n := len(points(f)); n != 2 {
		t.Fatalf("%d data points, want 2 (one per distinct id of the flush)", n)
	}
	// Enqueued again later: still one row.
	enqueue(t, f, one)
	f.Fetch(t, capsule, "POST", "/flush", "")
	if n := rows(t, f); n != 2 {
		t.Fatalf("%d rows after a later duplicate, want 2", n)
	}
}

func TestRowsAndDataPoints(t *testing.T) {
	f := start(t)
	body := "e-1\tcap-1\trun-1\trun.started\t1767225600123\t1767225600200\t{\"a\":1}\n" +
		"e-2\t\trun-2\trun.log\t5\t6\t\n"
	enqueue(t, f, body)
	f.Fetch(t, capsule, "POST", "/flush", "")
	var capID, runID, payload any
	var typ string
	var ts, recv int64
	err := f.DB.SQL().QueryRow(`SELECT capsule_id, run_id, type, ts, received_at, payload FROM runtime_events WHERE id = 'e-2'`).Scan(&capID, &runID, &typ, &ts, &recv, &payload)
	if err != nil || capID != nil || runID != "run-2" || typ != "run.log" || ts != 5 || recv != 6 || payload != nil {
		t.Fatalf("row e-2: %v %v %v %v %v %v %v (empty fields must be NULL)", err, capID, runID, typ, ts, recv, payload)
	}
	if p := f.QueryInt(t, `SELECT COUNT(*) FROM runtime_events WHERE id = 'e-1' AND payload = '{"a":1}' AND capsule_id = 'cap-1' AND ts = 1767225600123`); p != 1 {
		t.Fatal("row e-1 not stored as sent")
	}
	ps := points(f)
	if len(ps) != 2 {
		t.Fatalf("%d points", len(ps))
	}
	p := ps[0]
	if len(p.Indexes) != 1 || p.Indexes[0] != "cap-1" || len(p.Blobs) != 4 || string(p.Blobs[0]) != "e-1" ||
		string(p.Blobs[1]) != "run.started" || string(p.Blobs[2]) != "cap-1" || string(p.Blobs[3]) != "run-1" ||
		len(p.Doubles) != 1 || p.Doubles[0] != 1767225600123 {
		t.Fatalf("point of e-1: %+v", p)
	}
	if ps[1].Indexes[0] != "run-2" {
		t.Fatalf("point of e-2 indexed by %v, want its run_id", ps[1].Indexes)
	}
}

func TestManyEventsAreChunked(t *testing.T) {
	f := start(t)
	r := enqueue(t, f, events("m", 1, 250))
	if r.Int("flushed") != 250 {
		t.Fatalf("250 events: %s", r.Body)
	}
	if n := rows(t, f); n != 250 {
		t.Fatalf("%d rows, want 250", n)
	}
}

func TestCrashAfterCommitDoesNotDuplicate(t *testing.T) {
	f := start(t)
	enqueue(t, f, events("k", 1, 3))
	f.SQL.Set(testutil.SQLCrashAfter, 1)
	f.Advance(t, capsule, 5*time.Second)
	plugintest.WaitFor(t, "crashed flush", func() bool { return f.SQL.Calls() >= 1 })
	if n := rows(t, f); n != 3 {
		t.Fatalf("%d rows after the committed batch", n)
	}
	if n := f.CountPrefix(t, capsule, "ev:"); n != 3 {
		t.Fatalf("the crashed event's deletions survived: %d keys", n)
	}
	// The host retries the failed alarm (backoff from 2 s); the replay is deduplicated.
	f.Advance(t, capsule, 2*time.Second)
	plugintest.WaitFor(t, "replayed flush", func() bool { return len(f.Logs.WithCode(okCode)) == 1 })
	if n := rows(t, f); n != 3 {
		t.Fatalf("%d rows after the replay, want 3", n)
	}
	if n := f.CountPrefix(t, capsule, "ev:"); n != 0 {
		t.Fatalf("%d keys after the replay", n)
	}
}

func TestBadLinesAreRefused(t *testing.T) {
	f := start(t)
	f.WantRefused(t, capsule, "/enqueue", []plugintest.Refusal{
		{Body: "", Code: "empty_body"},
		{Body: "e\tc\tr\tt\t1\t2\n", Code: "bad_line", Where: "line 1"},
		{Body: events("x", 1, 1) + "\tc\tr\tt\t1\t2\t{}\n", Code: "bad_id", Where: "line 2"},
		{Body: "e\tc\tr\t\t1\t2\t{}\n", Code: "bad_type", Where: "line 1"},
		{Body: "e\tc\tr\tt\tsoon\t2\t{}\n", Code: "bad_ts", Where: "line 1"},
		{Body: "e\tc\tr\tt\t1\t-2\t{}\n", Code: "bad_received_at", Where: "line 1"},
		{Body: "e\t" + strings.Repeat("c", 257) + "\tr\tt\t1\t2\t{}\n", Code: "bad_capsule_id", Where: "line 1"},
	})
	if n := f.CountPrefix(t, capsule, "ev:"); n != 0 {
		t.Fatalf("refused bodies buffered %d events", n)
	}
	if r := f.Fetch(t, capsule, "GET", "/enqueue", ""); r.Status != 405 {
		t.Errorf("GET /enqueue: %d", r.Status)
	}
}

func TestFlushEndpointFailure(t *testing.T) {
	f := start(t)
	enqueue(t, f, events("f", 1, 2))
	f.SQL.Set(testutil.SQLFail, 0)
	r := f.Fetch(t, capsule, "POST", "/flush", "")
	if r.Status != 503 || r.Code() != "flush_failed" {
		t.Fatalf("flush with failing SQL: %d %s", r.Status, r.Body)
	}
	if in := f.AlarmIn(t, capsule); in != time.Second {
		t.Fatalf("retry alarm in %v", in)
	}
	if st := f.Fetch(t, capsule, "GET", "/stats", ""); st.Int("buffered") != 2 || st.Int("last_flush_ms") != 0 {
		t.Fatalf("stats: %s", st.Body)
	}
}

func TestBufferSurvivesHostRestart(t *testing.T) {
	dir := t.TempDir()
	o := plugintest.Options{Plugin: "plugins/runtimeevents", Binding: binding, SQL: true, Analytics: true, Badger: true, DataDir: dir}
	f := plugintest.New(t, o)
	enqueue(t, f, events("r", 1, 5))
	f.Close()
	o.DB = f.DB
	f2 := plugintest.New(t, o)
	if st := f2.Fetch(t, capsule, "GET", "/stats", ""); st.Int("buffered") != 5 {
		t.Fatalf("after restart: %s", st.Body)
	}
	if _, ok := f2.Alarm(t, capsule); !ok {
		t.Fatal("alarm lost in the restart")
	}
	f2.Advance(t, capsule, 5*time.Second)
	plugintest.WaitFor(t, "flush after restart", func() bool { return rows(t, f2) == 5 })
}

func TestConformanceSuite(t *testing.T) {
	wasm := testutil.Plugin(t, "plugins/runtimeevents")
	conformance.Run(t, wasm, "conformance.json", conformance.Options{Schema: plugintest.Schema(t)})
}
