package schema_test

import (
	"context"
	"path/filepath"
	"reflect"
	"sort"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/edge/schema"
	"github.com/edgeshard/edgeshard/storage/sqldb"
)

func openFile(t testing.TB) *sqldb.DB {
	t.Helper()
	db, err := sqldb.Open("sqlite://"+filepath.Join(t.TempDir(), "d1.db"), sqldb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := schema.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	return db
}

func batch(t testing.TB, db *sqldb.DB, stmts ...abi.Statement) []abi.Result {
	t.Helper()
	res, err := db.Batch(context.Background(), stmts)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func st(sql string, args ...any) abi.Statement { return abi.Statement{SQL: sql, Args: args} }

func TestMigrationsEmbedded(t *testing.T) {
	ms, err := schema.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != schema.Version || ms[0].Version != 1 || ms[0].Name != "init" || ms[0].SQL == "" ||
		ms[1].Version != 2 || ms[1].Name != "rate_limit_window" {
		t.Fatalf("migrations %+v", ms)
	}
}

func TestSchemaTables(t *testing.T) {
	db := openFile(t)
	rep, err := schema.Migrate(context.Background(), db)
	if err != nil || len(rep.Applied) != 0 || rep.Version != schema.Version {
		t.Fatalf("second migrate %+v, %v: want nothing applied", rep, err)
	}
	res := batch(t, db, st("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"))
	var tables []string
	for _, r := range res[0].Rows {
		tables = append(tables, r[0].(string))
	}
	want := []string{"counter_flushes", "counter_reconcile_log", "follows", "likes", "post_stats",
		"proxy_rate_limits", "runtime_events", "schema_migrations", "user_counters"}
	sort.Strings(want)
	if !reflect.DeepEqual(tables, want) {
		t.Errorf("tables %v, want %v", tables, want)
	}
	res = batch(t, db, st("SELECT name FROM sqlite_schema WHERE type = 'index' AND sql IS NOT NULL ORDER BY name"))
	var indexes []string
	for _, r := range res[0].Rows {
		indexes = append(indexes, r[0].(string))
	}
	wantIdx := []string{"follows_followee_id", "likes_user_id", "proxy_rate_limits_window_start", "runtime_events_capsule_ts"}
	if !reflect.DeepEqual(indexes, wantIdx) {
		t.Errorf("indexes %v, want %v", indexes, wantIdx)
	}
}

func TestSchemaConstraints(t *testing.T) {
	db := openFile(t)
	ctx := context.Background()
	batch(t, db,
		st("INSERT INTO post_stats (post_id, likes) VALUES ('p1', 1)"),
		st("INSERT INTO user_counters (user_id) VALUES ('u1')"),
		st("INSERT INTO counter_flushes VALUES ('shard-3', 7, 1)"),
	)
	fails := []struct{ sql, want string }{
		{"UPDATE post_stats SET likes = likes - 2 WHERE post_id = 'p1'", "CHECK constraint failed: likes >= 0"},
		{"INSERT INTO post_stats (post_id, remixes) VALUES ('p2', -1)", "CHECK constraint failed: remixes >= 0"},
		{"UPDATE user_counters SET followers = -1", "CHECK constraint failed: followers >= 0"},
		{"UPDATE user_counters SET likes_received = -1", "CHECK constraint failed: likes_received >= 0"},
		{"INSERT INTO proxy_rate_limits (bucket, window_start, count) VALUES ('ip:1', 0, -1)", "CHECK constraint failed: count >= 0"},
		{"INSERT INTO proxy_rate_limits (bucket, window_start, window_ms, count) VALUES ('ip:1', 0, -1, 1)", "CHECK constraint failed: window_ms >= 0"},
		{"INSERT INTO runtime_events (id, type, ts, received_at) VALUES ('e1', 'x', 'soon', 1)", "cannot store TEXT value in INTEGER column runtime_events.ts"},
		{"INSERT INTO runtime_events (id, ts, received_at) VALUES ('e1', 1, 1)", "NOT NULL constraint failed: runtime_events.type"},
		{"UPDATE counter_flushes SET seq = 7 WHERE shard = 'shard-3'", "counter flush already applied"},
		{"INSERT INTO counter_flushes VALUES ('shard-3', 6, 2) ON CONFLICT(shard) DO UPDATE SET seq = excluded.seq", "counter flush already applied"},
	}
	for _, f := range fails {
		_, err := db.Batch(ctx, []abi.Statement{st(f.sql)})
		if err == nil || err.Error() != "statement 0: "+f.want {
			t.Errorf("%s: error %v, want %q", f.sql, err, f.want)
		}
	}
	// A clamped update never trips the CHECK; the sequence moves forward.
	batch(t, db,
		st("UPDATE post_stats SET likes = MAX(0, likes + ?) WHERE post_id = 'p1'", int64(-5)),
		st("INSERT INTO counter_flushes VALUES ('shard-3', 8, 2) ON CONFLICT(shard) DO UPDATE SET seq = excluded.seq, flushed_at = excluded.flushed_at"),
	)
	res := batch(t, db, st("SELECT likes FROM post_stats"), st("SELECT seq FROM counter_flushes"))
	if res[0].Rows[0][0] != int64(0) || res[1].Rows[0][0] != int64(8) {
		t.Errorf("after clamped flush: likes %v, seq %v", res[0].Rows, res[1].Rows)
	}
}

// TestCounterFlushReplay follows the flush recipe of SCHEMA.md: a replayed
// flush sequence aborts the batch and counts nothing twice.
func TestCounterFlushReplay(t *testing.T) {
	db := openFile(t)
	ctx := context.Background()
	flush := func(seq int64, delta int64) error {
		_, err := db.Batch(ctx, []abi.Statement{
			st("INSERT INTO counter_flushes (shard, seq, flushed_at) VALUES (?, ?, ?) ON CONFLICT(shard) DO UPDATE SET seq = excluded.seq, flushed_at = excluded.flushed_at",
				"counter-7", seq, int64(1000)),
			st("INSERT INTO post_stats (post_id, likes, updated_at) VALUES (?1, MAX(0, ?2), ?3) ON CONFLICT(post_id) DO UPDATE SET likes = MAX(0, likes + ?2), updated_at = ?3",
				"p1", delta, int64(1000)),
		})
		return err
	}
	for _, step := range []struct {
		seq, delta int64
		replay     bool
	}{{1, 3, false}, {2, -1, false}, {2, -1, true}, {1, 3, true}, {3, -10, false}, {4, 2, false}} {
		err := flush(step.seq, step.delta)
		switch {
		case step.replay && (err == nil || err.Error() != "statement 0: counter flush already applied"):
			t.Fatalf("replay of seq %d: %v", step.seq, err)
		case !step.replay && err != nil:
			t.Fatalf("flush seq %d: %v", step.seq, err)
		}
	}
	res := batch(t, db, st("SELECT likes FROM post_stats WHERE post_id = 'p1'"), st("SELECT seq FROM counter_flushes"))
	if res[0].Rows[0][0] != int64(2) || res[1].Rows[0][0] != int64(4) {
		t.Fatalf("likes %v seq %v, want 2 and 4 (3-1, clamped at 0, +2)", res[0].Rows, res[1].Rows)
	}
}

// TestRateLimitWindowMigration: 0002 adds proxy_rate_limits.window_ms to a
// database at version 1; rows from before read window_ms 0, which the SQL
// fallback starts afresh (plugins/proto/ratelimit.StateFromRows).
func TestRateLimitWindowMigration(t *testing.T) {
	ms, err := schema.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	db, err := sqldb.Open("sqlite://"+filepath.Join(t.TempDir(), "d1.db"), sqldb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	if _, err := db.Migrate(ctx, ms[:1]); err != nil {
		t.Fatal(err)
	}
	batch(t, db, st("INSERT INTO proxy_rate_limits (bucket, window_start, count) VALUES ('user:a', 60000, 3)"))
	rep, err := schema.Migrate(ctx, db)
	if err != nil || !reflect.DeepEqual(rep.Applied, []int{2}) {
		t.Fatalf("migrate to 2: %+v, %v", rep, err)
	}
	res := batch(t, db, st("SELECT window_ms, count FROM proxy_rate_limits WHERE bucket = 'user:a'"))
	if len(res[0].Rows) != 1 || res[0].Rows[0][0] != int64(0) || res[0].Rows[0][1] != int64(3) {
		t.Fatalf("old row after 0002: %v", res[0].Rows)
	}
}
