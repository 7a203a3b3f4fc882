package schema_test

import (
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/edge/schema"
	"github.com/edgeshard/edgeshard/internal/pgtest"
	"github.com/edgeshard/edgeshard/storage/sqldb"
)

var dialects = []string{sqldb.DialectSQLite, sqldb.DialectPostgres}

// openEmpty opens an empty database of dialect: an SQLite file, or a
// fresh database on the test binary's PostgreSQL.
func openEmpty(t testing.TB, dialect string) *sqldb.DB {
	t.Helper()
	url := "sqlite://" + filepath.Join(t.TempDir(), "d1.db")
	if dialect == sqldb.DialectPostgres {
		url = pgtest.DB(t)
	}
	db, err := sqldb.Open(url, sqldb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// openMigrated opens a database of dialect migrated to schema.Version.
func openMigrated(t testing.TB, dialect string) *sqldb.DB {
	t.Helper()
	db := openEmpty(t, dialect)
	if _, err := schema.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	return db
}

// eachDialect runs f as a subtest per dialect on a migrated database.
func eachDialect(t *testing.T, f func(t *testing.T, db *sqldb.DB)) {
	for _, d := range dialects {
		t.Run(d, func(t *testing.T) { f(t, openMigrated(t, d)) })
	}
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

// strings1 returns the first column of a query's rows as strings.
func strings1(t testing.TB, db *sqldb.DB, q string) []string {
	t.Helper()
	var out []string
	for _, r := range batch(t, db, st(q))[0].Rows {
		out = append(out, fmt.Sprint(r[0]))
	}
	return out
}

func TestMigrationsEmbedded(t *testing.T) {
	ms, err := schema.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dialects {
		own, err := sqldb.ForDialect(ms, d)
		if err != nil {
			t.Fatal(err)
		}
		if len(own) != schema.Version || own[0].Version != 1 || own[0].Name != "init" || own[0].SQL == "" ||
			own[1].Version != 2 || own[1].Name != "rate_limit_window" || own[2].Version != 3 || own[2].Name != "fleet" {
			t.Fatalf("%s migrations %+v", d, own)
		}
	}
}

func TestSchemaTables(t *testing.T) {
	eachDialect(t, func(t *testing.T, db *sqldb.DB) {
		rep, err := schema.Migrate(context.Background(), db)
		if err != nil || len(rep.Applied) != 0 || rep.Version != schema.Version {
			t.Fatalf("second migrate %+v, %v: want nothing applied", rep, err)
		}
		want := []string{"counter_fences", "counter_flushes", "counter_reconcile_log", "follows", "likes", "post_stats",
			"proxy_rate_limits", "runtime_events", "schema_migrations", "user_counters"}
		sort.Strings(want)
		if got := describe(t, db).tables; !reflect.DeepEqual(got, want) {
			t.Errorf("tables %v, want %v", got, want)
		}
		wantIdx := []string{"follows_followee_id(followee_id)", "likes_user_id(user_id)",
			"proxy_rate_limits_window_start(window_start)", "runtime_events_capsule_ts(capsule_id,ts)"}
		if got := describe(t, db).indexes; !reflect.DeepEqual(got, wantIdx) {
			t.Errorf("indexes %v, want %v", got, wantIdx)
		}
	})
}

// shape is a schema as both dialects can state it: tables; per column its
// kind (integer, text), NOT NULL, default and primary-key position;
// secondary indexes with their columns; the columns a CHECK (c >= 0)
// guards; triggers and their tables.
type shape struct {
	tables   []string
	columns  []string // table.column kind notnull default pk
	indexes  []string // name(col,…)
	checks   []string // table.column
	triggers []string // name on table
}

var checkRE = regexp.MustCompile(`CHECK \(+(\w+) >= 0\)+`)

func kind(t string) string {
	switch strings.ToLower(t) {
	case "integer", "bigint":
		return "integer"
	case "text":
		return "text"
	}
	return "other:" + t
}

// describe reads the schema of db from its catalog.
func describe(t testing.TB, db *sqldb.DB) shape {
	t.Helper()
	var s shape
	if db.Dialect() == sqldb.DialectSQLite {
		s.tables = strings1(t, db, "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
		for _, r := range batch(t, db, st(`SELECT m.name, p.name, p.type, p."notnull", COALESCE(p.dflt_value, ''), p.pk
			FROM sqlite_schema m, pragma_table_info(m.name) p WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'`))[0].Rows {
			pk := r[5].(int64)
			s.columns = append(s.columns, fmt.Sprintf("%s.%s %s notnull=%v default=%q pk=%d", r[0], r[1], kind(r[2].(string)), r[3] == int64(1) || pk > 0, r[4], pk))
		}
		for _, r := range batch(t, db, st(`SELECT m.name, group_concat(i.name, ',') FROM sqlite_schema m, pragma_index_info(m.name) i
			WHERE m.type = 'index' AND m.sql IS NOT NULL GROUP BY m.name ORDER BY m.name`))[0].Rows {
			s.indexes = append(s.indexes, fmt.Sprintf("%s(%s)", r[0], r[1]))
		}
		for _, r := range batch(t, db, st("SELECT name, sql FROM sqlite_schema WHERE type = 'table'"))[0].Rows {
			for _, m := range checkRE.FindAllStringSubmatch(r[1].(string), -1) {
				s.checks = append(s.checks, r[0].(string)+"."+m[1])
			}
		}
		// ALTER TABLE … ADD COLUMN … CHECK keeps its text in the table's sql too.
		s.triggers = strings1(t, db, "SELECT name || ' on ' || tbl_name FROM sqlite_schema WHERE type = 'trigger' ORDER BY name")
	} else {
		s.tables = strings1(t, db, "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name")
		for _, r := range batch(t, db, st(`SELECT c.table_name, c.column_name, c.data_type, c.is_nullable = 'NO', COALESCE(c.column_default, ''),
			COALESCE((SELECT array_position(i.indkey::int2[], a.attnum::int2) + 1 - array_lower(i.indkey::int2[], 1) FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid
			  WHERE i.indisprimary AND i.indrelid = (c.table_schema || '.' || c.table_name)::regclass AND a.attname = c.column_name), 0)
			FROM information_schema.columns c WHERE c.table_schema = current_schema()`))[0].Rows {
			def := strings.TrimSuffix(r[4].(string), "::text") // '' on SQLite is ''::text here
			s.columns = append(s.columns, fmt.Sprintf("%s.%s %s notnull=%v default=%q pk=%d", r[0], r[1], kind(r[2].(string)), r[3] == int64(1), def, r[5]))
		}
		for _, r := range batch(t, db, st(`SELECT ic.relname, string_agg(a.attname, ',' ORDER BY k.n)
			FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_namespace ns ON ns.oid = ic.relnamespace
			CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
			JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
			WHERE NOT i.indisprimary AND ns.nspname = current_schema() GROUP BY ic.relname ORDER BY ic.relname`))[0].Rows {
			s.indexes = append(s.indexes, fmt.Sprintf("%s(%s)", r[0], r[1]))
		}
		for _, r := range batch(t, db, st(`SELECT cl.relname, pg_get_constraintdef(c.oid) FROM pg_constraint c
			JOIN pg_class cl ON cl.oid = c.conrelid JOIN pg_namespace ns ON ns.oid = cl.relnamespace
			WHERE c.contype = 'c' AND ns.nspname = current_schema()`))[0].Rows {
			for _, m := range checkRE.FindAllStringSubmatch(r[1].(string), -1) {
				s.checks = append(s.checks, r[0].(string)+"."+m[1])
			}
		}
		s.triggers = strings1(t, db, `SELECT tg.tgname || ' on ' || cl.relname FROM pg_trigger tg JOIN pg_class cl ON cl.oid = tg.tgrelid
			JOIN pg_namespace ns ON ns.oid = cl.relnamespace WHERE NOT tg.tgisinternal AND ns.nspname = current_schema() ORDER BY 1`)
	}
	sort.Strings(s.columns)
	sort.Strings(s.checks)
	return s
}

// TestSchemasEquivalent: the SQLite and the PostgreSQL migrations build
// the same schema — tables, columns (kind, NOT NULL, default, primary key),
// indexes, CHECK backstops and the sequence trigger — and
// TestSchemaConstraints shows they refuse the same writes.
func TestSchemasEquivalent(t *testing.T) {
	lite, pg := describe(t, openMigrated(t, sqldb.DialectSQLite)), describe(t, openMigrated(t, sqldb.DialectPostgres))
	for _, c := range []struct {
		what      string
		lite, got []string
	}{
		{"tables", lite.tables, pg.tables},
		{"columns", lite.columns, pg.columns},
		{"indexes", lite.indexes, pg.indexes},
		{"checks", lite.checks, pg.checks},
		{"triggers", lite.triggers, pg.triggers},
	} {
		if !reflect.DeepEqual(c.lite, c.got) {
			t.Errorf("%s differ:\nsqlite   %q\npostgres %q", c.what, c.lite, c.got)
		}
	}
	if len(lite.checks) != 13 || len(lite.triggers) != 1 || len(lite.columns) < 40 {
		t.Errorf("the description misses things: %d checks, %d triggers, %d columns", len(lite.checks), len(lite.triggers), len(lite.columns))
	}
}

func TestSchemaConstraints(t *testing.T) {
	eachDialect(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		pg := db.Dialect() == sqldb.DialectPostgres
		batch(t, db,
			st("INSERT INTO post_stats (post_id, likes) VALUES ('p1', 1)"),
			st("INSERT INTO user_counters (user_id) VALUES ('u1')"),
			st("INSERT INTO counter_flushes (node, shard, seq, flushed_at) VALUES ('pop-a', 'shard-3', 7, 1)"),
		)
		check := func(table, column string) string {
			if pg {
				return fmt.Sprintf("new row for relation %q violates check constraint %q", table, table+"_"+column+"_check")
			}
			return "CHECK constraint failed: " + column + " >= 0"
		}
		fails := []struct{ sql, want string }{
			{"UPDATE post_stats SET likes = likes - 2 WHERE post_id = 'p1'", check("post_stats", "likes")},
			{"INSERT INTO post_stats (post_id, remixes) VALUES ('p2', -1)", check("post_stats", "remixes")},
			{"UPDATE user_counters SET followers = -1", check("user_counters", "followers")},
			{"UPDATE user_counters SET likes_received = -1", check("user_counters", "likes_received")},
			{"INSERT INTO proxy_rate_limits (bucket, window_start, count) VALUES ('ip:1', 0, -1)", check("proxy_rate_limits", "count")},
			{"INSERT INTO proxy_rate_limits (bucket, window_start, window_ms, count) VALUES ('ip:1', 0, -1, 1)", check("proxy_rate_limits", "window_ms")},
			{"INSERT INTO runtime_events (id, type, ts, received_at) VALUES ('e1', 'x', 'soon', 1)",
				map[bool]string{false: "cannot store TEXT value in INTEGER column runtime_events.ts", true: `invalid input syntax for type bigint: "soon"`}[pg]},
			{"INSERT INTO runtime_events (id, ts, received_at) VALUES ('e1', 1, 1)",
				map[bool]string{false: "NOT NULL constraint failed: runtime_events.type", true: `null value in column "type" of relation "runtime_events" violates not-null constraint`}[pg]},
			{"UPDATE counter_flushes SET seq = 7 WHERE shard = 'shard-3'", "counter flush already applied"},
			{"INSERT INTO counter_flushes (node, shard, seq, flushed_at) VALUES ('pop-a', 'shard-3', 6, 2) ON CONFLICT(node, shard) DO UPDATE SET seq = excluded.seq", "counter flush already applied"},
			{"INSERT INTO counter_fences (table_name, row_id, column_name, epoch) VALUES ('post_stats', 'p1', 'likes', -1)", check("counter_fences", "epoch")},
		}
		for _, f := range fails {
			_, err := db.Batch(ctx, []abi.Statement{st(f.sql)})
			if err == nil || err.Error() != "statement 0: "+f.want {
				t.Errorf("%s: error %v, want %q", f.sql, err, f.want)
			}
		}
		// A clamped update never trips the CHECK; the sequence moves forward.
		batch(t, db,
			st("UPDATE post_stats SET likes = CASE WHEN likes + ?1 > 0 THEN likes + ?1 ELSE 0 END WHERE post_id = 'p1'", int64(-5)),
			st("INSERT INTO counter_flushes (node, shard, seq, flushed_at) VALUES ('pop-a', 'shard-3', 8, 2) ON CONFLICT(node, shard) DO UPDATE SET seq = excluded.seq, flushed_at = excluded.flushed_at"),
			// Another node's copy of the shard has a sequence of its own.
			st("INSERT INTO counter_flushes (node, shard, seq, flushed_at) VALUES ('pop-b', 'shard-3', 1, 2)"),
		)
		res := batch(t, db, st("SELECT likes FROM post_stats"), st("SELECT seq FROM counter_flushes WHERE node = 'pop-a'"))
		if res[0].Rows[0][0] != int64(0) || res[1].Rows[0][0] != int64(8) {
			t.Errorf("after clamped flush: likes %v, seq %v", res[0].Rows, res[1].Rows)
		}
	})
}

// TestCounterFlushReplay follows the flush recipe of SCHEMA.md: a replayed
// flush sequence aborts the batch and counts nothing twice.
func TestCounterFlushReplay(t *testing.T) {
	eachDialect(t, func(t *testing.T, db *sqldb.DB) {
		ctx := context.Background()
		flush := func(seq int64, delta int64) error {
			_, err := db.Batch(ctx, []abi.Statement{
				st("INSERT INTO counter_flushes (node, shard, seq, flushed_at) VALUES (?, ?, ?, ?) ON CONFLICT(node, shard) DO UPDATE SET seq = excluded.seq, flushed_at = excluded.flushed_at",
					"pop-a", "counter-7", seq, int64(1000)),
				st("INSERT INTO post_stats (post_id, likes, updated_at) VALUES (?1, CASE WHEN ?2 > 0 THEN ?2 ELSE 0 END, ?3) "+
					"ON CONFLICT(post_id) DO UPDATE SET likes = CASE WHEN post_stats.likes + ?2 > 0 THEN post_stats.likes + ?2 ELSE 0 END, updated_at = ?3",
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
	})
}

// migratedTo opens an empty database of dialect migrated to version; it
// returns the dialect's migrations too.
func migratedTo(t *testing.T, dialect string, version int) (*sqldb.DB, []sqldb.Migration) {
	t.Helper()
	ms, err := schema.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	own, err := sqldb.ForDialect(ms, dialect)
	if err != nil {
		t.Fatal(err)
	}
	db := openEmpty(t, dialect)
	if _, err := db.Migrate(context.Background(), own[:version]); err != nil {
		t.Fatal(err)
	}
	return db, own
}

// TestRateLimitWindowMigration: 0002 adds proxy_rate_limits.window_ms to a
// database at version 1; rows from before read window_ms 0, which the SQL
// fallback starts afresh (plugins/proto/ratelimit.StateFromRows).
func TestRateLimitWindowMigration(t *testing.T) {
	for _, d := range dialects {
		t.Run(d, func(t *testing.T) {
			db, own := migratedTo(t, d, 1)
			ctx := context.Background()
			batch(t, db, st("INSERT INTO proxy_rate_limits (bucket, window_start, count) VALUES ('user:a', 60000, 3)"))
			rep, err := db.Migrate(ctx, own[:2])
			if err != nil || !reflect.DeepEqual(rep.Applied, []int{2}) {
				t.Fatalf("migrate to 2: %+v, %v", rep, err)
			}
			res := batch(t, db, st("SELECT window_ms, count FROM proxy_rate_limits WHERE bucket = 'user:a'"))
			if len(res[0].Rows) != 1 || res[0].Rows[0][0] != int64(0) || res[0].Rows[0][1] != int64(3) {
				t.Fatalf("old row after 0002: %v", res[0].Rows)
			}
		})
	}
}

// TestFleetMigration: 0003 keys counter_flushes by node and shard on a
// database a single host wrote at version 2: its rows keep their sequence
// under the empty node id (where that host's batches frozen before the upgrade still
// replay), the sequence still only moves forward, another node's copy of
// the same shard starts a sequence of its own, and counter_fences and
// counter_reconcile_log.node exist.
func TestFleetMigration(t *testing.T) {
	for _, d := range dialects {
		t.Run(d, func(t *testing.T) {
			db, _ := migratedTo(t, d, 2)
			ctx := context.Background()
			batch(t, db,
				st("INSERT INTO counter_flushes (shard, seq, flushed_at) VALUES ('COUNTER_SHARD/3', 5, 1)"),
				st("INSERT INTO counter_reconcile_log (ran_at, table_name, row_id, column_name, old_value, new_value) VALUES (1, 'post_stats', 'p1', 'likes', 2, 1)"))
			rep, err := schema.Migrate(ctx, db)
			if err != nil || !reflect.DeepEqual(rep.Applied, []int{3}) || rep.Version != 3 {
				t.Fatalf("migrate to 3: %+v, %v", rep, err)
			}
			res := batch(t, db, st("SELECT node, shard, seq, flushed_at FROM counter_flushes"), st("SELECT node FROM counter_reconcile_log"))
			if fmt.Sprint(res[0].Rows) != "[[ COUNTER_SHARD/3 5 1]]" || fmt.Sprint(res[1].Rows) != "[[]]" {
				t.Fatalf("rows after 0003: %v %v", res[0].Rows, res[1].Rows)
			}
			if _, err := db.Batch(ctx, []abi.Statement{st("UPDATE counter_flushes SET seq = 5 WHERE node = '' AND shard = 'COUNTER_SHARD/3'")}); err == nil || !strings.Contains(err.Error(), "counter flush already applied") {
				t.Fatalf("the trigger after 0003: %v", err)
			}
			batch(t, db,
				st("INSERT INTO counter_flushes (node, shard, seq, flushed_at) VALUES ('pop-a', 'COUNTER_SHARD/3', 6, 2)"),
				st("INSERT INTO counter_fences (table_name, row_id, column_name, epoch) VALUES ('post_stats', 'p1', 'likes', 1)"))
			if got := strings1(t, db, "SELECT node || '=' || seq FROM counter_flushes ORDER BY node"); fmt.Sprint(got) != "[=5 pop-a=6]" {
				t.Fatalf("sequences %v", got)
			}
		})
	}
}

// TestSchemaTooNew: a host whose schema is older than the database's
// refuses it with sqldb.ErrSchemaTooNew.
func TestSchemaTooNew(t *testing.T) {
	eachDialect(t, func(t *testing.T, db *sqldb.DB) {
		batch(t, db, st("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, 'from_the_future', 0)", int64(schema.Version+1)))
		_, err := schema.Migrate(context.Background(), db)
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("database is at version %d, this binary knows %d", schema.Version+1, schema.Version)) {
			t.Fatalf("migrate a newer database: %v", err)
		}
	})
}
