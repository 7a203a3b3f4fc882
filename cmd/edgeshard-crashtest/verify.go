package main

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/edgeshard/edgeshard/storage/sqldb"
)

// stream is the comparison of one write stream: the ledger's bounds
// against what SQL counted.
type stream struct {
	Name         string
	Acknowledged int64 // requests answered 2xx (net for likes)
	Unknown      int64 // requests without an answer (or a 5xx)
	Counted      int64 // what SQL holds
	Lost         int64 // acknowledged writes SQL lacks
	Duplicated   int64 // writes SQL holds beyond acknowledged + unknown
	Detail       []string
}

func (s stream) ok() bool { return s.Lost == 0 && s.Duplicated == 0 }

func (s stream) String() string {
	return fmt.Sprintf("stream=%s acknowledged=%d unknown=%d counted=%d lost=%d duplicated=%d",
		s.Name, s.Acknowledged, s.Unknown, s.Counted, s.Lost, s.Duplicated)
}

// snapshot is what SQL holds of the crash test's writes.
type snapshot struct {
	views, runs, likes map[string]int64 // post_stats by post
	likeRows           map[string]int64 // likes rows by post
	eventRows          int64
	eventIDs           map[string]int // id → rows (always 1 under the primary key)
	points             map[string]int // analytics points by event id
	pointRows          int64

	// follows (the fleet mode): user_counters and follows rows, by
	// followee (followers) and by follower (following).
	followers, followRows, following, followingRows map[string]int64
}

func readSnapshot(ctx context.Context, dataDir string) (*snapshot, error) {
	return readSnapshotAt(ctx, "sqlite://"+filepath.Join(dataDir, "d1.db"), "sqlite://"+filepath.Join(dataDir, "analytics.db"))
}

