package edge

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeshard/edgeshard/plugins/proto/ratelimit"
	"github.com/edgeshard/edgeshard/plugins/proto/window"
)

// bucket is one rate-limit bucket a request is counted in.
type bucket struct {
	Policy string // "user", "ip" or "host": the RateLimit-Policy name
	Key    string // "user:<id>", "ip:<addr>", "host:<hostname>"
	Limit  Limit
	Cost   int64 // what the request counts for; 0 means 1
}

// line is the bucket's /check line.
func (b bucket) line() ratelimit.Line {
	return ratelimit.Line{Key: b.Key, Limit: int64(b.Limit.N), WindowMs: b.Limit.Window.Milliseconds(), Cost: max(1, b.Cost)}
}

// stateOf is the bucket after a call decided all (the shard's answer or
// a fallback's ratelimit.Decide): a bucket allows only an allowed call.
func stateOf(b bucket, r ratelimit.BucketReply, all bool) bucketState {
	return bucketState{
		bucket: b, Allowed: all && r.Allowed, Remaining: int(max(0, r.Remaining)),
		Reset: time.UnixMilli(r.ResetMs), RetryAfter: time.Duration(max(0, r.RetryAfterMs)) * time.Millisecond,
	}
}

// decideLocal is a fallback's decision: bs with their stored state
// (ratelimit.Bucket Stored/Exists filled) decided by the shard's own
// ratelimit.Decide.
func decideLocal(bs []bucket, rbs []ratelimit.Bucket, now int64) ([]bucketState, bool) {
	all := ratelimit.Decide(rbs, now)
	out := make([]bucketState, len(bs))
	for i, b := range bs {
		out[i] = stateOf(b, rbs[i].Reply(), all)
	}
	return out, all
}

// localBuckets returns the ratelimit.Buckets of bs, state not yet filled.
func localBuckets(bs []bucket) []ratelimit.Bucket {
	out := make([]ratelimit.Bucket, len(bs))
	for i, b := range bs {
		out[i] = ratelimit.Bucket{Line: b.line(), No: i + 1}
	}
	return out
}

// bucketState is a bucket after a check.
type bucketState struct {
	bucket
	Allowed    bool
	Remaining  int
	Reset      time.Time     // end of the current window
	RetryAfter time.Duration // 0 when allowed
}

// decision is the outcome of checking a request against its buckets.
type decision struct {
	Allowed bool
	Buckets []bucketState
}

// limiter checks buckets in order RateLimitShard → SQL proxy_rate_limits →
// memory. Buckets are grouped by shard; each group is one atomic /check,
// and a group whose shard fails falls back on its own. The fallbacks keep
// the shard's state and decide with its code (proto/ratelimit.Decide), so
// they answer exactly what the shard would have. Groups are checked
// in the order of their first bucket (user, ip, host) and the check stops
// at the first group that refuses: a user over their own limit does not
// use up the shared ip and host buckets. (A group refusing after an
// earlier one allowed leaves that earlier count in place: the shards have
// no cross-shard transaction.)
type limiter struct {
	a         *API
	mem       *memLimiter
	lastSweep atomic.Int64 // unix ms of the last SQL cleanup
}

func newLimiter(a *API) *limiter {
	return &limiter{a: a, mem: newMemLimiter(a.cfg.Proxy.MemoryLimiterKeys)}
}

// check counts one request in every bucket if all allow it. The decision
// lists the buckets that were checked, in the caller's order.
func (l *limiter) check(ctx context.Context, buckets []bucket) decision {
	groups, order := groupByShard(buckets, l.a.ratel.Shards(), func(b bucket) string { return b.Key })
	d := decision{Allowed: true}
	byKey := map[string]bucketState{}
	for _, s := range order {
		for _, st := range l.checkGroup(ctx, s, groups[s]) {
			byKey[st.Key] = st
			d.Allowed = d.Allowed && st.Allowed
		}
		if !d.Allowed {
			break
		}
	}
	for _, b := range buckets {
		if st, ok := byKey[b.Key]; ok {
			d.Buckets = append(d.Buckets, st)
		}
	}
	return d
}

