package edge

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/internal/pgtest"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/edgeshard/edgeshard/storage/sqldb"
)

// pop is one host of a fleet in the tests: its own shard storage, clock
// and node id, the fleet's database (a pool of its own).
type pop struct {
	env *realEnv
	f   *fixture
}

// startFleet starts one host per node id on one fresh PostgreSQL
// database, as POPs run: same plugins, same schema, separate shards.
func startFleet(t *testing.T, nodes ...string) []*pop {
	t.Helper()
	url := pgtest.DB(t)
	open := func(t *testing.T) *sqldb.DB {
		return testutil.SQLWith(t, url, sqldb.Options{MaxOpenConns: 16}, testutil.EdgeSchema(t))
	}
	var out []*pop
	for _, n := range nodes {
		e := startReal(t, envOpts{virtual: true, db: open, node: n})
		cfg := testConfig()
		cfg.NodeID = n
		out = append(out, &pop{env: e, f: newFixture(t, cfg, e.deps())})
	}
	return out
}

// fleetLedger is what the clients of a fleet test were told.
type fleetLedger struct {
	mu    sync.Mutex
	views map[string]int64
}

// TestFleetReconcileWhileOtherPOPsFlush: two hosts (pop-a, pop-b) on one
// PostgreSQL take likes, unlikes, follows, unfollows and views on the same
// posts and users, while reconcileCounters runs on both — racing each
// other (one skips: the advisory lock), racing the writes and the other
// host's flushes, and correcting counters whose deltas the other host
// still buffers (its clock is held back, so its shards have not flushed).
// Some likes lose their deltas on purpose (a row written behind the edge's
// back, as when a host dies between the row and the shard): real drift.
// At the end, once every shard has flushed and with no reconcile after the
// load, every likes, followers and following counter equals its source
// rows — no buffered delta was counted on top of a recount, none undone —
// and every acknowledged view is counted once.
func TestFleetReconcileWhileOtherPOPsFlush(t *testing.T) {
	pops := startFleet(t, "pop-a", "pop-b")
	a, b := pops[0], pops[1]
	const posts, users, rounds = 6, 10, 4
	led := &fleetLedger{views: map[string]int64{}}
	var failed atomic.Int64
	write := func(p *pop, rng *rand.Rand, n int) {
		for i := 0; i < n; i++ {
			post := fmt.Sprintf("fp%d", rng.IntN(posts))
			u, v := fmt.Sprintf("fu%d", rng.IntN(users)), fmt.Sprintf("fu%d", rng.IntN(users))
			var r reply
			switch k := rng.IntN(10); {
			case k < 3:
				r = p.f.do("PUT", "/posts/"+post+"/like", u, nil)
			case k < 5:
				r = p.f.do("DELETE", "/posts/"+post+"/like", u, nil)
			case k < 7 && u != v:
				r = p.f.do("PUT", "/users/"+v+"/follow", u, nil)
			case k < 8 && u != v:
				r = p.f.do("DELETE", "/users/"+v+"/follow", u, nil)
			default:
				r = p.f.do("POST", "/posts/"+post+"/views", u, nil)
				if r.status == 202 {
					led.mu.Lock()
					led.views[post]++
					led.mu.Unlock()
				}
			}
			if r.status/100 != 2 {
				failed.Add(1)
				t.Errorf("%s: answer %d %s", p.f.api.cfg.NodeID, r.status, r.body)
				return
			}
		}
	}
	// A baseline keeps every counter clear of 0: across POPs a -1 may reach
	// SQL before its +1, and a counter at 0 would clamp it away (drift
	// that only the next reconcile repairs; OPERATIONS.md). This test is
	// about fences, not about that.
	for i := 0; i < 10; i++ {
		for p := 0; p < posts; p++ {
			if r := a.f.do("PUT", fmt.Sprintf("/posts/fp%d/like", p), fmt.Sprintf("base-%d", i), nil); r.status != 200 {
				t.Fatalf("baseline like: %d %s", r.status, r.body)
			}
		}
		for u := 0; u < users; u++ {
			for _, pair := range [][2]string{{fmt.Sprintf("base-fan-%d", i), fmt.Sprintf("fu%d", u)}, {fmt.Sprintf("fu%d", u), fmt.Sprintf("base-star-%d", i)}} {
				if r := a.f.do("PUT", "/users/"+pair[1]+"/follow", pair[0], nil); r.status != 200 {
					t.Fatalf("baseline follow: %d %s", r.status, r.body)
				}
			}
		}
	}
	a.env.idle(t)
	ctx := context.Background()
	corrected, busy := 0, 0
	for round := 0; round < rounds; round++ {
		// Both hosts buffer deltas; only pop-a's shards flush (pop-b's
		// clock stands still), so pop-b holds deltas the recount counts.
		var wg sync.WaitGroup
		for i, p := range pops {
			wg.Go(func() {
				write(p, rand.New(rand.NewPCG(uint64(round), uint64(i))), 40)
			})
		}
		wg.Wait()
		if round == 0 {
			// Lost deltas: likes rows no shard will ever hear of.
			for i := 0; i < 3; i++ {
				if _, err := a.f.db.SQL().Exec(`INSERT INTO likes (post_id, user_id, created_at) VALUES (?, 'ghost', 0) ON CONFLICT DO NOTHING`, fmt.Sprintf("fp%d", i)); err != nil {
					t.Fatal(err)
				}
			}
		}
		// Reconcile on both at once, while both keep writing and pop-b
		// flushes half way through.
		stop := make(chan struct{})
		var ww sync.WaitGroup
		for i, p := range pops {
			ww.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(round), uint64(100+i)))
				for {
					select {
					case <-stop:
						return
					default:
					}
					write(p, rng, 5)
				}
			})
		}
		var mu sync.Mutex
		for _, p := range pops {
			wg.Go(func() {
				rep, err := p.f.api.ReconcileCounters(ctx)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case errors.Is(err, ErrReconcileBusy):
					busy++
				case err != nil:
					t.Errorf("reconcile on %s: %v", p.f.api.cfg.NodeID, err)
				default:
					corrected += rep.Corrected
				}
			})
		}
		if round%2 == 1 {
			b.env.vc.Advance(6 * time.Second) // pop-b's alarms fire during the recount
		}
		wg.Wait()
		close(stop)
		ww.Wait()
		if failed.Load() > 0 {
			t.FailNow()
		}
	}
	// The lock: held elsewhere, a run skips and changes nothing.
	release, ok, err := a.f.api.sqlDB.TryLock(ctx, ReconcileLockKey)
	if err != nil || !ok {
		t.Fatalf("take the reconcile lock: %v %v", ok, err)
	}
	if _, err := b.f.api.ReconcileCounters(ctx); !errors.Is(err, ErrReconcileBusy) {
		t.Fatalf("reconcile while another session holds the lock: %v", err)
	}
	release()

	for _, p := range pops {
		p.env.idle(t) // every buffered delta flushed (or dropped by its fence)
	}
	if corrected == 0 {
		t.Fatal("no reconcile run corrected anything: the test did not race a recount against buffered deltas")
	}
	if n := a.f.scalar(`SELECT COUNT(*) FROM counter_reconcile_log WHERE node IN ('pop-a', 'pop-b')`); n != int64(corrected) {
		t.Fatalf("%d correction rows logged, %d corrections reported", n, corrected)
	}
	f := a.f
	for i := 0; i < posts; i++ {
		post := fmt.Sprintf("fp%d", i)
		rows := f.scalar(`SELECT COUNT(*) FROM likes WHERE post_id = ?`, post)
		if got := postStat(t, f, post, "likes"); got != rows {
			t.Errorf("%s: likes %d, source rows %d", post, got, rows)
		}
		led.mu.Lock()
		want := led.views[post]
		led.mu.Unlock()
		if got := postStat(t, f, post, "views"); got != want {
			t.Errorf("%s: views %d, acknowledged %d", post, got, want)
		}
	}
	for i := 0; i < users; i++ {
		u := fmt.Sprintf("fu%d", i)
		var followers, following int64
		f.db.SQL().QueryRow(`SELECT followers, following FROM user_counters WHERE user_id = ?`, u).Scan(&followers, &following)
		if n := f.scalar(`SELECT COUNT(*) FROM follows WHERE followee_id = ?`, u); followers != n {
			t.Errorf("%s: followers %d, source rows %d", u, followers, n)
		}
		if n := f.scalar(`SELECT COUNT(*) FROM follows WHERE follower_id = ?`, u); following != n {
			t.Errorf("%s: following %d, source rows %d", u, following, n)
		}
	}
	if n := f.scalar(`SELECT COUNT(DISTINCT node) FROM counter_flushes WHERE node IN ('pop-a', 'pop-b')`); n != 2 {
		t.Errorf("flush sequences of %d nodes, want 2", n)
	}
	t.Logf("%d rounds: %d corrections (drift and deltas still buffered on the other host), %d runs skipped for the lock", rounds, corrected, busy)
}
