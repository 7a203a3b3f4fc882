package edge

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/edge/schema"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/pgtest"
	"github.com/edgeshard/edgeshard/storage/sqldb"
	"github.com/rs/zerolog"
)

// The edge's flows on PostgreSQL: the same plugins, the same statements
// and the same checks as on SQLite, with the SQL binding and the edge's own
// transactions on a fresh database of the test binary's PostgreSQL.

// openPostgresDB returns a fresh PostgreSQL database migrated to the edge
// schema.
func openPostgresDB(t *testing.T) *sqldb.DB {
	t.Helper()
	db, err := sqldb.Open(pgtest.DB(t), sqldb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := schema.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
	return db
}

// TestPostgresRuntimeEventsEachMode: 250 events land in runtime_events
// exactly once in every mode: flushed by the shards (primary), written
// inline and by the shards, deduped by id (shadow), inline only (off).
func TestPostgresRuntimeEventsEachMode(t *testing.T) {
	for _, mode := range []Mode{ModePrimary, ModeShadow, ModeOff} {
		t.Run(string(mode), func(t *testing.T) {
			e := startReal(t, envOpts{virtual: true, db: openPostgresDB})
			cfg := testConfig()
			cfg.EventMode = mode
			f := newFixture(t, cfg, e.deps())
			ids := postEvents(t, f, 250, 50)
			e.vc.Advance(5 * time.Second)
			waitFor(t, 30*time.Second, "250 events in runtime_events", func() bool {
				return f.scalar(`SELECT COUNT(*) FROM runtime_events`) >= 250
			})
			e.idle(t)
			checkEventsOnce(t, f, ids)
			if mode == ModePrimary {
				waitFor(t, 10*time.Second, "250 analytics points", func() bool { return len(e.ae.Points("runtime_events")) >= 250 })
			}
		})
	}
}

// TestPostgresLikes: concurrent likes (source rows and their deltas in one
// serialisable transaction, rerun when PostgreSQL aborts one) count each
// like once, through the shards (primary) or the legacy update (off).
func TestPostgresLikes(t *testing.T) {
	for _, mode := range []Mode{ModePrimary, ModeOff} {
		t.Run(string(mode), func(t *testing.T) {
			e := startReal(t, envOpts{virtual: true, db: openPostgresDB})
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
		})
	}
}

// TestPostgresFlushExactlyOnce: the first flushes commit on PostgreSQL and
// then crash (the shard forgets it flushed); their replays, guarded by the
// flush sequence in counter_flushes and deduped by event id, count nothing
// twice.
func TestPostgresFlushExactlyOnce(t *testing.T) {
	db := &faultSQL{}
	e := startReal(t, envOpts{virtual: true, db: openPostgresDB, sql: func(inner host.SQLDB) host.SQLDB { db.inner = inner; return db }})
	f := newFixture(t, testConfig(), e.deps())
	db.set(sqlCrashAfter, 6)
	ids := postEvents(t, f, 250, 50)
	for p := 0; p < 4; p++ {
		hit(t, f, fmt.Sprintf("/posts/pg%d/views", p), 10)
		hit(t, f, fmt.Sprintf("/posts/pg%d/runs", p), 5)
	}
	e.settle(t, 2*time.Minute, "every write flushed", func() bool {
		if f.scalar(`SELECT COUNT(*) FROM runtime_events`) < 250 {
			return false
		}
		for p := 0; p < 4; p++ {
			if postStat(t, f, fmt.Sprintf("pg%d", p), "views") < 10 || postStat(t, f, fmt.Sprintf("pg%d", p), "runs") < 5 {
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
		if v, r := postStat(t, f, fmt.Sprintf("pg%d", p), "views"), postStat(t, f, fmt.Sprintf("pg%d", p), "runs"); v != 10 || r != 5 {
			t.Fatalf("pg%d: views %d runs %d, want 10 and 5", p, v, r)
		}
	}
	if db.hits.Load() != 6 {
		t.Fatalf("%d flushes crashed after their commit, want 6", db.hits.Load())
	}
	if n := f.scalar(`SELECT COUNT(*) FROM counter_flushes WHERE seq > 0`); n == 0 {
		t.Fatal("no flush sequence recorded")
	}
}

// TestPostgresRateLimitFallbackDecidesLikeTheShard: the SQL fallback on
// PostgreSQL decides every call of a seeded sequence as the shard would.
func TestPostgresRateLimitFallbackDecidesLikeTheShard(t *testing.T) {
	l := &limiter{a: &API{cfg: DefaultConfig().withDefaults(), db: openPostgresDB(t).SQL(), log: zerolog.Nop(), guard: &sqlGuard{now: time.Now}}}
	if allowed := runRL(t, newRLGen(7, true), 300, localStores(t, l)); allowed == 0 {
		t.Fatal("nothing allowed")
	}
}

// TestRateLimitSQLFallbackSerialised: concurrent fallback decisions on one
// bucket never count from the same state, so exactly the limit is allowed
// — SQLite queues them, PostgreSQL reruns the losers.
func TestRateLimitSQLFallbackSerialised(t *testing.T) {
	for name, open := range map[string]func(*testing.T) *sqldb.DB{sqldb.DialectSQLite: openDB, sqldb.DialectPostgres: openPostgresDB} {
		t.Run(name, func(t *testing.T) {
			l := &limiter{a: &API{cfg: DefaultConfig().withDefaults(), db: open(t).SQL(), log: zerolog.Nop(), guard: &sqlGuard{now: time.Now}}}
			const limit, workers, calls = 50, 16, 8
			b := bucket{Policy: "user", Key: "user:hot", Limit: Limit{N: limit, Window: time.Minute}}
			now := time.UnixMilli(1_767_225_630_000)
			var allowed atomic.Int64
			var wg sync.WaitGroup
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range calls {
						sts, err := l.checkSQL(context.Background(), []bucket{b}, now)
						if err != nil {
							t.Error(err)
							return
						}
						if sts[0].Allowed {
							allowed.Add(1)
						}
					}
				}()
			}
			wg.Wait()
			if n := allowed.Load(); n != limit {
				t.Fatalf("%d of %d concurrent calls allowed, want the limit, %d", n, workers*calls, limit)
			}
		})
	}
}
