package edge

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/httpx"
	"github.com/edgeshard/edgeshard/plugins/proto"
	"github.com/edgeshard/edgeshard/plugins/proto/counters"
	"github.com/edgeshard/edgeshard/storage/sqldb"
	"github.com/gorilla/mux"
)

// delta is one counter change: table, row id, column, amount (the
// /increment line of COUNTER_SHARD, proto/counters).
type delta = counters.Delta

// errCountersUnavailable is the client-facing cause of a 503 on counters.
var errCountersUnavailable = errors.New("counters are unavailable; retry later")

// counterWrite is one counter request: an optional source-row change, run
// in a SQL transaction, that decides the deltas (a repeated like changes
// nothing), or fixed deltas.
type counterWrite struct {
	source func(ctx context.Context, tx *sql.Tx) ([]delta, error)
	fixed  []delta
}

// applyCounters performs a counter write according to COUNTER_DO_MODE and
// returns the deltas it applied. It returns errCountersUnavailable (after
// logging E-VIBECODR-2145) when a delta could not be made durable.
//
//   - off: the source change and the legacy update in one transaction.
//   - shadow: the same, then the deltas to the shard with ?mode=shadow.
//   - primary: the source change commits first, then the deltas go to
//     their shards; a shard that fails (E-VIBECODR-2144) has its deltas
//     applied by the legacy update instead — unless the call's outcome is
//     unknown (host.ErrOutcomeUnknown: forwarded to the shard's owner, no
//     answer), which is a 503 (E-VIBECODR-2145). A crash between the two
//     leaves a source row without its delta: reconcileCounters repairs it.
//
// The deltas of a source-row change carry the fence the change read in its
// transaction (counters.Delta.Fence): wherever they are applied — a flush
// on any host, or the legacy update — they count only while no
// reconcileCounters correction moved the fence since (reconcile.go).
func (a *API) applyCounters(ctx context.Context, cw counterWrite) ([]delta, error) {
	ctx = context.WithoutCancel(ctx) // a vanished client must not split a write
	mode := a.cfg.CounterMode
	if mode == ModeOff || mode == ModeShadow {
		var ds []delta
		err := a.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
			var err error
			if ds, err = cw.deltas(ctx, tx); err != nil {
				return err
			}
			return applyLegacy(ctx, tx, ds, a.now())
		})
		if err != nil {
			return nil, a.countersLost(string(mode), ds, err)
		}
		a.m.deltas.WithLabelValues("legacy").Add(float64(len(ds)))
		if mode == ModeShadow && len(ds) > 0 {
			a.shadowCounters(ctx, ds)
		}
		return ds, nil
	}

	ds := cw.fixed
	if cw.source != nil {
		err := a.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
			var err error
			ds, err = cw.source(ctx, tx)
			return err
		})
		if err != nil {
			// Nothing was written: the source row (like, follow) and so its
			// counter deltas are lost to this request — E-VIBECODR-2145, the
			// runbook's "counter write failed" alert.
			return nil, a.countersLost("primary", nil, fmt.Errorf("source-row write: %w", err))
		}
	}
	if len(ds) == 0 {
		return ds, nil
	}
	groups, order := a.groupDeltas(ds)
	errs := make([]error, len(order))
	var wg sync.WaitGroup
	for gi, s := range order {
		wg.Go(func() {
			errs[gi] = a.incrementShard(ctx, s, groups[s], false)
		})
	}
	wg.Wait()
	var lost error
	for gi, s := range order {
		if errs[gi] == nil {
			a.m.deltas.WithLabelValues("shard").Add(float64(len(groups[s])))
			continue
		}
		if errors.Is(errs[gi], host.ErrOutcomeUnknown) {
			// Forwarded to the shard's owner on another host of the POP,
			// which may have buffered them before the answer was lost: the
			// legacy update would count them twice. The client learns the
			// outcome is unknown (503); reconcileCounters repairs a counter
			// with source rows if they were not buffered.
			lost = a.countersLost("primary", groups[s], fmt.Errorf("not applied through the legacy update: %w", errs[gi]))
			continue
		}
		a.m.fallback("counters", CodeCounterEnqueueFailed)
		a.log.Warn().Str("code", CodeCounterEnqueueFailed).Int("shard", s).Int("count", len(groups[s])).
			Str("deltas", describeDeltas(groups[s])).Err(errs[gi]).Msg("counter shard enqueue failed; applying the legacy SQL update")
		err := a.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error { return applyLegacy(ctx, tx, groups[s], a.now()) })
		if err != nil {
			lost = a.countersLost("primary", groups[s], err)
			continue
		}
		a.m.deltas.WithLabelValues("legacy").Add(float64(len(groups[s])))
	}
	return ds, lost
}

