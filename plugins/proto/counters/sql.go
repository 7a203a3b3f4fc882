package counters

import (
	"errors"
	"strconv"
	"strings"
)

// ErrNotWhitelisted is the error of a statement asked for a table or
// column outside Tables.
var ErrNotWhitelisted = errors.New("counters: table or column not in the whitelist")

// lookup returns the whitelisted spellings of table and column.
func lookup(table, column string) (*Table, string, error) {
	t := LookupTable(table)
	if t == nil {
		return nil, "", ErrNotWhitelisted
	}
	c := t.Column(column)
	if c == "" {
		return nil, "", ErrNotWhitelisted
	}
	return t, c, nil
}

// Clamped upserts: a counter never goes below 0. The update adds the delta
// parameter, not excluded.col (which is already clamped).
//
// Every statement here is one text for SQLite and PostgreSQL (the binding
// rewrites ?N to $N): the clamp is CASE WHEN x > 0 THEN x ELSE 0 END, not
// SQLite's scalar MAX(0, x) (PostgreSQL's GREATEST, which SQLite lacks),
// and DO UPDATE names the stored value table.column, which PostgreSQL
// requires (a bare column there is ambiguous with excluded's).

// Upsert returns the clamped upsert of one row's deltas (ds share table
// and id; their columns are distinct, ds is not empty), as the edge's
// legacy path runs it:
//
//	INSERT INTO post_stats (post_id, likes, updated_at)
//	VALUES (?1, CASE WHEN ?2 > 0 THEN ?2 ELSE 0 END, ?3)
//	ON CONFLICT(post_id) DO UPDATE SET likes = CASE WHEN post_stats.likes + ?2 > 0
//	  THEN post_stats.likes + ?2 ELSE 0 END, updated_at = ?3
func Upsert(ds []Delta, now int64) (string, []any, error) {
	return upsert(ds, now, "", 0)
}

// FlushUpsert returns the shard's flush of one row's deltas: Upsert
// guarded by the flush's sequence, so a replayed flush changes nothing:
//
//	INSERT INTO post_stats (post_id, likes, views, updated_at)
//	SELECT ?1, <clamp ?2>, <clamp ?3>, ?4 WHERE <guard ?5 ?6>
//	ON CONFLICT(post_id) DO UPDATE SET likes = <clamp post_stats.likes + ?2>,
//	  views = <clamp post_stats.views + ?3>, updated_at = ?4
func FlushUpsert(ds []Delta, shard string, seq, now int64) (string, []any, error) {
	return upsert(ds, now, shard, seq)
}

func upsert(ds []Delta, now int64, shard string, seq int64) (string, []any, error) {
	t, _, err := lookup(ds[0].Table, ds[0].Column)
	if err != nil {
		return "", nil, err
	}
	var colBuf [8]string
	cols := colBuf[:0]
	for i := range ds {
		c := t.Column(ds[i].Column)
		if ds[i].Table != t.Name || ds[i].ID != ds[0].ID || c == "" {
			return "", nil, ErrNotWhitelisted
		}
		cols = append(cols, c)
	}
	k := len(ds)
	pNow := k + 2
	guarded := shard != ""
	args := make([]any, 0, k+4)
	args = append(args, ds[0].ID)
	var b strings.Builder
	b.Grow(160 + k*64)
	b.WriteString("INSERT INTO ")
	b.WriteString(t.Name)
	b.WriteString(" (")
	b.WriteString(t.KeyCol)
	for _, c := range cols {
		b.WriteString(", ")
		b.WriteString(c)
	}
	if guarded {
		b.WriteString(", updated_at) SELECT ?1")
	} else {
		b.WriteString(", updated_at) VALUES (?1")
	}
	for i := range ds {
		b.WriteString(", ")
		writeClamp(&b, "", i+2)
		args = append(args, ds[i].N)
	}
	b.WriteString(", ?")
	b.WriteString(strconv.Itoa(pNow))
	args = append(args, now)
	if guarded {
		b.WriteString(" WHERE ")
		b.WriteString(guardSQL(k+3, k+4))
		args = append(args, shard, seq)
	} else {
		b.WriteString(")")
	}
	b.WriteString(" ON CONFLICT(")
	b.WriteString(t.KeyCol)
	b.WriteString(") DO UPDATE SET ")
	for i, c := range cols {
		b.WriteString(c)
		b.WriteString(" = ")
		writeClamp(&b, t.Name+"."+c+" + ", i+2)
		b.WriteString(", ")
	}
	b.WriteString("updated_at = ?")
	b.WriteString(strconv.Itoa(pNow))
	return b.String(), args, nil
}