// checkGroup checks buckets of one shard, falling back to SQL and memory.
func (l *limiter) checkGroup(ctx context.Context, shard int, bs []bucket) []bucketState {
	a := l.a
	st, err := l.checkShard(ctx, shard, bs)
	if err == nil {
		a.m.rateLimit.WithLabelValues("shard", result(st)).Inc()
		return st
	}
	if ctx.Err() != nil {
		// The client went away: nothing to decide, no fallback to take.
		out := make([]bucketState, len(bs))
		for i, b := range bs {
			out[i] = bucketState{bucket: b}
		}
		return out
	}
	a.m.fallback("ratelimit", CodeRateLimitSQL)
	a.log.Warn().Str("code", CodeRateLimitSQL).Int("shard", shard).Str("buckets", keysOf(bs)).Err(err).
		Msg("rate-limit shard failed; using SQL proxy_rate_limits")
	now := a.now()
	st, err = l.checkSQL(ctx, bs, now)
	if err == nil {
		a.m.rateLimit.WithLabelValues("sql", result(st)).Inc()
		l.sweepSQL(ctx, now)
		return st
	}
	a.m.fallback("ratelimit", CodeRateLimitMemory)
	a.log.Error().Str("code", CodeRateLimitMemory).Int("shard", shard).Str("buckets", keysOf(bs)).Err(err).
		Msg("rate-limit SQL fallback failed; using the in-memory limiter")
	st = l.mem.check(bs, now)
	a.m.rateLimit.WithLabelValues("memory", result(st)).Inc()
	return st
}

func result(st []bucketState) string {
	for _, s := range st {
		if !s.Allowed {
			return "limited"
		}
	}
	return "allowed"
}

func keysOf(bs []bucket) string {
	keys := make([]string, len(bs))
	for i, b := range bs {
		keys[i] = b.Key
	}
	return strings.Join(keys, ",")
}

// checkShard asks RATE_LIMIT_SHARD: POST /check, one bucket per line.
func (l *limiter) checkShard(ctx context.Context, shard int, bs []bucket) ([]bucketState, error) {
	var body []byte
	for _, b := range bs {
		body = b.line().AppendLine(body)
	}
	resp, err := l.a.callShard(ctx, l.a.ratel, shard, http.MethodPost, "/check", body)
	if err != nil {
		return nil, err
	}
	var rep ratelimit.Reply
	if err := json.Unmarshal(resp.Body, &rep); err != nil {
		return nil, fmt.Errorf("decode /check answer: %w", err)
	}
	if rep.Allowed == nil || len(rep.Buckets) != len(bs) {
		return nil, fmt.Errorf("/check answered %d buckets for %d asked", len(rep.Buckets), len(bs))
	}
	out := make([]bucketState, len(bs))
	for i, b := range bs {
		if rb := rep.Buckets[i]; rb.Key != b.Key {
			return nil, fmt.Errorf("/check answered bucket %q in place of %q", rb.Key, b.Key)
		}
		out[i] = stateOf(b, rep.Buckets[i], *rep.Allowed)
	}
	return out, nil
}