// countersLost logs E-VIBECODR-2145 and returns errCountersUnavailable.
func (a *API) countersLost(mode string, ds []delta, err error) error {
	a.m.fallback("counters", CodeCounterLegacyFailed)
	a.log.Error().Str("code", CodeCounterLegacyFailed).Str("mode", mode).Str("deltas", describeDeltas(ds)).Err(err).
		Msg("counter update failed: SQL could not take it")
	return errCountersUnavailable
}

func (cw counterWrite) deltas(ctx context.Context, tx *sql.Tx) ([]delta, error) {
	if cw.source == nil {
		return cw.fixed, nil
	}
	return cw.source(ctx, tx)
}

// shadowCounters exercises the shards with ?mode=shadow; they acknowledge
// without persisting, so failures are only logged.
func (a *API) shadowCounters(ctx context.Context, ds []delta) {
	groups, order := a.groupDeltas(ds)
	var wg sync.WaitGroup
	for _, s := range order {
		wg.Go(func() {
			if err := a.incrementShard(ctx, s, groups[s], true); err != nil {
				a.m.fallback("counters", CodeCounterEnqueueFailed)
				a.log.Warn().Str("code", CodeCounterEnqueueFailed).Str("mode", "shadow").Int("shard", s).
					Int("count", len(groups[s])).Err(err).Msg("counter shard shadow call failed; the legacy update already wrote")
			}
		})
	}
	wg.Wait()
}

// groupDeltas groups deltas by the shard of their row id.
func (a *API) groupDeltas(ds []delta) (map[int][]delta, []int) {
	return groupByShard(ds, a.counter.Shards(), func(d delta) string { return d.ID })
}

// incrementReply is COUNTER_SHARD's /increment answer.
type incrementReply struct {
	OK bool `json:"ok"`
}

// incrementShard sends deltas to one shard: POST /increment[?mode=shadow].
func (a *API) incrementShard(ctx context.Context, shard int, ds []delta, shadow bool) error {
	var b []byte
	for i := range ds {
		b = ds[i].AppendLine(b)
	}
	path := "/increment"
	if shadow {
		path += "?mode=shadow"
	}
	resp, err := a.callShard(ctx, a.counter, shard, http.MethodPost, path, b)
	if err != nil {
		return err
	}
	var rep incrementReply
	if err := json.Unmarshal(resp.Body, &rep); err != nil {
		return fmt.Errorf("decode /increment answer: %w", err)
	}
	if !rep.OK {
		return fmt.Errorf("/increment answered ok=false: %s", resp.Body)
	}
	return nil
}

// applyLegacy applies deltas with the clamped legacy update in tx.
func applyLegacy(ctx context.Context, tx *sql.Tx, ds []delta, now time.Time) error {
	for i := range ds {
		d := &ds[i]
		q, args, err := counters.Upsert(ds[i:i+1], now.UnixMilli())
		if err == nil {
			_, err = tx.ExecContext(ctx, q, args...)
		}
		if err != nil {
			return fmt.Errorf("legacy update %s.%s of %s: %w", d.Table, d.Column, d.ID, err)
		}
	}
	return nil
}

// inTx runs fn in a write transaction under the SQL circuit breaker and
// the request's SQL budget (sqlguard.go).
func (a *API) inTx(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	return a.guarded(ctx, func(ctx context.Context) error { return a.tx(ctx, fn) })
}

// tx runs fn in a write transaction bounded by ctx alone: BEGIN IMMEDIATE
// on SQLite, SERIALIZABLE on PostgreSQL, where a transaction that lost to a
// concurrent one runs fn again (sqldb.RunTx), so fn must leave no trace
// outside tx.
func (a *API) tx(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	return sqldb.RunTx(ctx, a.db, func(tx *sql.Tx) error { return fn(ctx, tx) })
}

func describeDeltas(ds []delta) string {
	var b bytes.Buffer
	for i, d := range ds {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s.%s[%s]%+d", d.Table, d.Column, d.ID, d.N)
	}
	return b.String()
}

