package edge

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/host/clock"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/edgeshard/edgeshard/plugins/proto/ratelimit"
	"github.com/edgeshard/edgeshard/plugins/proto/window"
	"github.com/edgeshard/edgeshard/storage"
	"github.com/edgeshard/edgeshard/storage/sqldb"
	"github.com/rs/zerolog"
)

// The property: for any sequence of calls, RateLimitShard, the SQL
// fallback (proxy_rate_limits) and the in-memory fallback give every call
// the same decision — overall and per bucket: allowed, remaining, reset and
// retry-after. The sequences are seeded and random: several buckets whose
// limits and windows change now and then, costs above 1, time moving in
// small and large irregular steps across window boundaries (and, without
// the wasm plugin, now and then backwards, as a wall clock may).

// rlStep is one call of a sequence.
type rlStep struct {
	now     int64
	buckets []bucket
}

// rlGen generates a sequence.
type rlGen struct {
	rng       *rand.Rand
	keys      []string
	limits    map[string]Limit
	now       int64
	backwards bool // allow the clock to step back
}

func newRLGen(seed uint64, backwards bool) *rlGen {
	g := &rlGen{
		rng:       rand.New(rand.NewPCG(seed, 0x5eed)),
		keys:      []string{"user:alice", "user:bob", "ip:203.0.113.9", "ip:2001:db8::1", "host:example.com", "user:carol"},
		limits:    map[string]Limit{},
		now:       time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli() + int64(seed%7919),
		backwards: backwards,
	}
	for _, k := range g.keys {
		g.limits[k] = g.limit()
	}
	return g
}

var (
	rlWindows = []time.Duration{time.Second, 1500 * time.Millisecond, 2 * time.Second, 7 * time.Second, time.Minute}
	rlCounts  = []int{1, 2, 3, 5, 8, 20}
)

func (g *rlGen) limit() Limit {
	return Limit{N: rlCounts[g.rng.IntN(len(rlCounts))], Window: rlWindows[g.rng.IntN(len(rlWindows))]}
}

// next returns the next call: 1..3 distinct buckets at a later (or, with
// backwards, sometimes earlier) time.
func (g *rlGen) next() rlStep {
	w := rlWindows[g.rng.IntN(len(rlWindows))].Milliseconds()
	switch r := g.rng.IntN(100); {
	case r < 10: // same millisecond
	case r < 50:
		g.now += g.rng.Int64N(60)
	case r < 80:
		g.now += g.rng.Int64N(w)
	case r < 97:
		g.now += w + g.rng.Int64N(3*w)
	case g.backwards:
		g.now -= g.rng.Int64N(1500)
	default:
		g.now += g.rng.Int64N(5)
	}
	if g.rng.IntN(50) == 0 { // a policy changes (a config reload)
		k := g.keys[g.rng.IntN(len(g.keys))]
		g.limits[k] = g.limit()
	}
	n := 1 + g.rng.IntN(3)
	perm := g.rng.Perm(len(g.keys))[:n]
	st := rlStep{now: g.now}
	for _, i := range perm {
		k := g.keys[i]
		l := g.limits[k]
		cost := int64(1)
		if g.rng.IntN(4) == 0 {
			cost = 1 + g.rng.Int64N(int64(min(l.N, 4)))
		}
		st.buckets = append(st.buckets, bucket{Policy: strings.SplitN(k, ":", 2)[0], Key: k, Limit: l, Cost: cost})
	}
	return st
}

// shardModel is RateLimitShard's decision as the plugin makes it: its
// state kept in the stored form (window.Encode/DecodeWindow) and
// ratelimit.Decide over it.
type shardModel struct{ stored map[string][]byte }

