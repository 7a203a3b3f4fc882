package counters

import (
	"errors"
	"strings"
	"testing"
)

// TestLineRoundTrip: what the edge encodes, the plugin parses back, with
// the whitelisted spellings.
func TestLineRoundTrip(t *testing.T) {
	for _, d := range []Delta{
		{Table: PostStats, ID: "post-1", Column: Likes, N: 1},
		{Table: UserCounters, ID: "u.2:x@y", Column: LikesReceived, N: -9223372036854775808},
		{Table: UserCounters, ID: strings.Repeat("i", 128), Column: Following, N: 9223372036854775807},
	} {
		line := string(d.AppendLine(nil))
		got, le := ParseDelta(strings.TrimSuffix(line, "\n"))
		if le != nil || got != d {
			t.Fatalf("%q: %+v %v, want %+v", line, got, le, d)
		}
		if got.Key() != strings.Join(strings.Split(line, "\t")[:3], "\t") {
			t.Fatalf("key %q of %q", got.Key(), line)
		}
	}
}

func TestParseDeltaRefuses(t *testing.T) {
	for _, c := range []struct{ line, code string }{
		{"post_stats\tp\tlikes", "bad_line"},
		{"post_stats\tp\tlikes\t1\tx\ty", "bad_line"},
		{"posts\tp\tlikes\t1", "unknown_table"},
		{"post_stats\t\tlikes\t1", "bad_id"},
		{"post_stats\ta b\tlikes\t1", "bad_id"},
		{"post_stats\t../..\tlikes\t1", "bad_id"},
		{"post_stats\t" + strings.Repeat("i", 129) + "\tlikes\t1", "bad_id"},
		{"post_stats\tp\tfollowers\t1", "unknown_column"},
		{"post_stats\tp\tlikes\t0", "bad_delta"},
		{"post_stats\tp\tlikes\t1.5", "bad_delta"},
		{"post_stats\tp\tlikes\t9223372036854775808", "bad_delta"},
	} {
		if _, le := ParseDelta(c.line); le == nil || le.Code != c.code {
			t.Errorf("%q: %v, want %s", c.line, le, c.code)
		}
	}
}

// TestStatementText pins the statements' text (SCHEMA.md quotes it).
func TestStatementText(t *testing.T) {
	q, args, err := Upsert([]Delta{{Table: PostStats, ID: "p1", Column: Views, N: -1}}, 5)
	if err != nil || q != "INSERT INTO post_stats (post_id, views, updated_at) VALUES (?1, CASE WHEN ?2 > 0 THEN ?2 ELSE 0 END, ?3) "+
		"ON CONFLICT(post_id) DO UPDATE SET views = CASE WHEN post_stats.views + ?2 > 0 THEN post_stats.views + ?2 ELSE 0 END, updated_at = ?3" ||
		len(args) != 3 || args[0] != "p1" || args[1] != int64(-1) || args[2] != int64(5) {
		t.Fatalf("%s %v %v", q, args, err)
	}
	q, args, err = Upsert([]Delta{{Table: PostStats, ID: "p1", Column: Likes, N: -1, Fence: 4}}, 5)
	if err != nil || q != "INSERT INTO post_stats (post_id, likes, updated_at) SELECT ?1, CASE WHEN ?2 > 0 THEN ?2 ELSE 0 END, ?3 WHERE "+
		"(SELECT COALESCE(MAX(epoch), 0) FROM counter_fences WHERE table_name = 'post_stats' AND row_id = ?1 AND column_name = 'likes') = ?4 "+
		"ON CONFLICT(post_id) DO UPDATE SET likes = CASE WHEN post_stats.likes + ?2 > 0 THEN post_stats.likes + ?2 ELSE 0 END, updated_at = ?3" ||
		len(args) != 4 || args[3] != int64(4) {
		t.Fatalf("%s %v %v", q, args, err)
	}
	q, args, err = FlushUpsert([]Delta{{Table: PostStats, ID: "p1", Column: Runs, N: 2}, {Table: PostStats, ID: "p1", Column: Views, N: 3}}, "pop-a", "COUNTER_SHARD/4", 7, 9)
	want := "INSERT INTO post_stats (post_id, runs, views, updated_at) SELECT ?1, CASE WHEN ?2 > 0 THEN ?2 ELSE 0 END, " +
		"CASE WHEN ?3 > 0 THEN ?3 ELSE 0 END, ?4 WHERE " +
		"(SELECT COALESCE(MAX(seq), 0) FROM counter_flushes WHERE node = ?5 AND shard = ?6) < ?7 ON CONFLICT(post_id) DO UPDATE SET " +
		"runs = CASE WHEN post_stats.runs + ?2 > 0 THEN post_stats.runs + ?2 ELSE 0 END, " +
		"views = CASE WHEN post_stats.views + ?3 > 0 THEN post_stats.views + ?3 ELSE 0 END, updated_at = ?4"
	if err != nil || q != want || len(args) != 7 || args[4] != "pop-a" || args[5] != "COUNTER_SHARD/4" || args[6] != int64(7) {
		t.Fatalf("%s %v %v", q, args, err)
	}
	// A fenced counter's delta goes alone, guarded by its fence too.
	q, args, err = FlushUpsert([]Delta{{Table: PostStats, ID: "p1", Column: Likes, N: 1, Fence: 2}}, "pop-a", "COUNTER_SHARD/4", 7, 9)
	want = "INSERT INTO post_stats (post_id, likes, updated_at) SELECT ?1, CASE WHEN ?2 > 0 THEN ?2 ELSE 0 END, ?3 WHERE " +
		"(SELECT COALESCE(MAX(seq), 0) FROM counter_flushes WHERE node = ?4 AND shard = ?5) < ?6 AND " +
		"(SELECT COALESCE(MAX(epoch), 0) FROM counter_fences WHERE table_name = 'post_stats' AND row_id = ?1 AND column_name = 'likes') = ?7 " +
		"ON CONFLICT(post_id) DO UPDATE SET likes = CASE WHEN post_stats.likes + ?2 > 0 THEN post_stats.likes + ?2 ELSE 0 END, updated_at = ?3"
	if err != nil || q != want || len(args) != 7 || args[6] != int64(2) {
		t.Fatalf("%s %v %v", q, args, err)
	}
	if _, _, err := FlushUpsert([]Delta{{Table: PostStats, ID: "p1", Column: Likes, N: 1}, {Table: PostStats, ID: "p1", Column: Views, N: 1}}, "", "s", 1, 1); !errors.Is(err, ErrFencedNotAlone) {
		t.Fatalf("likes and views in one flush statement: %v", err)
	}
}

