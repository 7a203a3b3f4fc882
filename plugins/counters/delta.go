package main

import (
	"strconv"
	"strings"

	"github.com/edgeshard/edgeshard/plugins/internal/shardkit"
)

// Table is a counter table a delta may name, with its key column and the
// counter columns it accepts. Only these names ever reach SQL text; the
// request's table and column are matched against them, never interpolated.
type Table struct {
	Name    string
	KeyCol  string
	Columns []string
}

// Tables is the whitelist (edge/schema/migrations/0001_init.sql).
var Tables = [...]Table{
	{Name: "post_stats", KeyCol: "post_id", Columns: []string{"likes", "runs", "views", "comments", "remixes"}},
	{Name: "user_counters", KeyCol: "user_id", Columns: []string{"followers", "following", "posts", "runs", "likes_received"}},
}

// lookupTable returns the whitelisted table called name.
func lookupTable(name string) *Table {
	for i := range Tables {
		if Tables[i].Name == name {
			return &Tables[i]
		}
	}
	return nil
}

// column returns the whitelisted spelling of column name, or "".
func (t *Table) column(name string) string {
	for _, c := range t.Columns {
		if c == name {
			return c
		}
	}
	return ""
}

// MaxIDBytes bounds a row id (the storage key holds it).
const MaxIDBytes = 1024

// Delta is one counter change: add N to Table.Column of row ID.
type Delta struct {
	Table  *Table
	ID     string
	Column string // the whitelisted constant
	N      int64
}

// lineError is why a line was refused: an error code and a message.
type lineError struct{ code, msg string }

// ParseDelta parses `table \t id \t column \t delta`.
func ParseDelta(line string) (Delta, *lineError) {
	var f [4]string
	if n := shardkit.Fields(line, f[:]); n != 4 {
		return Delta{}, &lineError{"bad_line", "want 4 tab-separated fields (table, id, column, delta), got " + strconv.Itoa(n)}
	}
	t := lookupTable(f[0])
	if t == nil {
		return Delta{}, &lineError{"unknown_table", "unknown table " + strconv.Quote(f[0]) + " (want post_stats or user_counters)"}
	}
	if f[1] == "" || len(f[1]) > MaxIDBytes {
		return Delta{}, &lineError{"bad_id", "id must be 1.." + strconv.Itoa(MaxIDBytes) + " bytes"}
	}
	col := t.column(f[2])
	if col == "" {
		return Delta{}, &lineError{"unknown_column", "unknown column " + strconv.Quote(f[2]) + " of " + t.Name + " (want one of " + strings.Join(t.Columns, ", ") + ")"}
	}
	n, ok := shardkit.ParseInt(f[3])
	if !ok || n == 0 {
		return Delta{}, &lineError{"bad_delta", "delta must be a non-zero 64-bit integer"}
	}
	return Delta{Table: t, ID: f[1], Column: col, N: n}, nil
}

// Key returns the delta's buffer key suffix "table \t id \t column": keys
// sort by table, then row, then column, so a row's columns are adjacent.
func (d *Delta) Key() string {
	return d.Table.Name + "\t" + d.ID + "\t" + d.Column
}

// AppendLine appends "table \t id \t column \t N \n".
func (d *Delta) AppendLine(b []byte) []byte {
	b = append(b, d.Table.Name...)
	b = append(b, '\t')
	b = append(b, d.ID...)
	b = append(b, '\t')
	b = append(b, d.Column...)
	b = append(b, '\t')
	b = strconv.AppendInt(b, d.N, 10)
	return append(b, '\n')
}

// addOverflows reports whether a+b overflows int64.
func addOverflows(a, b int64) bool {
	s := a + b
	return (a > 0 && b > 0 && s < 0) || (a < 0 && b < 0 && s >= 0)
}

// Batch is a frozen flush: a sequence number and its deltas.
type Batch struct {
	Seq    int64
	Deltas []Delta
}

// Encode returns "seq\n" followed by one delta line each.
func (b *Batch) Encode() []byte {
	out := strconv.AppendInt(make([]byte, 0, 16+len(b.Deltas)*40), b.Seq, 10)
	out = append(out, '\n')
	for i := range b.Deltas {
		out = b.Deltas[i].AppendLine(out)
	}
	return out
}