func (m *shardModel) check(bs []bucket, now int64) []bucketState {
	rbs := make([]ratelimit.Bucket, len(bs))
	for i, b := range bs {
		rbs[i] = ratelimit.Bucket{Line: b.line(), No: i + 1}
		if v, ok := m.stored[b.Key]; ok {
			st, err := window.DecodeWindow(string(v))
			if err != nil {
				panic(err)
			}
			rbs[i].Stored, rbs[i].Exists = st, true
		}
	}
	all := ratelimit.Decide(rbs, now)
	out := make([]bucketState, len(bs))
	for i, b := range bs {
		out[i] = stateOf(b, rbs[i].Reply(), all)
		if all {
			m.stored[b.Key] = rbs[i].State.Encode(nil)
		}
	}
	return out
}

// rlDecision is a call's decision in comparable form.
type rlDecision struct {
	Key          string
	Allowed      bool
	Remaining    int
	ResetMs      int64
	RetryAfterMs int64
}

func decisionOf(sts []bucketState) []rlDecision {
	out := make([]rlDecision, len(sts))
	for i, s := range sts {
		out[i] = rlDecision{s.Key, s.Allowed, s.Remaining, s.Reset.UnixMilli(), s.RetryAfter.Milliseconds()}
	}
	return out
}

// rlStores are the stores under test, each deciding one call.
type rlStore struct {
	name  string
	check func(bs []bucket, now int64) ([]bucketState, error)
}

func openMemoryDB(t *testing.T) *sqldb.DB {
	t.Helper()
	return testutil.SQL(t, sqldb.Scheme+":memory:", testutil.EdgeSchema(t))
}

// localStores returns the shard model, the SQL fallback on a fresh
// migrated SQLite database, and the in-memory fallback.
func localStores(t *testing.T, l *limiter) []rlStore {
	model := &shardModel{stored: map[string][]byte{}}
	mem := newMemLimiter(1000)
	return []rlStore{
		{"shard model", func(bs []bucket, now int64) ([]bucketState, error) { return model.check(bs, now), nil }},
		{"sql fallback", func(bs []bucket, now int64) ([]bucketState, error) {
			return l.checkSQL(context.Background(), bs, time.UnixMilli(now))
		}},
		{"memory fallback", func(bs []bucket, now int64) ([]bucketState, error) { return mem.check(bs, time.UnixMilli(now)), nil }},
	}
}

// runRL drives steps through every store and fails at the first call on
// which they differ. It returns how many calls were allowed.
func runRL(t *testing.T, g *rlGen, steps int, stores []rlStore) (allowed int) {
	t.Helper()
	var history []string
	for i := 0; i < steps; i++ {
		st := g.next()
		var keys []string
		for _, b := range st.buckets {
			keys = append(keys, fmt.Sprintf("%s %d/%dms cost %d", b.Key, b.Limit.N, b.Limit.Window.Milliseconds(), max(1, b.Cost)))
		}
		history = append(history, fmt.Sprintf("step %d at %d: %s", i, st.now, strings.Join(keys, ", ")))
		var want []rlDecision
		for j, s := range stores {
			sts, err := s.check(st.buckets, st.now)
			if err != nil {
				t.Fatalf("step %d: %s: %v", i, s.name, err)
			}
			got := decisionOf(sts)
			if j == 0 {
				want = got
				if got[0].Allowed {
					allowed++
				}
				continue
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("step %d: %s decided\n  %+v\nwhere %s decided\n  %+v\nlast calls:\n  %s", i, s.name, got, stores[0].name, want,
					strings.Join(history[max(0, len(history)-8):], "\n  "))
			}
		}
	}
	return allowed
}

// TestRateLimitFallbacksDecideLikeTheShard runs seeded sequences through
// the shard's decision, the SQL fallback and the memory fallback.
func TestRateLimitFallbacksDecideLikeTheShard(t *testing.T) {
	const seeds, steps = 3, 800
	db := openMemoryDB(t)
	for seed := uint64(1); seed <= seeds; seed++ {
		if _, err := db.SQL().Exec(`DELETE FROM proxy_rate_limits`); err != nil {
			t.Fatal(err)
		}
		l := &limiter{a: bareAPI(db.SQL())}
		allowed := runRL(t, newRLGen(seed, true), steps, localStores(t, l))
		t.Logf("seed %d: %d of %d calls allowed", seed, allowed, steps)
		// The sequences must exercise both verdicts.
		if allowed < steps/10 || allowed > steps*9/10 {
			t.Fatalf("seed %d: %d of %d calls allowed: the sequence does not exercise both verdicts", seed, allowed, steps)
		}
	}
}

