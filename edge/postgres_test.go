package edge

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/pgtest"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/edgeshard/edgeshard/storage/sqldb"
)

// The edge's flows on PostgreSQL: the same plugins, the same statements
// and the same checks as on SQLite, with the SQL binding and the edge's own
// transactions on a fresh database of the test binary's PostgreSQL.

// openPostgresDB returns a fresh PostgreSQL database migrated to the edge
// schema.
func openPostgresDB(t *testing.T) *sqldb.DB {
	t.Helper()
	return testutil.SQL(t, pgtest.DB(t), testutil.EdgeSchema(t))
}

// TestPostgresRuntimeEventsEachMode: 250 events land in runtime_events
// exactly once in every mode (checkRuntimeEvents250).
func TestPostgresRuntimeEventsEachMode(t *testing.T) {
	checkRuntimeEvents250(t, envOpts{virtual: true, db: openPostgresDB})
}

// TestPostgresLikes: concurrent likes (source rows and their deltas in one
// serialisable transaction, rerun when PostgreSQL aborts one) count each
// like once, through the shards (primary) or the legacy update (off).
func TestPostgresLikes(t *testing.T) {
	checkLikes100(t, envOpts{virtual: true, db: openPostgresDB}, ModePrimary, ModeOff)
}

// TestPostgresFlushExactlyOnce: the first flushes commit on PostgreSQL and
// then crash (the shard forgets it flushed); their replays, guarded by the
// flush sequence in counter_flushes and deduped by event id, count nothing
// twice.
func TestPostgresFlushExactlyOnce(t *testing.T) {
	db := &testutil.FaultDB{}
	e := startReal(t, envOpts{virtual: true, db: openPostgresDB, sql: func(inner host.SQLDB) host.SQLDB { db.DB = inner; return db }})
	f := e.fixture(t)
	db.Set(testutil.SQLCrashAfter, 6)
	ids := postFlowWrites(t, f, "pg")
	checkFlowWritesOnce(t, e, f, "pg", ids)
	if db.Hits() != 6 {
		t.Fatalf("%d flushes crashed after their commit, want 6", db.Hits())
	}
	if n := f.scalar(`SELECT COUNT(*) FROM counter_flushes WHERE seq > 0`); n == 0 {
		t.Fatal("no flush sequence recorded")
	}
}

// TestPostgresRateLimitFallbackDecidesLikeTheShard: the SQL fallback on
// PostgreSQL decides every call of a seeded sequence as the shard would.
func TestPostgresRateLimitFallbackDecidesLikeTheShard(t *testing.T) {
	l := &limiter{a: bareAPI(openPostgresDB(t).SQL())}
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
			l := &limiter{a: bareAPI(open(t).SQL())}
			const limit, workers, calls = 50, 16, 8
			b := bucket{Policy: "user", Key: "user:hot", Limit: Limit{N: limit, Window: time.Minute}}
			now := time.UnixMilli(1_767_225_630_000)
			var allowed atomic.Int64
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
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
				})
			}
			wg.Wait()
			if n := allowed.Load(); n != limit {
				t.Fatalf("%d of %d concurrent calls allowed, want the limit, %d", n, workers*calls, limit)
			}
		})
	}
}
