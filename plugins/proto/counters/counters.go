// Package counters is the protocol of COUNTER_SHARD (plugins/counters):
// the counter tables and columns a delta may name (the whitelist: only
// these names ever reach SQL text), the /increment delta line (the edge
// encodes it, the plugin parses it), and every statement on the counter
// tables: the shard's guarded flush, the counter_flushes sequence, the
// edge's legacy clamped update and the reconcileCounters job.
package counters

import (
	"strconv"
	"strings"

	"github.com/edgeshard/edgeshard/plugins/proto"
)

// The counter tables (edge/schema).
const (
	PostStats    = "post_stats"
	UserCounters = "user_counters"
)

// The counter columns.
const (
	Likes         = "likes"
	Runs          = "runs"
	Views         = "views"
	Comments      = "comments"
	Remixes       = "remixes"
	Followers     = "followers"
	Following     = "following"
	Posts         = "posts"
	LikesReceived = "likes_received"
)

// Table is a counter table a delta may name, with its key column and the
// counter columns it accepts.
type Table struct {
	Name    string
	KeyCol  string
	Columns []string
}

// Tables is the whitelist.
var Tables = [...]Table{
	{Name: PostStats, KeyCol: "post_id", Columns: []string{Likes, Runs, Views, Comments, Remixes}},
	{Name: UserCounters, KeyCol: "user_id", Columns: []string{Followers, Following, Posts, Runs, LikesReceived}},
}

// PostTable and UserTable are the entries of Tables.
var (
	PostTable = &Tables[0]
	UserTable = &Tables[1]
)

// LookupTable returns the whitelisted table called name, or nil.
func LookupTable(name string) *Table {
	for i := range Tables {
		if Tables[i].Name == name {
			return &Tables[i]
		}
	}
	return nil
}

// Fenced reports whether column of the table is a counter with source rows
// (one of Recounts): its deltas carry a fence and its flushes are guarded
// by it.
func (t *Table) Fenced(column string) bool {
	for i := range Recounts {
		if Recounts[i].Table == t && Recounts[i].Column == column {
			return true
		}
	}
	return false
}

// Column returns the whitelisted spelling of column name, or "".
func (t *Table) Column(name string) string {
	for _, c := range t.Columns {
		if c == name {
			return c
		}
	}
	return ""
}

// MaxPerCall is the most delta lines one /increment may carry.
const MaxPerCall = 1000

// Delta is one counter change, one line of /increment:
//
//	table \t id \t column \t delta [\t fence] \n
//
// table and column from the whitelist, id a row id (proto.ValidID: the post
// id of post_stats, the user id of user_counters — also the routing key),
// delta a non-zero int64. The statements built from deltas look their
// table and column up in the whitelist again: a name from anywhere else
// never reaches SQL text.
//
// fence, only on a counter that has source rows (Table.Fenced), is the
// counter's fence in counter_fences as the source-row change read it, in
// the same transaction (0, the default, when it has none): a flush applies
// the delta only while the fence is unchanged, so a delta that a
// reconcileCounters recount already counted is dropped, whichever host
// buffered it (SCHEMA.md, "counter_fences").
type Delta struct {
	Table  string
	ID     string
	Column string
	N      int64
	Fence  int64
}

// ParseDelta parses one line (without its newline). A refused line yields
// the plugin's error (Line 0): codes bad_line, unknown_table, bad_id,
// unknown_column, bad_delta, bad_fence.
func ParseDelta(line string) (Delta, *proto.LineError) {
	var f [5]string
	n := proto.Fields(line, f[:])
	if n != 4 && n != 5 {
		return Delta{}, &proto.LineError{Code: "bad_line", Msg: "want 4 or 5 tab-separated fields (table, id, column, delta[, fence]), got " + strconv.Itoa(n)}
	}
	t := LookupTable(f[0])
	if t == nil {
		return Delta{}, &proto.LineError{Code: "unknown_table", Msg: "unknown table " + strconv.Quote(f[0]) + " (want " + PostStats + " or " + UserCounters + ")"}
	}
	if !proto.ValidID(f[1]) {
		return Delta{}, &proto.LineError{Code: "bad_id", Msg: "id must be " + proto.IDRule}
	}
	col := t.Column(f[2])
	if col == "" {
		return Delta{}, &proto.LineError{Code: "unknown_column", Msg: "unknown column " + strconv.Quote(f[2]) + " of " + t.Name + " (want one of " + strings.Join(t.Columns, ", ") + ")"}
	}
	v, ok := proto.ParseInt(f[3])
	if !ok || v == 0 {
		return Delta{}, &proto.LineError{Code: "bad_delta", Msg: "delta must be a non-zero 64-bit integer"}
	}
	d := Delta{Table: t.Name, ID: f[1], Column: col, N: v}
	if n == 5 {
		fence, ok := proto.ParseInt(f[4])
		switch {
		case !ok || fence < 0:
			return Delta{}, &proto.LineError{Code: "bad_fence", Msg: "fence must be a 64-bit integer ≥ 0"}
		case fence > 0 && !t.Fenced(col):
			return Delta{}, &proto.LineError{Code: "bad_fence", Msg: t.Name + "." + col + " has no source rows and takes no fence"}
		}
		d.Fence = fence
	}
	return d, nil
}

// AppendLine appends "table \t id \t column \t N [\t fence] \n" (the
// fence when it is not 0).
func (d *Delta) AppendLine(b []byte) []byte {
	b = proto.AppendInts(proto.AppendFields(b, d.Table, d.ID, d.Column), d.N)
	if d.Fence != 0 {
		b = proto.AppendInts(b, d.Fence)
	}
	return proto.EndLine(b)
}

// Key returns "table \t id \t column [\t fence]": what identifies the
// counter and the fence its deltas carry (a shard sums deltas per key;
// keys sort by table, then row, then column). The fence is left out when
// it is 0, so keys of unfenced deltas read as before fences existed.
func (d *Delta) Key() string {
	k := d.Table + "\t" + d.ID + "\t" + d.Column
	if d.Fence != 0 {
		k += "\t" + strconv.FormatInt(d.Fence, 10)
	}
	return k
}

// ParseKeyed parses a delta kept as its Key and its sum (the decimal
// delta), as a shard buffers it.
func ParseKeyed(key, sum string) (Delta, *proto.LineError) {
	table, rest, _ := strings.Cut(key, "\t")
	id, rest, _ := strings.Cut(rest, "\t")
	column, fence, hasFence := strings.Cut(rest, "\t")
	line := table + "\t" + id + "\t" + column + "\t" + sum
	if hasFence {
		line += "\t" + fence
	}
	return ParseDelta(line)
}