// pathID returns the mux variable name, validated, or answers 400.
func pathID(w http.ResponseWriter, r *http.Request, name string) (string, bool) {
	id := mux.Vars(r)[name]
	if !proto.ValidID(id) {
		writeError(w, http.StatusBadRequest, "bad_id", name+": want "+proto.IDRule)
		return "", false
	}
	return id, true
}

// The source-row changes of likes and follows. Each returns, in the same
// statement and so the same transaction, the fence of every counter it
// moves (no row: nothing changed).
var (
	likeFence    = mustFenceRead(counters.PostStats, counters.Likes, 1)
	likeSQL      = `INSERT INTO likes (post_id, user_id, created_at) VALUES (?1, ?2, ?3) ON CONFLICT(post_id, user_id) DO NOTHING RETURNING ` + likeFence
	unlikeSQL    = `DELETE FROM likes WHERE post_id = ?1 AND user_id = ?2 RETURNING ` + likeFence
	followFences = mustFenceRead(counters.UserCounters, counters.Followers, 2) + ", " + mustFenceRead(counters.UserCounters, counters.Following, 1)
	followSQL    = `INSERT INTO follows (follower_id, followee_id, created_at) VALUES (?1, ?2, ?3) ON CONFLICT(follower_id, followee_id) DO NOTHING RETURNING ` + followFences
	unfollowSQL  = `DELETE FROM follows WHERE follower_id = ?1 AND followee_id = ?2 RETURNING ` + followFences
)

func mustFenceRead(table, column string, pID int) string {
	q, err := counters.FenceRead(table, column, pID)
	if err != nil {
		panic(err)
	}
	return q
}

// toggleRow runs the source-of-truth statement of a like or a follow: add
// (on) with args, or remove (off) with args but the last (the time),
// scanning the fences its RETURNING gives. n is the counters' change, +1
// or -1; 0 when the row already was as asked, or on error.
func toggleRow(ctx context.Context, tx *sql.Tx, on bool, what, add, remove string, args []any, fences ...any) (n int64, err error) {
	q, n := add, int64(1)
	if !on {
		q, n, args = remove, -1, args[:len(args)-1]
	}
	err = tx.QueryRowContext(ctx, q, args...).Scan(fences...)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	return n, nil
}

// applyOr503 applies cw, or answers 503 counters_unavailable (Retry-After
// 1) and reports false.
func (a *API) applyOr503(w http.ResponseWriter, r *http.Request, cw counterWrite) ([]delta, bool) {
	ds, err := a.applyCounters(r.Context(), cw)
	if err != nil {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "counters_unavailable", err.Error())
		return nil, false
	}
	return ds, true
}

// likeReply answers PUT/DELETE /posts/{postId}/like.
type likeReply struct {
	PostID  string `json:"post_id"`
	Liked   bool   `json:"liked"`
	Changed bool   `json:"changed"`
}

// serveLike is PUT (like) and DELETE (unlike) /posts/{postId}/like: the
// likes row is the source of truth, so repeating either changes nothing.
func (a *API) serveLike(w http.ResponseWriter, r *http.Request) {
	post, ok := pathID(w, r, "postId")
	if !ok {
		return
	}
	user := userFrom(r)
	like := r.Method == http.MethodPut
	now := a.now().UnixMilli()
	source := func(ctx context.Context, tx *sql.Tx) ([]delta, error) {
		var fence int64
		n, err := toggleRow(ctx, tx, like, "likes row", likeSQL, unlikeSQL, []any{post, user, now}, &fence)
		if n == 0 {
			return nil, err // already liked (or not liked): nothing changes
		}
		return []delta{{Table: counters.PostStats, ID: post, Column: counters.Likes, N: n, Fence: fence}}, nil
	}
	ds, ok := a.applyOr503(w, r, counterWrite{source: source})
	if !ok {
		return
	}
	httpx.WriteJSON(w, http.StatusOK, likeReply{PostID: post, Liked: like, Changed: len(ds) > 0})
}

// followReply answers PUT/DELETE /users/{userId}/follow.
type followReply struct {
	UserID    string `json:"user_id"`
	Following bool   `json:"following"`
	Changed   bool   `json:"changed"`
}

