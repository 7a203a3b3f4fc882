//go:build !wasip1

package counters

import (
	"context"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/plugins/internal/plugintest"
	"github.com/edgeshard/edgeshard/storage/sqldb"
)

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
func TestStatementsOnTheSchema(t *testing.T) {
	db := plugintest.OpenDB(t)
	for _, n := range []int64{-5, 3, -1} {
		run(t, db, stmt(t, func() (string, []any, error) {
			return Upsert([]Delta{{Table: PostStats, ID: "p1", Column: Likes, N: n}}, 10)
		}))
	}
	if v := value(t, db, "SELECT likes FROM post_stats WHERE post_id = 'p1'"); v != int64(2) {
		t.Fatalf("likes after -5, +3, -1: %v, want 2 (clamped at 0)", v)
	}
	flush := func(seq int64) []abi.Result {
		ds := []Delta{{Table: UserCounters, ID: "u1", Column: Followers, N: 4}, {Table: UserCounters, ID: "u1", Column: Posts, N: -2}}
		return run(t, db,
			stmt(t, func() (string, []any, error) { return FlushUpsert(ds, "COUNTER_SHARD/1", seq, 20) }),
			abi.Statement{SQL: MarkSQL, Args: []any{"COUNTER_SHARD/1", seq, int64(20)}},
			abi.Statement{SQL: SeqSQL, Args: []any{"COUNTER_SHARD/1"}})
	}
	if rs := flush(1); rs[1].RowsAffected != 1 || rs[2].Rows[0][0] != int64(1) {
		t.Fatalf("flush 1: %+v", rs)
	}
	if rs := flush(1); rs[0].RowsAffected != 0 || rs[1].RowsAffected != 0 {
		t.Fatalf("replay of flush 1 changed something: %+v", rs)
	}
	if v := value(t, db, "SELECT followers || ',' || posts FROM user_counters WHERE user_id = 'u1'"); v != "4,0" {
		t.Fatalf("after a flush and its replay: %v, want 4,0", v)
	}

	run(t, db,
		abi.Statement{SQL: "INSERT INTO likes VALUES ('p1', 'u1', 0), ('p1', 'u2', 0), ('p9', 'u1', 0)"},
		abi.Statement{SQL: "INSERT INTO follows VALUES ('u2', 'u1', 0), ('u1', 'u3', 0)"})
	want := map[string]map[string][2]any{ // per recount: id → stored, counted
		"post_stats.likes":        {"p1": {int64(2), int64(2)}, "p9": {nil, int64(1)}},
		"user_counters.followers": {"u1": {int64(4), int64(1)}, "u3": {nil, int64(1)}},
		"user_counters.following": {"u1": {int64(0), int64(1)}, "u2": {nil, int64(1)}},
	}
	for i := range Recounts {
		r := &Recounts[i]
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
	q, err := SetSQL(UserCounters, Followers)
	if err != nil {
		t.Fatal(err)
	}
	run(t, db, abi.Statement{SQL: q, Args: []any{"u1", int64(1), int64(30)}},
		abi.Statement{SQL: LogCorrectionSQL, Args: []any{int64(30), UserCounters, "u1", Followers, int64(4), int64(1)}})
	if v := value(t, db, "SELECT followers FROM user_counters WHERE user_id = 'u1'"); v != int64(1) {
		t.Fatalf("corrected followers %v", v)
	}
	if v := value(t, db, "SELECT COUNT(*) FROM counter_reconcile_log"); v != int64(1) {
		t.Fatalf("reconcile log rows %v", v)
	}
}