// readSnapshotAt reads the crash test's rows from the SQL database at
// dbURL (SQLite or PostgreSQL) and its analytics points from the datasets
// at aeURLs.
func readSnapshotAt(ctx context.Context, dbURL string, aeURLs ...string) (*snapshot, error) {
	db, err := sqldb.Open(dbURL, sqldb.Options{})
	if err != nil {
		return nil, err
	}
	defer db.Close()
	s := &snapshot{views: map[string]int64{}, runs: map[string]int64{}, likes: map[string]int64{},
		likeRows: map[string]int64{}, eventIDs: map[string]int{}, points: map[string]int{},
		followers: map[string]int64{}, followRows: map[string]int64{}, following: map[string]int64{}, followingRows: map[string]int64{}}
	rows, err := db.SQL().QueryContext(ctx, `SELECT post_id, likes, runs, views FROM post_stats WHERE post_id LIKE 'ct-post-%'`)
	if err != nil {
		return nil, fmt.Errorf("read post_stats: %w", err)
	}
	for rows.Next() {
		var id string
		var likes, runs, views int64
		if err := rows.Scan(&id, &likes, &runs, &views); err != nil {
			rows.Close()
			return nil, err
		}
		s.likes[id], s.runs[id], s.views[id] = likes, runs, views
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows, err = db.SQL().QueryContext(ctx, `SELECT post_id, COUNT(*) FROM likes WHERE post_id LIKE 'ct-post-%' GROUP BY post_id`)
	if err != nil {
		return nil, fmt.Errorf("read likes: %w", err)
	}
	for rows.Next() {
		var id string
		var n int64
		if err := rows.Scan(&id, &n); err != nil {
			rows.Close()
			return nil, err
		}
		s.likeRows[id] = n
	}
	rows.Close()
	for _, q := range []struct {
		sql string
		out map[string]int64
	}{
		{`SELECT user_id, followers FROM user_counters WHERE user_id LIKE 'ct-user-%'`, s.followers},
		{`SELECT followee_id, COUNT(*) FROM follows WHERE followee_id LIKE 'ct-user-%' GROUP BY followee_id`, s.followRows},
		{`SELECT user_id, following FROM user_counters WHERE user_id LIKE 'ct-fan-%'`, s.following},
		{`SELECT follower_id, COUNT(*) FROM follows WHERE followee_id LIKE 'ct-user-%' GROUP BY follower_id`, s.followingRows},
	} {
		if err := readCounts(ctx, db, q.sql, q.out); err != nil {
			return nil, err
		}
	}
	rows, err = db.SQL().QueryContext(ctx, `SELECT id FROM runtime_events WHERE type LIKE 'crash.%'`)
	if err != nil {
		return nil, fmt.Errorf("read runtime_events: %w", err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		s.eventRows++
		s.eventIDs[id]++
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}

	for _, u := range aeURLs {
		if err := readPoints(ctx, u, s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// readPoints adds the crash test's analytics points of the dataset at url
// to s.
func readPoints(ctx context.Context, url string, s *snapshot) error {
	ae, err := sqldb.Open(url, sqldb.Options{})
	if err != nil {
		return err
	}
	defer ae.Close()
	rows, err := ae.SQL().QueryContext(ctx, `SELECT CAST(blob1 AS TEXT) FROM analytics_events WHERE dataset = 'runtime_events' AND CAST(blob2 AS TEXT) LIKE 'crash.%'`)
	if err != nil {
		// No point was ever written (e.g. every event went inline).
		if strings.Contains(err.Error(), "no such table") {
			return nil
		}
		return fmt.Errorf("read analytics_events: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return err
		}
		s.pointRows++
		s.points[id]++
	}
	return rows.Err()
}

// readCounts reads (id, n) rows into out.
func readCounts(ctx context.Context, db *sqldb.DB, q string, out map[string]int64) error {
	rows, err := db.SQL().QueryContext(ctx, q)
	if err != nil {
		return fmt.Errorf("%s: %w", q, err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var n int64
		if err := rows.Scan(&id, &n); err != nil {
			return err
		}
		out[id] = n
	}
	return rows.Err()
}

// compare checks every stream of the ledger against SQL.
func compare(led *ledger, s *snapshot) []stream {
	led.mu.Lock()
	defer led.mu.Unlock()
	var out []stream
	for _, col := range []string{"views", "runs"} {
		st := stream{Name: col}
		got := s.views
		if col == "runs" {
			got = s.runs
		}
		seen := map[string]bool{}
		for _, k := range sortedKeys(led.counters) {
			column, post, _ := strings.Cut(k, "/")
			if column != col {
				continue
			}
			seen[post] = true
			b := led.counters[k]
			c := got[post]
			st.Acknowledged += b.acked
			st.Unknown += b.unknown
			st.Counted += c
			if c < b.acked {
				st.Lost += b.acked - c
				st.Detail = append(st.Detail, fmt.Sprintf("%s %s: counted %d < acknowledged %d", post, col, c, b.acked))
			}
			if c > b.acked+b.unknown {
				st.Duplicated += c - b.acked - b.unknown
				st.Detail = append(st.Detail, fmt.Sprintf("%s %s: counted %d > acknowledged %d + unknown %d", post, col, c, b.acked, b.unknown))
			}
		}
		for post, c := range got {
			if !seen[post] && c > 0 {
				st.Counted += c
				st.Duplicated += c
				st.Detail = append(st.Detail, fmt.Sprintf("%s %s: counted %d, never sent", post, col, c))
			}
		}
		out = append(out, st)
	}
	out = append(out, compareLikes("likes", led.likes, s.likes), compareLikes("like_rows", led.likes, s.likeRows))
	if len(led.followers) > 0 {
		out = append(out, compareLikes("followers", led.followers, s.followers), compareLikes("follow_rows", led.followers, s.followRows),
			compareLikes("following", led.following, s.following), compareLikes("following_rows", led.following, s.followingRows))
	}

	ev := stream{Name: "events", Counted: s.eventRows}
	for id, o := range led.events {
		if o == acked {
			ev.Acknowledged++
			if s.eventIDs[id] == 0 {
				ev.Lost++
				if len(ev.Detail) < 10 {
					ev.Detail = append(ev.Detail, "acknowledged event "+id+" is missing")
				}
			}
		} else {
			ev.Unknown++
		}
	}
	for id, n := range s.eventIDs {
		if n > 1 {
			ev.Duplicated += int64(n - 1)
			ev.Detail = append(ev.Detail, fmt.Sprintf("event %s has %d rows", id, n))
		}
		if _, ok := led.events[id]; !ok {
			ev.Duplicated += int64(n)
			if len(ev.Detail) < 20 {
				ev.Detail = append(ev.Detail, "event "+id+" was never sent (or was refused) but is stored")
			}
		}
	}
	out = append(out, ev)
	return out
}

// compareLikes checks each post's likes counter (or its source rows), or
// each user's followers or following, against the ledger: acknowledged
// PUTs minus acknowledged DELETEs, widened by the requests whose fate is
// unknown.
func compareLikes(name string, bounds map[string]*likeBound, got map[string]int64) stream {
	st := stream{Name: name}
	seen := map[string]bool{}
	for _, post := range sortedKeys(bounds) {
		seen[post] = true
		b := bounds[post]
		c := got[post]
		net := b.putAcked - b.delAcked
		lo, hi := net-b.delUnknown, net+b.putUnknown
		st.Acknowledged += net
		st.Unknown += b.putUnknown + b.delUnknown
		st.Counted += c
		if c < lo {
			st.Lost += lo - c
			st.Detail = append(st.Detail, fmt.Sprintf("%s %s: counted %d < %d (likes %d - unlikes %d acknowledged, %d unlikes unknown)", post, name, c, lo, b.putAcked, b.delAcked, b.delUnknown))
		}
		if c > hi {
			st.Duplicated += c - hi
			st.Detail = append(st.Detail, fmt.Sprintf("%s %s: counted %d > %d (likes %d - unlikes %d acknowledged, %d likes unknown)", post, name, c, hi, b.putAcked, b.delAcked, b.putUnknown))
		}
	}
	for post, c := range got {
		if !seen[post] && c > 0 {
			st.Counted += c
			st.Duplicated += c
			st.Detail = append(st.Detail, fmt.Sprintf("%s %s: counted %d, never sent", post, name, c))
		}
	}
	return st
}

// analyticsInfo describes the best-effort analytics points (not a
// pass/fail stream: the sink buffers points in memory for up to 1 s, so a
// kill may drop some, and a flush replayed after a kill writes them again).
func analyticsInfo(led *ledger, s *snapshot) string {
	led.mu.Lock()
	defer led.mu.Unlock()
	var withPoint, missing, repeated int64
	for id, o := range led.events {
		if o != acked {
			continue
		}
		switch n := s.points[id]; {
		case n == 0:
			missing++
		case n > 1:
			repeated++
			withPoint++
		default:
			withPoint++
		}
	}
	return fmt.Sprintf("info stream=analytics points=%d acknowledged_events_with_point=%d without=%d with_repeats=%d (best-effort sink, not checked)",
		s.pointRows, withPoint, missing, repeated)
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// restartDrift lists what a restart on drained data and a reconcile got
// wrong: views, runs or event rows that moved (nothing may flush again),
// and every counter of the named kinds (likes, followers, following) that
// differs from its source rows after the reconcile.
func restartDrift(before, after *snapshot, counters ...string) []string {
	var bad []string
	for post, v := range before.views {
		if after.views[post] != v || after.runs[post] != before.runs[post] {
			bad = append(bad, fmt.Sprintf("%s: views %d→%d runs %d→%d", post, v, after.views[post], before.runs[post], after.runs[post]))
		}
	}
	if after.eventRows != before.eventRows {
		bad = append(bad, fmt.Sprintf("runtime_events rows %d→%d", before.eventRows, after.eventRows))
	}
	sources := map[string][2]map[string]int64{
		"likes":     {after.likes, after.likeRows},
		"followers": {after.followers, after.followRows},
		"following": {after.following, after.followingRows},
	}
	for _, name := range counters {
		counter, src := sources[name][0], sources[name][1]
		for id, rows := range src {
			if counter[id] != rows {
				bad = append(bad, fmt.Sprintf("%s: %s %d after reconcile, %d source rows", id, name, counter[id], rows))
			}
		}
		for id, n := range counter {
			if n != 0 && src[id] == 0 {
				bad = append(bad, fmt.Sprintf("%s: %s %d after reconcile, no source rows", id, name, n))
			}
		}
	}
	return bad
}

// readPages reads the per-name counters' totals (the tutorial's
// page_views, which each page object writes on its flush alarm) from the
// SQL database at dbURL; no table yet is no page flushed.
func readPages(ctx context.Context, dbURL string) (map[string]int64, error) {
	db, err := sqldb.Open(dbURL, sqldb.Options{})
	if err != nil {
		return nil, err
	}
	defer db.Close()
	out := map[string]int64{}
	err = readCounts(ctx, db, `SELECT page, views FROM page_views WHERE page LIKE 'ct-page-%'`, out)
	if err != nil && strings.Contains(err.Error(), "does not exist") {
		return out, nil
	}
	return out, err
}

// comparePages checks each per-name counter against the ledger: every
// acknowledged increment counted (counted ≥ acknowledged, and no
// acknowledged number above the count), nothing beyond acknowledged +
// unknown, and no number acknowledged twice (two live instances of the
// object would hand out the same number).
func comparePages(led *ledger, got map[string]int64) stream {
	led.mu.Lock()
	defer led.mu.Unlock()
	st := stream{Name: "page_views"}
	for _, page := range sortedKeys(led.pages) {
		b := led.pages[page]
		c := got[page]
		acks, top, twice := int64(0), int64(0), 0
		for n, times := range b.numbers {
			acks += int64(times)
			top = max(top, n)
			if times > 1 {
				twice += times - 1
				st.Detail = append(st.Detail, fmt.Sprintf("%s: number %d acknowledged %d times", page, n, times))
			}
		}
		st.Acknowledged += acks
		st.Unknown += b.unknown
		st.Counted += c
		st.Duplicated += int64(twice)
		switch {
		case c < acks:
			st.Lost += acks - c
			st.Detail = append(st.Detail, fmt.Sprintf("%s: counted %d < acknowledged %d", page, c, acks))
		case top > c:
			st.Lost += top - c
			st.Detail = append(st.Detail, fmt.Sprintf("%s: number %d acknowledged, counted %d", page, top, c))
		}
		if c > acks+b.unknown {
			st.Duplicated += c - acks - b.unknown
			st.Detail = append(st.Detail, fmt.Sprintf("%s: counted %d > acknowledged %d + unknown %d", page, c, acks, b.unknown))
		}
	}
	for page, c := range got {
		if led.pages[page] == nil && c > 0 {
			st.Counted += c
			st.Duplicated += c
			st.Detail = append(st.Detail, fmt.Sprintf("%s: counted %d, never sent", page, c))
		}
	}
	return st
}
