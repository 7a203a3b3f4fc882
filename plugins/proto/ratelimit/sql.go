package ratelimit

import "github.com/edgeshard/edgeshard/plugins/proto/window"

// The edge's SQL fallback keeps a bucket in proxy_rate_limits as the
// shard keeps it in storage: one row per fixed window (bucket,
// window_start, window_ms, count). The newest row is the current window
// (Start, Cur), the row one window before it the previous one (Prev), so
// StateFromRows gives Decide exactly the state the shard would hold. Run
// them in one serialised transaction (sqldb's BEGIN IMMEDIATE): read every
// bucket, Decide, and only if the call was allowed, Store each.
const (
	// SQLRead reads a bucket's two newest windows; args: bucket.
	SQLRead = `SELECT window_start, window_ms, count FROM proxy_rate_limits WHERE bucket = ? ORDER BY window_start DESC LIMIT 2`
	// SQLReset forgets a bucket kept with another window length before it
	// starts afresh (Bucket.Fresh with Bucket.Exists); args: bucket.
	SQLReset = `DELETE FROM proxy_rate_limits WHERE bucket = ?`
	// SQLStore writes a bucket's current window; args: StoreArgs.
	SQLStore = `INSERT INTO proxy_rate_limits (bucket, window_start, window_ms, count) VALUES (?, ?, ?, ?)
ON CONFLICT(bucket, window_start) DO UPDATE SET window_ms = excluded.window_ms, count = excluded.count`
	// SQLSweep deletes windows that no decision reads any more (ended a
	// whole window ago); args: SweepArgs.
	SQLSweep = `DELETE FROM proxy_rate_limits WHERE window_start <= ? AND window_start + 2 * window_ms <= ?`
)

// Row is one proxy_rate_limits row.
type Row struct {
	Start    int64 // window_start, unix ms
	WindowMs int64 // window_ms (0 in rows written before it was recorded)
	Count    int64
}

// StateFromRows returns the stored state of a bucket from the rows SQLRead
// returned (newest first); exists is false without rows. A bucket's rows
// written with another window length yield a state Decide starts afresh.
func StateFromRows(rows []Row) (st window.Window, exists bool) {
	if len(rows) == 0 {
		return window.Window{}, false
	}
	cur := rows[0]
	st = window.Window{W: cur.WindowMs, Start: cur.Start, Cur: cur.Count}
	if len(rows) > 1 {
		if prev := rows[1]; prev.WindowMs == cur.WindowMs && prev.Start == cur.Start-cur.WindowMs {
			st.Prev = prev.Count
		}
	}
	return st, true
}

// StoreArgs are the arguments of SQLStore for a bucket decided by Decide.
func (b *Bucket) StoreArgs() []any {
	return []any{b.Key, b.State.Start, b.State.W, b.State.Cur}
}

// SweepArgs are the arguments of SQLSweep at now (unix ms).
func SweepArgs(now int64) []any {
	return []any{now - 2*window.MinWindowMs, now}
}