// serveFollow is PUT (follow) and DELETE (unfollow) /users/{userId}/follow
// by the caller: the follows row is the source of truth; a change moves
// the followee's followers and the caller's following (two deltas, maybe
// two shards).
func (a *API) serveFollow(w http.ResponseWriter, r *http.Request) {
	followee, ok := pathID(w, r, "userId")
	if !ok {
		return
	}
	follower := userFrom(r)
	if follower == followee {
		writeError(w, http.StatusBadRequest, "cannot_follow_self", "a user cannot follow themselves")
		return
	}
	follow := r.Method == http.MethodPut
	now := a.now().UnixMilli()
	source := func(ctx context.Context, tx *sql.Tx) ([]delta, error) {
		var followers, following int64 // the fences of the two counters
		n, err := toggleRow(ctx, tx, follow, "follows row", followSQL, unfollowSQL, []any{follower, followee, now}, &followers, &following)
		if n == 0 {
			return nil, err
		}
		return []delta{
			{Table: counters.UserCounters, ID: followee, Column: counters.Followers, N: n, Fence: followers},
			{Table: counters.UserCounters, ID: follower, Column: counters.Following, N: n, Fence: following},
		}, nil
	}
	ds, ok := a.applyOr503(w, r, counterWrite{source: source})
	if !ok {
		return
	}
	httpx.WriteJSON(w, http.StatusOK, followReply{UserID: followee, Following: follow, Changed: len(ds) > 0})
}

// servePostCounter is POST /posts/{postId}/runs and /views: +1, no source
// rows.
func (a *API) servePostCounter(column string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		post, ok := pathID(w, r, "postId")
		if !ok {
			return
		}
		if _, ok := a.applyOr503(w, r, counterWrite{fixed: []delta{{Table: counters.PostStats, ID: post, Column: column, N: 1}}}); !ok {
			return
		}
		httpx.WriteJSON(w, http.StatusAccepted, map[string]any{"post_id": post, "counter": column, "accepted": true})
	}
}

// PostStats are a post's counters as flushed to SQL.
type PostStats struct {
	PostID    string `json:"post_id"`
	Likes     int64  `json:"likes"`
	Runs      int64  `json:"runs"`
	Views     int64  `json:"views"`
	Comments  int64  `json:"comments"`
	Remixes   int64  `json:"remixes"`
	UpdatedAt int64  `json:"updated_at"`
}

// UserCounters are a user's counters as flushed to SQL.
type UserCounters struct {
	UserID        string `json:"user_id"`
	Followers     int64  `json:"followers"`
	Following     int64  `json:"following"`
	Posts         int64  `json:"posts"`
	Runs          int64  `json:"runs"`
	LikesReceived int64  `json:"likes_received"`
	UpdatedAt     int64  `json:"updated_at"`
}

// servePostStats is GET /posts/{postId}/stats (zeros for an unknown post).
func (a *API) servePostStats(w http.ResponseWriter, r *http.Request) {
	post, ok := pathID(w, r, "postId")
	if !ok {
		return
	}
	s := PostStats{PostID: post}
	a.serveCounterRow(w, r, &s, "post_stats", "post_id", post,
		`SELECT likes, runs, views, comments, remixes, updated_at FROM post_stats WHERE post_id = ?`,
		&s.Likes, &s.Runs, &s.Views, &s.Comments, &s.Remixes, &s.UpdatedAt)
}

// serveUserCounters is GET /users/{userId}/counters (zeros for an unknown
// user).
func (a *API) serveUserCounters(w http.ResponseWriter, r *http.Request) {
	user, ok := pathID(w, r, "userId")
	if !ok {
		return
	}
	c := UserCounters{UserID: user}
	a.serveCounterRow(w, r, &c, "user_counters", "user_id", user,
		`SELECT followers, following, posts, runs, likes_received, updated_at FROM user_counters WHERE user_id = ?`,
		&c.Followers, &c.Following, &c.Posts, &c.Runs, &c.LikesReceived, &c.UpdatedAt)
}

// serveCounterRow answers v, the row of a counter table whose idCol is id
// (its zeros when there is none): query reads it into dest, v's fields.
// SQL unavailable: 503.
func (a *API) serveCounterRow(w http.ResponseWriter, r *http.Request, v any, table, idCol, id, query string, dest ...any) {
	err := a.guarded(r.Context(), func(ctx context.Context) error {
		err := a.db.QueryRowContext(ctx, query, id).Scan(dest...)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		return err
	})
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		a.log.Error().Err(err).Str(idCol, id).Msg("read " + table + " failed")
		writeError(w, http.StatusServiceUnavailable, "sql_unavailable", "could not read the counters; retry later")
		return
	}
	httpx.WriteJSON(w, http.StatusOK, v)
}