// TestRateLimitPluginDecidesLikeTheFallbacks runs a shorter sequence
// through the real wasm plugin (POST /check on a host with a virtual
// clock, as the edge calls it), the SQL fallback and the memory fallback.
func TestRateLimitPluginDecidesLikeTheFallbacks(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the wasm plugin")
	}
	const steps = 400
	g := newRLGen(99, false) // a virtual clock only moves forward
	vc := clock.NewVirtual(time.UnixMilli(g.now))
	h, err := host.New(context.Background(), host.Config{
		CacheDir: testutil.CacheDir(), Engine: testutil.Engine(t), Clock: vc, Logger: zerolog.Nop(),
		IdleTimeout: time.Hour, Storage: storage.NewMemory(),
		Bindings: []host.Binding{{Name: "RATE_LIMIT_SHARD", Module: testutil.Plugin(t, "plugins/ratelimit"), Shards: 1}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(context.Background()) })
	ns, _ := h.Namespace("RATE_LIMIT_SHARD")
	db := openMemoryDB(t)
	cfg := DefaultConfig().withDefaults()
	cfg.ShardTimeout = 30 * time.Second
	l := &limiter{a: &API{cfg: cfg, ratel: ns, db: db.SQL(), log: zerolog.Nop(), guard: &sqlGuard{now: time.Now}}}
	plugin := rlStore{"wasm plugin", func(bs []bucket, now int64) ([]bucketState, error) {
		vc.Set(time.UnixMilli(now))
		return l.checkShard(context.Background(), 0, bs)
	}}
	stores := append([]rlStore{plugin}, localStores(t, l)...)
	allowed := runRL(t, g, steps, stores)
	t.Logf("%d of %d calls allowed", allowed, steps)
	if allowed < steps/10 || allowed > steps*9/10 {
		t.Fatalf("%d of %d calls allowed: the sequence does not exercise both verdicts", allowed, steps)
	}
}

// TestRetryAfterRoundsUp: a retry of 1.5 s is "Retry-After: 2" (whole
// seconds, rounded up, so a client that waits that long is allowed), and
// the bucket's RateLimit t= is rounded the same way.
func TestRetryAfterRoundsUp(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	b := bucket{Policy: "user", Key: "user:alice", Limit: Limit{N: 2, Window: time.Minute}}
	for _, tc := range []struct {
		retry time.Duration
		want  string
	}{{1500 * time.Millisecond, "2"}, {time.Second, "1"}, {time.Millisecond, "1"}, {59001 * time.Millisecond, "60"}} {
		h := http.Header{}
		d := decision{Allowed: false, Buckets: []bucketState{{bucket: b, Allowed: false, Reset: now.Add(tc.retry), RetryAfter: tc.retry}}}
		setRateLimitHeaders(h, []bucket{b}, d, now)
		if got := h.Get("Retry-After"); got != tc.want {
			t.Errorf("retry %v: Retry-After %q, want %q", tc.retry, got, tc.want)
		}
		if got, want := h.Get("RateLimit"), `"user";r=0;t=`+tc.want; got != want {
			t.Errorf("retry %v: RateLimit %q, want %q", tc.retry, got, want)
		}
	}
}

// bareAPI is an API with only a database, the defaults and the SQL guard:
// enough for the SQL fallback's code.
func bareAPI(db *sql.DB) *API {
	return &API{cfg: DefaultConfig().withDefaults(), db: db, log: zerolog.Nop(), guard: &sqlGuard{now: time.Now}}
}