// checkSQL checks and counts bs in proxy_rate_limits in one transaction,
// as the shard would: read every bucket's state (its two newest windows),
// ratelimit.Decide, and only if all allow, store the counted windows. The
// transaction is serialised (sqldb.RunTx: BEGIN IMMEDIATE on SQLite,
// SERIALIZABLE on PostgreSQL, where one that lost to a concurrent decision
// decides again), so two decisions never count from the same state. It
// runs under the SQL circuit breaker and the request's budget (sqlguard.go).
func (l *limiter) checkSQL(ctx context.Context, bs []bucket, at time.Time) ([]bucketState, error) {
	now := at.UnixMilli()
	var out []bucketState
	err := l.a.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		rbs := localBuckets(bs)
		var rows []ratelimit.Row
		var err error
		for i := range rbs {
			rows, err = readWindows(ctx, tx, rbs[i].Key, rows[:0])
			if err != nil {
				return err
			}
			rbs[i].Stored, rbs[i].Exists = ratelimit.StateFromRows(rows)
		}
		var all bool
		out, all = decideLocal(bs, rbs, now)
		if !all {
			return nil
		}
		for i := range rbs {
			b := &rbs[i]
			if b.Fresh && b.Exists {
				if _, err := tx.ExecContext(ctx, ratelimit.SQLReset, b.Key); err != nil {
					return fmt.Errorf("reset %s: %w", b.Key, err)
				}
			}
			if _, err := tx.ExecContext(ctx, ratelimit.SQLStore, b.StoreArgs()...); err != nil {
				return fmt.Errorf("count %s: %w", b.Key, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// readWindows appends the rows ratelimit.SQLRead returns for key.
func readWindows(ctx context.Context, tx *sql.Tx, key string, rows []ratelimit.Row) ([]ratelimit.Row, error) {
	rs, err := tx.QueryContext(ctx, ratelimit.SQLRead, key)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	defer rs.Close()
	for rs.Next() {
		var r ratelimit.Row
		if err := rs.Scan(&r.Start, &r.WindowMs, &r.Count); err != nil {
			return nil, fmt.Errorf("read %s: %w", key, err)
		}
		rows = append(rows, r)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	return rows, nil
}

// sweepSQL deletes windows no decision reads any more, at most once a
// minute.
func (l *limiter) sweepSQL(ctx context.Context, at time.Time) {
	now := at.UnixMilli()
	last := l.lastSweep.Load()
	if now-last < time.Minute.Milliseconds() || !l.lastSweep.CompareAndSwap(last, now) {
		return
	}
	if _, err := l.a.db.ExecContext(ctx, ratelimit.SQLSweep, ratelimit.SweepArgs(now)...); err != nil {
		l.a.log.Warn().Err(err).Msg("rate-limit SQL cleanup failed")
	}
}

// memLimiter is the last-resort limiter: each bucket's state, as the shard
// keeps it, in this process's memory, bounded to maxKeys buckets (idle
// ones are swept first; if all are live the table is reset, failing open
// rather than growing).
type memLimiter struct {
	mu      sync.Mutex
	maxKeys int
	windows map[string]window.Window
}

func newMemLimiter(maxKeys int) *memLimiter {
	return &memLimiter{maxKeys: maxKeys, windows: map[string]window.Window{}}
}

// check counts one request in every bucket if all allow it
// (ratelimit.Decide over the kept states).
func (m *memLimiter) check(bs []bucket, at time.Time) []bucketState {
	now := at.UnixMilli()
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.windows)+len(bs) > m.maxKeys {
		m.sweep(now)
	}
	rbs := localBuckets(bs)
	for i := range rbs {
		rbs[i].Stored, rbs[i].Exists = m.windows[rbs[i].Key]
	}
	out, all := decideLocal(bs, rbs, now)
	if all {
		for i := range rbs {
			m.windows[rbs[i].Key] = rbs[i].State
		}
	}
	return out
}

// sweep drops the buckets the shard's cleanup alarm would (idle for more
// than two windows); if the table is still full it is reset.
func (m *memLimiter) sweep(now int64) {
	for k, st := range m.windows {
		if now >= st.ExpiresAt() {
			delete(m.windows, k)
		}
	}
	if len(m.windows) >= m.maxKeys {
		clear(m.windows)
	}
}

// setRateLimitHeaders writes the IETF draft RateLimit-Policy field for
// every policy, RateLimit for every bucket checked, and Retry-After (whole
// seconds, rounded up) when the request is limited.
func setRateLimitHeaders(h http.Header, all []bucket, d decision, now time.Time) {
	var pol, cur []string
	var retry time.Duration
	for _, b := range all {
		pol = append(pol, fmt.Sprintf("%q;q=%d;w=%d", b.Policy, b.Limit.N, ceilSeconds(b.Limit.Window)))
	}
	for _, b := range d.Buckets {
		reset := max(0, ceilSeconds(b.Reset.Sub(now)))
		if !b.Allowed && b.RetryAfter > 0 {
			reset = max(reset, ceilSeconds(b.RetryAfter))
			retry = max(retry, b.RetryAfter)
		}
		cur = append(cur, fmt.Sprintf("%q;r=%d;t=%d", b.Policy, b.Remaining, reset))
	}
	h.Set("RateLimit-Policy", strings.Join(pol, ", "))
	h.Set("RateLimit", strings.Join(cur, ", "))
	if !d.Allowed {
		h.Set("Retry-After", strconv.FormatInt(max(1, ceilSeconds(retry)), 10))
	}
}

func ceilSeconds(d time.Duration) int64 {
	return int64(math.Ceil(d.Seconds()))
}
