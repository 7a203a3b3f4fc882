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
//
// A delta of a fenced counter (Table.Fenced) goes alone and is guarded by
// its fence: SELECT … WHERE <fence ?4> instead of VALUES (…).
func Upsert(ds []Delta, now int64) (string, []any, error) {
	return upsert(ds, now, flushKey{}, 0)
}

// FlushUpsert returns the shard's flush of one row's deltas: Upsert
// guarded by the flush's sequence (node and shard name the writer, see
// MarkSQL), so a replayed flush changes nothing:
//
//	INSERT INTO post_stats (post_id, likes, views, updated_at)
//	SELECT ?1, <clamp ?2>, <clamp ?3>, ?4 WHERE <guard ?5 ?6 ?7>
//	ON CONFLICT(post_id) DO UPDATE SET likes = <clamp post_stats.likes + ?2>,
//	  views = <clamp post_stats.views + ?3>, updated_at = ?4
//
// and, for a delta of a fenced counter (alone in its statement), also by
// its fence: … WHERE <guard ?4 ?5 ?6> AND <fence ?7>.
func FlushUpsert(ds []Delta, node, shard string, seq, now int64) (string, []any, error) {
	if shard == "" {
		return "", nil, errors.New("counters: a flush needs its shard's name")
	}
	return upsert(ds, now, flushKey{node: node, shard: shard}, seq)
}

// flushKey names the writer of a flush: the row of counter_flushes its
// sequence is kept in. The zero value is no flush (the legacy update).
type flushKey struct{ node, shard string }

// ErrFencedNotAlone is the error of a statement asked for a fenced delta
// together with other deltas: each fenced delta is guarded by its own
// fence, so it goes in a statement of its own.
var ErrFencedNotAlone = errors.New("counters: a delta of a counter with source rows goes alone in its statement")

func upsert(ds []Delta, now int64, fk flushKey, seq int64) (string, []any, error) {
	t, _, err := lookup(ds[0].Table, ds[0].Column)
	if err != nil {
		return "", nil, err
	}
	var colBuf [8]string
	cols := colBuf[:0]
	fenced := false
	for i := range ds {
		c := t.Column(ds[i].Column)
		if ds[i].Table != t.Name || ds[i].ID != ds[0].ID || c == "" {
			return "", nil, ErrNotWhitelisted
		}
		if t.Fenced(c) {
			fenced = true
		} else if ds[i].Fence != 0 {
			return "", nil, ErrNotWhitelisted
		}
		cols = append(cols, c)
	}
	if fenced && len(ds) > 1 {
		return "", nil, ErrFencedNotAlone
	}
	k := len(ds)
	pNow := k + 2
	flush := fk.shard != ""
	guarded := flush || fenced
	args := make([]any, 0, k+5)
	args = append(args, ds[0].ID)
	var b strings.Builder
	b.Grow(200 + k*64)
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
	switch {
	case flush:
		b.WriteString(" WHERE ")
		b.WriteString(guardSQL(k+3, k+4, k+5))
		args = append(args, fk.node, fk.shard, seq)
		if fenced {
			b.WriteString(" AND ")
			b.WriteString(fenceGuard(t, cols[0], 1, k+6))
			args = append(args, ds[0].Fence)
		}
	case fenced:
		b.WriteString(" WHERE ")
		b.WriteString(fenceGuard(t, cols[0], 1, k+3))
		args = append(args, ds[0].Fence)
	default:
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
// writer's recorded sequence (parameters pNode and pShard name it) is below
// this flush's (parameter pSeq), i.e. the flush was not applied.
func guardSQL(pNode, pShard, pSeq int) string {
	return "(SELECT COALESCE(MAX(seq), 0) FROM counter_flushes WHERE node = ?" + strconv.Itoa(pNode) +
		" AND shard = ?" + strconv.Itoa(pShard) + ") < ?" + strconv.Itoa(pSeq)
}

// fenceRead is the fence of counter column of t in the row whose id is
// parameter pID: a scalar subquery, 0 for a counter never fenced.
func fenceRead(t *Table, column string, pID int) string {
	return "(SELECT COALESCE(MAX(epoch), 0) FROM counter_fences WHERE table_name = '" + t.Name +
		"' AND row_id = ?" + strconv.Itoa(pID) + " AND column_name = '" + column + "')"
}

// fenceGuard is the condition of a fenced delta: the counter's fence is
// still the one its source-row change read (parameter pFence).
func fenceGuard(t *Table, column string, pID, pFence int) string {
	return fenceRead(t, column, pID) + " = ?" + strconv.Itoa(pFence)
}

// FenceRead returns a scalar subquery reading the fence of a fenced
// counter in the row whose id is parameter ?pID, for the source-row
// change to return in the same statement (INSERT … RETURNING <it>):
//
//	(SELECT COALESCE(MAX(epoch), 0) FROM counter_fences
//	 WHERE table_name = 'post_stats' AND row_id = ?3 AND column_name = 'likes')
func FenceRead(table, column string, pID int) (string, error) {
	t, c, err := lookup(table, column)
	if err != nil || !t.Fenced(c) {
		return "", ErrNotWhitelisted
	}
	return fenceRead(t, c, pID), nil
}

// MarkSQL records a flush's sequence, under the same guard, as the last
// write of the flush's batch: a replay inserts nothing (and so never trips
// the schema's seq-only-moves-forward trigger). Args: node, shard, seq,
// now. The writer of a flush is a node (the host's node id, the reserved
// var edgeshard.node; empty for a host without one) and a shard name: each
// host's copy of a shard keeps its own sequence.
var MarkSQL = "INSERT INTO counter_flushes (node, shard, seq, flushed_at) SELECT ?1, ?2, ?3, ?4 WHERE " +
	guardSQL(1, 2, 3) + " ON CONFLICT(node, shard) DO UPDATE SET seq = excluded.seq, flushed_at = excluded.flushed_at"

// SeqSQL reads a writer's recorded sequence. Args: node, shard.
const SeqSQL = "SELECT seq FROM counter_flushes WHERE node = ? AND shard = ?"

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
// ran_at, table, row id, column, old value, new value, node.
const LogCorrectionSQL = `INSERT INTO counter_reconcile_log (ran_at, table_name, row_id, column_name, old_value, new_value, node) VALUES (?, ?, ?, ?, ?, ?, ?)`

// BumpFenceSQL moves a counter's fence forward by one (from 0 to 1 when it
// had none): deltas carrying the old fence are dropped by the flushes that
// meet them. Args: table, row id, column.
const BumpFenceSQL = `INSERT INTO counter_fences (table_name, row_id, column_name, epoch) VALUES (?1, ?2, ?3, 1) ` +
	`ON CONFLICT(table_name, row_id, column_name) DO UPDATE SET epoch = counter_fences.epoch + 1`

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

// CountSQL counts one row's source rows. Args: the row id.
func (r *Recount) CountSQL() string {
	return "SELECT COUNT(*) FROM " + r.Source + " WHERE " + r.SourceKey + " = ?"
}

// ValueSQL reads one row's counter (no row: none). Args: the row id.
func (r *Recount) ValueSQL() string {
	return "SELECT " + r.Column + " FROM " + r.Table.Name + " WHERE " + r.Table.KeyCol + " = ?"
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
