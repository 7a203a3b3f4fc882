package edge

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// bucket is one rate-limit bucket a request is counted in.
type bucket struct {
	Policy string // "user", "ip" or "host": the RateLimit-Policy name
	Key    string // "user:<id>", "ip:<addr>", "host:<hostname>"
	Limit  Limit
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
// and a group whose shard fails falls back on its own. Groups are checked
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
	n := l.a.ratel.Shards()
	groups := map[int][]bucket{}
	var order []int
	for _, b := range buckets {
		s := shardOf(b.Key, n)
		if _, ok := groups[s]; !ok {
			order = append(order, s)
		}
		groups[s] = append(groups[s], b)
	}
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

// checkReply is RATE_LIMIT_SHARD's /check answer.
type checkReply struct {
	Allowed *bool `json:"allowed"`
	Buckets []struct {
		Key          string `json:"key"`
		Allowed      bool   `json:"allowed"`
		Limit        int    `json:"limit"`
		Remaining    int    `json:"remaining"`
		WindowMS     int64  `json:"window_ms"`
		ResetMS      int64  `json:"reset_ms"`
		RetryAfterMS int64  `json:"retry_after_ms"`
	} `json:"buckets"`
}

// checkShard asks RATE_LIMIT_SHARD: POST /check, one bucket per line.
func (l *limiter) checkShard(ctx context.Context, shard int, bs []bucket) ([]bucketState, error) {
	var body bytes.Buffer
	for _, b := range bs {
		fmt.Fprintf(&body, "%s\t%d\t%d\n", b.Key, b.Limit.N, b.Limit.Window.Milliseconds())
	}
	resp, err := l.a.callShard(ctx, l.a.ratel, shard, http.MethodPost, "/check", body.Bytes())
	if err != nil {
		return nil, err
	}
	var rep checkReply
	if err := json.Unmarshal(resp.Body, &rep); err != nil {
		return nil, fmt.Errorf("decode /check answer: %w", err)
	}
	if rep.Allowed == nil || len(rep.Buckets) != len(bs) {
		return nil, fmt.Errorf("/check answered %d buckets for %d asked", len(rep.Buckets), len(bs))
	}
	out := make([]bucketState, len(bs))
	for i, b := range bs {
		rb := rep.Buckets[i]
		if rb.Key != b.Key {
			return nil, fmt.Errorf("/check answered bucket %q in place of %q", rb.Key, b.Key)
		}
		out[i] = bucketState{
			bucket: b, Allowed: *rep.Allowed && rb.Allowed, Remaining: max(0, rb.Remaining),
			Reset: time.UnixMilli(rb.ResetMS), RetryAfter: time.Duration(max(0, rb.RetryAfterMS)) * time.Millisecond,
		}
	}
	return out, nil
}

// window is the sliding-window-counter state of one bucket: the counts of
// the current and previous fixed windows. The estimate of requests in the
// last Window is prev·(1 − elapsed/w) + cur.
type window struct {
	start int64 // unix ms of the current window's start
	cur   int64
	prev  int64
}

// slide evaluates one request against the window at now (ms), returning
// whether it is allowed and the bucket state. It does not count it.
func slide(b bucket, wd window, now int64) bucketState {
	w := b.Limit.Window.Milliseconds()
	limit := int64(b.Limit.N)
	elapsed := now - wd.start
	est := float64(wd.prev)*float64(w-elapsed)/float64(w) + float64(wd.cur)
	st := bucketState{bucket: b, Reset: time.UnixMilli(wd.start + w)}
	if est+1 <= float64(limit) {
		st.Allowed = true
		st.Remaining = int(max(0, limit-int64(math.Ceil(est))-1))
		return st
	}
	var wait int64
	if wd.cur+1 > limit {
		// Wait for the next window, then until this window's count has
		// decayed enough: cur·(1 − e/w) ≤ limit − 1.
		e := float64(w) * (1 - float64(limit-1)/float64(wd.cur))
		wait = (wd.start + w - now) + ceilMillis(e)
	} else {
		// Within this window, until prev·(1 − e/w) + cur ≤ limit − 1.
		e := float64(w) * (1 - float64(limit-1-wd.cur)/float64(wd.prev))
		wait = wd.start + ceilMillis(e) - now
	}
	st.RetryAfter = time.Duration(max(1, wait)) * time.Millisecond
	return st
}

// ceilMillis rounds up, ignoring floating-point noise below a microsecond.
func ceilMillis(ms float64) int64 { return int64(math.Ceil(ms - 1e-3)) }

// align returns the window of bucket b at now given the counts stored for
// the windows starting at start and start−w (absent windows count 0).
func align(b bucket, now int64, counts map[int64]int64) window {
	w := b.Limit.Window.Milliseconds()
	start := now - now%w
	return window{start: start, cur: counts[start], prev: counts[start-w]}
}

// checkSQL checks and counts bs in proxy_rate_limits in one transaction:
// read both windows of every bucket, and only if all allow, upsert the
// current windows.
func (l *limiter) checkSQL(ctx context.Context, bs []bucket, at time.Time) ([]bucketState, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	now := at.UnixMilli()
	tx, err := l.a.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	out := make([]bucketState, len(bs))
	all := true
	for i, b := range bs {
		w := b.Limit.Window.Milliseconds()
		start := now - now%w
		rows, err := tx.QueryContext(ctx, `SELECT window_start, count FROM proxy_rate_limits WHERE bucket = ? AND window_start IN (?, ?)`, b.Key, start, start-w)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", b.Key, err)
		}
		counts := map[int64]int64{}
		for rows.Next() {
			var ws, c int64
			if err := rows.Scan(&ws, &c); err != nil {
				rows.Close()
				return nil, fmt.Errorf("read %s: %w", b.Key, err)
			}
			counts[ws] = c
		}
		if err := rows.Close(); err != nil {
			return nil, fmt.Errorf("read %s: %w", b.Key, err)
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("read %s: %w", b.Key, err)
		}
		out[i] = slide(b, align(b, now, counts), now)
		all = all && out[i].Allowed
	}
	if !all {
		for i := range out {
			out[i].Allowed = false
		}
		return out, tx.Commit()
	}
	for _, b := range bs {
		w := b.Limit.Window.Milliseconds()
		if _, err := tx.ExecContext(ctx, `INSERT INTO proxy_rate_limits (bucket, window_start, count) VALUES (?, ?, 1)
ON CONFLICT(bucket, window_start) DO UPDATE SET count = count + 1`, b.Key, now-now%w); err != nil {
			return nil, fmt.Errorf("count %s: %w", b.Key, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	return out, nil
}

// sweepSQL deletes windows older than two days, at most once a minute.
func (l *limiter) sweepSQL(ctx context.Context, at time.Time) {
	now := at.UnixMilli()
	last := l.lastSweep.Load()
	if now-last < time.Minute.Milliseconds() || !l.lastSweep.CompareAndSwap(last, now) {
		return
	}
	cutoff := now - (48 * time.Hour).Milliseconds() // windows are at most 24h
	if _, err := l.a.db.ExecContext(ctx, `DELETE FROM proxy_rate_limits WHERE window_start < ?`, cutoff); err != nil {
		l.a.log.Warn().Err(err).Msg("rate-limit SQL cleanup failed")
	}
}

// memLimiter is the last-resort limiter: sliding windows in this process's
// memory, bounded to maxKeys buckets (expired ones are swept first; if all
// are live the table is reset, failing open rather than growing).
type memLimiter struct {
	mu      sync.Mutex
	maxKeys int
	windows map[string]*memWindow
}

type memWindow struct {
	w     window
	width int64
}

func newMemLimiter(maxKeys int) *memLimiter {
	return &memLimiter{maxKeys: maxKeys, windows: map[string]*memWindow{}}
}

// check counts one request in every bucket if all allow it.
func (m *memLimiter) check(bs []bucket, at time.Time) []bucketState {
	now := at.UnixMilli()
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.windows)+len(bs) > m.maxKeys {
		m.sweep(now)
	}
	out := make([]bucketState, len(bs))
	ws := make([]*memWindow, len(bs))
	all := true
	for i, b := range bs {
		w := b.Limit.Window.Milliseconds()
		mw := m.windows[b.Key]
		if mw == nil || mw.width != w {
			mw = &memWindow{width: w, w: window{start: now - now%w}}
			m.windows[b.Key] = mw
		}
		advance(&mw.w, w, now)
		ws[i] = mw
		out[i] = slide(b, mw.w, now)
		all = all && out[i].Allowed
	}
	for i := range out {
		if all {
			ws[i].w.cur++
		} else {
			out[i].Allowed = false
		}
	}
	return out
}

// advance moves a window forward to the one holding now.
func advance(wd *window, w, now int64) {
	start := now - now%w
	switch {
	case start == wd.start:
	case start == wd.start+w:
		wd.prev, wd.cur, wd.start = wd.cur, 0, start
	case start > wd.start:
		wd.prev, wd.cur, wd.start = 0, 0, start
	}
}

// sweep drops windows with nothing left in them; if the table is still
// full it is reset.
func (m *memLimiter) sweep(now int64) {
	for k, mw := range m.windows {
		if now-mw.w.start >= 2*mw.width {
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