// writeClamp writes CASE WHEN x > 0 THEN x ELSE 0 END for x = base?p.
func writeClamp(b *strings.Builder, base string, p int) {
	n := strconv.Itoa(p)
	b.WriteString("CASE WHEN ")
	b.WriteString(base)
	b.WriteString("?")
	b.WriteString(n)
	b.WriteString(" > 0 THEN ")
	b.WriteString(base)
	b.WriteString("?")
	b.WriteString(n)
	b.WriteString(" ELSE 0 END")
}

// guardSQL is the condition every statement of a flush carries: the
// shard's recorded sequence (parameter pShard names the shard) is below
// this flush's (parameter pSeq), i.e. the flush was not applied.
func guardSQL(pShard, pSeq int) string {
	return "(SELECT COALESCE(MAX(seq), 0) FROM counter_flushes WHERE shard = ?" + strconv.Itoa(pShard) + ") < ?" + strconv.Itoa(pSeq)
}

// MarkSQL records a flush's sequence, under the same guard, as the last
// write of the flush's batch: a replay inserts nothing (and so never trips
// the schema's seq-only-moves-forward trigger). Args: shard, seq, now.
var MarkSQL = "INSERT INTO counter_flushes (shard, seq, flushed_at) SELECT ?1, ?2, ?3 WHERE " +
	guardSQL(1, 2) + " ON CONFLICT(shard) DO UPDATE SET seq = excluded.seq, flushed_at = excluded.flushed_at"

// SeqSQL reads a shard's recorded sequence. Args: shard.
const SeqSQL = "SELECT seq FROM counter_flushes WHERE shard = ?"

// SetSQL returns the reconcile job's correction of one counter: set
// table.column of a row to a recomputed value. Args: id, value, now.
func SetSQL(table, column string) (string, error) {
	t, c, err := lookup(table, column)
	if err != nil {
		return "", err
	}
	return "INSERT INTO " + t.Name + " (" + t.KeyCol + ", " + c + ", updated_at) VALUES (?1, ?2, ?3) " +
		"ON CONFLICT(" + t.KeyCol + ") DO UPDATE SET " + c + " = ?2, updated_at = ?3", nil
}

// LogCorrectionSQL records one correction in counter_reconcile_log. Args:
// ran_at, table, row id, column, old value, new value.
const LogCorrectionSQL = `INSERT INTO counter_reconcile_log (ran_at, table_name, row_id, column_name, old_value, new_value) VALUES (?, ?, ?, ?, ?, ?)`

// Recount is a counter that has source rows: Column of Table counts the
// rows of Source per SourceKey.
type Recount struct {
	Table     *Table
	Column    string
	Source    string // source table
	SourceKey string // its column holding the counter row's id
}

// Recounts are the counters reconcileCounters recomputes.
var Recounts = [...]Recount{
	{Table: PostTable, Column: Likes, Source: "likes", SourceKey: "post_id"},
	{Table: UserTable, Column: Followers, Source: "follows", SourceKey: "followee_id"},
	{Table: UserTable, Column: Following, Source: "follows", SourceKey: "follower_id"},
}

// SQL returns the query comparing the counter with its source rows: one
// (id, stored value or NULL for a missing row, source-row count) per row
// that has either.
func (r *Recount) SQL() string {
	t, k := r.Table.Name, r.Table.KeyCol
	return "WITH c AS (SELECT " + r.SourceKey + " AS id, COUNT(*) AS n FROM " + r.Source + " GROUP BY " + r.SourceKey + ")\n" +
		"SELECT p." + k + ", p." + r.Column + ", COALESCE(c.n, 0) FROM " + t + " p LEFT JOIN c ON c.id = p." + k + "\n" +
		"UNION ALL SELECT c.id, NULL, c.n FROM c WHERE NOT EXISTS (SELECT 1 FROM " + t + " p WHERE p." + k + " = c.id)"
}
