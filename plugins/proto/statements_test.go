//go:build !wasip1

package proto_test

import (
	"context"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/edge/schema"
	"github.com/edgeshard/edgeshard/internal/pgtest"
	"github.com/edgeshard/edgeshard/plugins/internal/plugintest"
	"github.com/edgeshard/edgeshard/plugins/proto/counters"
	"github.com/edgeshard/edgeshard/plugins/proto/events"
	"github.com/edgeshard/edgeshard/plugins/proto/ratelimit"
	"github.com/edgeshard/edgeshard/storage/sqldb"
)

// The statements of plugins/proto, run on the edge schema as the plugins'
// SQL binding and the edge run them: one text, on a migrated in-memory
// SQLite and on a migrated PostgreSQL database.

// eachDialect runs f as a subtest per dialect, on a migrated database.
func eachDialect(t *testing.T, f func(t *testing.T, db *sqldb.DB)) {
	t.Run(sqldb.DialectSQLite, func(t *testing.T) { f(t, plugintest.OpenDB(t)) })
	t.Run(sqldb.DialectPostgres, func(t *testing.T) {
		db, err := sqldb.Open(pgtest.DB(t), sqldb.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		if _, err := schema.Migrate(context.Background(), db); err != nil {
			t.Fatal(err)
		}
		f(t, db)
	})
}

func run(t *testing.T, db *sqldb.DB, stmts ...abi.Statement) []abi.Result {
	t.Helper()
	rs, err := db.Batch(context.Background(), stmts)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func stmt(t *testing.T, f func() (string, []any, error)) abi.Statement {
	t.Helper()
	q, args, err := f()
	if err != nil {
		t.Fatal(err)
	}
	return abi.Statement{SQL: q, Args: args}
}

func value(t *testing.T, db *sqldb.DB, q string, args ...any) any {
	t.Helper()
	rs := run(t, db, abi.Statement{SQL: q, Args: args})
	if len(rs[0].Rows) != 1 {
		t.Fatalf("%s: %d rows", q, len(rs[0].Rows))
	}
	return rs[0].Rows[0][0]
}

// TestStatementsOnTheSchema runs every statement on the migrated schema:
// clamped upserts, the guarded flush and its replay, the reconcile job's
// recounts, corrections and log.
func TestCounterStatementsOnTheSchema(t *testing.T) {
	eachDialect(t, testCounterStatements)
}

func testCounterStatements(t *testing.T, db *sqldb.DB) {
	for _, n := range []int64{-5, 3, -1} {
		run(t, db, stmt(t, func() (string, []any, error) {
			return counters.Upsert([]counters.Delta{{Table: counters.PostStats, ID: "p1", Column: counters.Likes, N: n}}, 10)
		}))
	}
	if v := value(t, db, "SELECT likes FROM post_stats WHERE post_id = 'p1'"); v != int64(2) {
		t.Fatalf("likes after -5, +3, -1: %v, want 2 (clamped at 0)", v)
	}
	flush := func(node string, seq int64) []abi.Result {
		fenced := []counters.Delta{{Table: counters.UserCounters, ID: "u1", Column: counters.Followers, N: 4}}
		plain := []counters.Delta{{Table: counters.UserCounters, ID: "u1", Column: counters.Posts, N: -2}}
		return run(t, db,
			stmt(t, func() (string, []any, error) { return counters.FlushUpsert(fenced, node, "COUNTER_SHARD/1", seq, 20) }),
			stmt(t, func() (string, []any, error) { return counters.FlushUpsert(plain, node, "COUNTER_SHARD/1", seq, 20) }),
			abi.Statement{SQL: counters.MarkSQL, Args: []any{node, "COUNTER_SHARD/1", seq, int64(20)}},
			abi.Statement{SQL: counters.SeqSQL, Args: []any{node, "COUNTER_SHARD/1"}})
	}
	if rs := flush("pop-a", 1); rs[2].RowsAffected != 1 || rs[3].Rows[0][0] != int64(1) {
		t.Fatalf("flush 1: %+v", rs)
	}
	if rs := flush("pop-a", 1); rs[0].RowsAffected != 0 || rs[1].RowsAffected != 0 || rs[2].RowsAffected != 0 {
		t.Fatalf("replay of flush 1 changed something: %+v", rs)
	}
	if v := value(t, db, "SELECT followers || ',' || posts FROM user_counters WHERE user_id = 'u1'"); v != "4,0" {
		t.Fatalf("after a flush and its replay: %v, want 4,0", v)
	}
	// Another node's copy of the same shard keeps a sequence of its own:
	// its flush 1 is not a replay.
	if rs := flush("pop-b", 1); rs[0].RowsAffected != 1 || rs[2].RowsAffected != 1 || rs[3].Rows[0][0] != int64(1) {
		t.Fatalf("pop-b's flush 1: %+v", rs)
	}
	if v := value(t, db, "SELECT followers FROM user_counters WHERE user_id = 'u1'"); v != int64(8) {
		t.Fatalf("after two nodes' flushes: followers %v, want 8", v)
	}
	run(t, db, abi.Statement{SQL: "UPDATE user_counters SET followers = 4 WHERE user_id = 'u1'"})

	// A fence moved by a recount drops the deltas that read the old one,
	// from a flush or the legacy update alike; deltas carrying the new
	// fence apply.
	run(t, db, abi.Statement{SQL: counters.BumpFenceSQL, Args: []any{counters.PostStats, "p1", counters.Likes}})
	likes := func(n, fence int64) abi.Statement {
		return stmt(t, func() (string, []any, error) {
			return counters.FlushUpsert([]counters.Delta{{Table: counters.PostStats, ID: "p1", Column: counters.Likes, N: n, Fence: fence}}, "pop-a", "COUNTER_SHARD/9", 1+fence, 40)
		})
	}
	if rs := run(t, db, likes(5, 0)); rs[0].RowsAffected != 0 {
		t.Fatalf("a delta with the old fence applied: %+v", rs)
	}
	if rs := run(t, db, likes(1, 1)); rs[0].RowsAffected != 1 {
		t.Fatalf("a delta with the current fence did not apply: %+v", rs)
	}
	if rs := run(t, db, stmt(t, func() (string, []any, error) {
		return counters.Upsert([]counters.Delta{{Table: counters.PostStats, ID: "p1", Column: counters.Likes, N: 7, Fence: 0}}, 50)
	})); rs[0].RowsAffected != 0 {
		t.Fatalf("a legacy update with the old fence applied: %+v", rs)
	}
	if v := value(t, db, "SELECT likes FROM post_stats WHERE post_id = 'p1'"); v != int64(3) {
		t.Fatalf("likes after fenced deltas: %v, want 3", v)
	}
	run(t, db, abi.Statement{SQL: counters.BumpFenceSQL, Args: []any{counters.PostStats, "p1", counters.Likes}})
	read, err := counters.FenceRead(counters.PostStats, counters.Likes, 1)
	if err != nil {
		t.Fatal(err)
	}
	if rs := run(t, db, abi.Statement{SQL: "INSERT INTO likes (post_id, user_id, created_at) VALUES (?1, 'u7', 0) RETURNING " + read, Args: []any{"p1"}}); rs[0].Rows[0][0] != int64(2) {
		t.Fatalf("fence read by the source-row change: %v, want 2", rs[0].Rows)
	}
	if _, err := counters.FenceRead(counters.PostStats, counters.Views, 1); err == nil {
		t.Fatal("a fence read of views, which has no source rows")
	}
	run(t, db, abi.Statement{SQL: "DELETE FROM likes"}, abi.Statement{SQL: "UPDATE post_stats SET likes = 2 WHERE post_id = 'p1'"})

	run(t, db,
		abi.Statement{SQL: "INSERT INTO likes VALUES ('p1', 'u1', 0), ('p1', 'u2', 0), ('p9', 'u1', 0)"},
		abi.Statement{SQL: "INSERT INTO follows VALUES ('u2', 'u1', 0), ('u1', 'u3', 0)"})
	want := map[string]map[string][2]any{ // per recount: id → stored, counted
		"post_stats.likes":        {"p1": {int64(2), int64(2)}, "p9": {nil, int64(1)}},
		"user_counters.followers": {"u1": {int64(4), int64(1)}, "u3": {nil, int64(1)}},
		"user_counters.following": {"u1": {int64(0), int64(1)}, "u2": {nil, int64(1)}},
	}
	for i := range counters.Recounts {
		r := &counters.Recounts[i]
		name := r.Table.Name + "." + r.Column
		rs := run(t, db, abi.Statement{SQL: r.SQL()})
		got := map[string][2]any{}
		for _, row := range rs[0].Rows {
			got[row[0].(string)] = [2]any{row[1], row[2]}
		}
		if len(got) != len(want[name]) {
			t.Fatalf("%s: %v, want %v", name, got, want[name])
		}
		for id, w := range want[name] {
			if got[id] != w {
				t.Fatalf("%s of %s: %v, want %v", name, id, got[id], w)
			}
		}
	}
	q, err := counters.SetSQL(counters.UserCounters, counters.Followers)
	if err != nil {
		t.Fatal(err)
	}
	run(t, db, abi.Statement{SQL: q, Args: []any{"u1", int64(1), int64(30)}},
		abi.Statement{SQL: counters.LogCorrectionSQL, Args: []any{int64(30), counters.UserCounters, "u1", counters.Followers, int64(4), int64(1), "pop-a"}})
	if v := value(t, db, "SELECT followers FROM user_counters WHERE user_id = 'u1'"); v != int64(1) {
		t.Fatalf("corrected followers %v", v)
	}
	if v := value(t, db, "SELECT COUNT(*) FROM counter_reconcile_log WHERE node = 'pop-a'"); v != int64(1) {
		t.Fatalf("reconcile log rows %v", v)
	}
	for i := range counters.Recounts {
		r := &counters.Recounts[i]
		id := map[string]string{"likes": "p1", "followers": "u1", "following": "u2"}[r.Column]
		n := run(t, db, abi.Statement{SQL: r.CountSQL(), Args: []any{id}}, abi.Statement{SQL: r.ValueSQL(), Args: []any{id}})
		if n[0].Rows[0][0] != int64(1) && n[0].Rows[0][0] != int64(2) {
			t.Fatalf("%s count of %s: %v", r.Column, id, n[0].Rows)
		}
	}
}

// TestInsertOnTheSchema: the insert stores absent fields as NULL and a
// repeated id once (a flush's retry, or the edge's inline write of an
// event the shard also holds).
func TestEventInsertOnTheSchema(t *testing.T) {
	eachDialect(t, testEventInsert)
}

func testEventInsert(t *testing.T, db *sqldb.DB) {
	ctx := context.Background()
	evs := []events.Event{
		{ID: "e1", CapsuleID: "c1", Type: "run.start", TsMs: 1, ReceivedMs: 2, Payload: `{"a":1}`},
		{ID: "e2", RunID: "r1", Type: "run.end", TsMs: 3, ReceivedMs: 4},
	}
	var args []any
	for i := range evs {
		args = evs[i].AppendArgs(args)
	}
	for range 2 {
		if _, err := db.Batch(ctx, []abi.Statement{{SQL: events.InsertSQL(len(evs)), Args: args}}); err != nil {
			t.Fatal(err)
		}
	}
	rs, err := db.Batch(ctx, []abi.Statement{{SQL: "SELECT id, capsule_id IS NULL, run_id IS NULL, payload IS NULL FROM runtime_events ORDER BY id"}})
	if err != nil {
		t.Fatal(err)
	}
	rows := rs[0].Rows
	if len(rows) != 2 || rows[0][1] != int64(0) || rows[0][2] != int64(1) || rows[0][3] != int64(0) ||
		rows[1][1] != int64(1) || rows[1][2] != int64(0) || rows[1][3] != int64(1) {
		t.Fatalf("rows %v", rows)
	}
}

// TestStatementsOnTheSchema keeps one bucket in proxy_rate_limits through
// the statements: store, read back as the state ratelimit.Decide left, reset on a
// new window length, sweep what no decision reads.
func TestRateLimitStatementsOnTheSchema(t *testing.T) {
	eachDialect(t, testRateLimitStatements)
}

func testRateLimitStatements(t *testing.T, db *sqldb.DB) {
	ctx := context.Background()
	exec := func(q string, args ...any) [][]any {
		rs, err := db.Batch(ctx, []abi.Statement{{SQL: q, Args: args}})
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return rs[0].Rows
	}
	// call decides one bucket at now the way the edge's SQL fallback does.
	call := func(key string, limit, w, now int64) *ratelimit.Bucket {
		bs := []ratelimit.Bucket{{Line: ratelimit.Line{Key: key, Limit: limit, WindowMs: w}}}
		var rows []ratelimit.Row
		for _, r := range exec(ratelimit.SQLRead, key) {
			rows = append(rows, ratelimit.Row{Start: r[0].(int64), WindowMs: r[1].(int64), Count: r[2].(int64)})
		}
		bs[0].Stored, bs[0].Exists = ratelimit.StateFromRows(rows)
		if ratelimit.Decide(bs, now) {
			if bs[0].Fresh && bs[0].Exists {
				exec(ratelimit.SQLReset, key)
			}
			exec(ratelimit.SQLStore, bs[0].StoreArgs()...)
		}
		return &bs[0]
	}
	for i := range 3 {
		if b := call("user:a", 3, 1000, 10_100+int64(i)); !b.Allowed || b.State.Cur != int64(i+1) {
			t.Fatalf("call %d: %+v", i, b)
		}
	}
	if b := call("user:a", 3, 1000, 10_200); b.Allowed {
		t.Fatalf("4th call allowed: %+v", b)
	}
	// Next window: the 3 weigh 3·(1000−500)/1000 = 1.5, so one more fits.
	if b := call("user:a", 3, 1000, 11_500); !b.Allowed || b.State.Prev != 3 || b.State.Cur != 1 {
		t.Fatalf("next window: %+v", b)
	}
	// Another window length: the bucket starts afresh, its old rows go.
	if b := call("user:a", 3, 2000, 11_600); !b.Allowed || !b.Fresh || b.State.Cur != 1 || b.State.Prev != 0 {
		t.Fatalf("new window length: %+v", b)
	}
	if rows := exec("SELECT window_start, window_ms, count FROM proxy_rate_limits"); len(rows) != 1 || rows[0][0] != int64(10_000) || rows[0][1] != int64(2000) {
		t.Fatalf("rows after the reset %v", rows)
	}
	call("ip:b", 5, 1000, 11_600)
	exec(ratelimit.SQLSweep, ratelimit.SweepArgs(13_000)...) // ip:b's window [11000, 12000) ended over a window ago
	if rows := exec("SELECT bucket FROM proxy_rate_limits ORDER BY bucket"); len(rows) != 1 || rows[0][0] != "user:a" {
		t.Fatalf("rows after the sweep %v", rows)
	}
}