// DecodeBatch parses what Encode produced.
func DecodeBatch(s string) (Batch, error) {
	lines := shardkit.NewLines(s)
	first, _, ok := lines.Next()
	if !ok {
		return Batch{}, errBatch("empty")
	}
	seq, ok := shardkit.ParseInt(first)
	if !ok || seq < 1 {
		return Batch{}, errBatch("bad sequence " + strconv.Quote(first))
	}
	b := Batch{Seq: seq}
	for {
		l, no, ok := lines.Next()
		if !ok {
			return b, nil
		}
		d, le := ParseDelta(l)
		if le != nil {
			return Batch{}, errBatch("line " + strconv.Itoa(no) + ": " + le.msg)
		}
		b.Deltas = append(b.Deltas, d)
	}
}

type errBatch string

func (e errBatch) Error() string { return "malformed inflight batch: " + string(e) }

// guard is the condition every statement of a flush carries: the shard's
// recorded sequence is below this flush's, i.e. the flush was not applied.
const guard = "(SELECT COALESCE(MAX(seq), 0) FROM counter_flushes WHERE shard = ?%S) < ?%Q"

// rowStatement returns the clamped, guarded upsert of one row's deltas
// (all of ds share table and id; their columns are distinct):
//
//	INSERT INTO post_stats (post_id, likes, views, updated_at)
//	SELECT ?1, MAX(0, ?2), MAX(0, ?3), ?4 WHERE <guard ?5 ?6>
//	ON CONFLICT(post_id) DO UPDATE SET likes = MAX(0, likes + ?2),
//	  views = MAX(0, views + ?3), updated_at = ?4
//
// The update adds the delta parameter, not excluded.col (already clamped).
func rowStatement(ds []Delta, shard string, seq, now int64) (string, []any) {
	t := ds[0].Table
	k := len(ds)
	pNow, pShard, pSeq := k+2, k+3, k+4
	args := make([]any, 0, k+4)
	args = append(args, ds[0].ID)
	var b strings.Builder
	b.Grow(160 + k*64)
	b.WriteString("INSERT INTO ")
	b.WriteString(t.Name)
	b.WriteString(" (")
	b.WriteString(t.KeyCol)
	for i := range ds {
		b.WriteString(", ")
		b.WriteString(ds[i].Column)
	}
	b.WriteString(", updated_at) SELECT ?1")
	for i := range ds {
		b.WriteString(", MAX(0, ?")
		b.WriteString(strconv.Itoa(i + 2))
		b.WriteString(")")
		args = append(args, ds[i].N)
	}
	b.WriteString(", ?")
	b.WriteString(strconv.Itoa(pNow))
	b.WriteString(" WHERE ")
	b.WriteString(guardSQL(pShard, pSeq))
	b.WriteString(" ON CONFLICT(")
	b.WriteString(t.KeyCol)
	b.WriteString(") DO UPDATE SET ")
	for i := range ds {
		b.WriteString(ds[i].Column)
		b.WriteString(" = MAX(0, ")
		b.WriteString(ds[i].Column)
		b.WriteString(" + ?")
		b.WriteString(strconv.Itoa(i + 2))
		b.WriteString("), ")
	}
	b.WriteString("updated_at = ?")
	b.WriteString(strconv.Itoa(pNow))
	args = append(args, now, shard, seq)
	return b.String(), args
}

func guardSQL(pShard, pSeq int) string {
	g := strings.Replace(guard, "%S", strconv.Itoa(pShard), 1)
	return strings.Replace(g, "%Q", strconv.Itoa(pSeq), 1)
}

// markSQL records the flush's sequence, under the same guard, as the last
// statement of the batch: a replay inserts nothing (and so never trips the
// schema's seq-only-moves-forward trigger).
var markSQL = "INSERT INTO counter_flushes (shard, seq, flushed_at) SELECT ?1, ?2, ?3 WHERE " +
	guardSQL(1, 2) + " ON CONFLICT(shard) DO UPDATE SET seq = excluded.seq, flushed_at = excluded.flushed_at"

// seqSQL reads the shard's recorded sequence.
const seqSQL = "SELECT seq FROM counter_flushes WHERE shard = ?"