// TestFenceOnLines: a fence travels on the line and in the buffer key of
// a counter with source rows only; without one, lines and keys read as
// before fences existed.
func TestFenceOnLines(t *testing.T) {
	d := Delta{Table: UserCounters, ID: "u1", Column: Followers, N: -1, Fence: 3}
	if line := string(d.AppendLine(nil)); line != "user_counters\tu1\tfollowers\t-1\t3\n" {
		t.Fatalf("line %q", line)
	}
	if got, le := ParseKeyed(d.Key(), "-1"); le != nil || got != d {
		t.Fatalf("keyed %q: %+v %v", d.Key(), got, le)
	}
	plain := Delta{Table: PostStats, ID: "p", Column: Views, N: 2}
	if plain.Key() != "post_stats\tp\tviews" || string(plain.AppendLine(nil)) != "post_stats\tp\tviews\t2\n" {
		t.Fatalf("plain %q %q", plain.Key(), plain.AppendLine(nil))
	}
	if got, le := ParseKeyed(plain.Key(), "2"); le != nil || got != plain {
		t.Fatalf("keyed %q: %+v %v", plain.Key(), got, le)
	}
	for _, line := range []string{"post_stats\tp\tviews\t1\t2", "post_stats\tp\tlikes\t1\t-1", "post_stats\tp\tlikes\t1\tx"} {
		if _, le := ParseDelta(line); le == nil || le.Code != "bad_fence" {
			t.Errorf("%q: %v, want bad_fence", line, le)
		}
	}
	if _, le := ParseDelta("post_stats\tp\tviews\t1\t0"); le != nil {
		t.Errorf("fence 0 on an unfenced counter: %v", le)
	}
	if !PostTable.Fenced(Likes) || PostTable.Fenced(Views) || !UserTable.Fenced(Following) || UserTable.Fenced(LikesReceived) {
		t.Error("Fenced disagrees with Recounts")
	}
}

// TestOnlyWhitelistedNamesReachSQL: a name outside Tables never becomes
// SQL text, however the Delta was built.
func TestOnlyWhitelistedNamesReachSQL(t *testing.T) {
	for _, ds := range [][]Delta{
		{{Table: "post_stats; DROP TABLE likes", ID: "p", Column: Likes, N: 1}},
		{{Table: PostStats, ID: "p", Column: "likes = 0, views", N: 1}},
		{{Table: PostStats, ID: "p", Column: Followers, N: 1}},
		{{Table: PostStats, ID: "p", Column: Likes, N: 1}, {Table: UserCounters, ID: "p", Column: Posts, N: 1}},
		{{Table: PostStats, ID: "p", Column: Likes, N: 1}, {Table: PostStats, ID: "q", Column: Views, N: 1}},
	} {
		if _, _, err := Upsert(ds, 1); !errors.Is(err, ErrNotWhitelisted) {
			t.Errorf("Upsert(%+v): %v", ds, err)
		}
		if _, _, err := FlushUpsert(ds, "", "s", 1, 1); !errors.Is(err, ErrNotWhitelisted) && !errors.Is(err, ErrFencedNotAlone) {
			t.Errorf("FlushUpsert(%+v): %v", ds, err)
		}
	}
	if _, err := SetSQL(UserCounters, Likes); !errors.Is(err, ErrNotWhitelisted) {
		t.Error("SetSQL of user_counters.likes")
	}
}
