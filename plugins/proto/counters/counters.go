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
//	table \t id \t column \t delta \n
//
// table and column from the whitelist, id a row id (proto.ValidID: the post
// id of post_stats, the user id of user_counters — also the routing key),
// delta a non-zero int64. The statements built from deltas look their
// table and column up in the whitelist again: a name from anywhere else
// never reaches SQL text.
type Delta struct {
	Table  string
	ID     string
	Column string
	N      int64
}

// ParseDelta parses one line (without its newline). A refused line yields
// the plugin's error (Line 0): codes bad_line, unknown_table, bad_id,
// unknown_column, bad_delta.
func ParseDelta(line string) (Delta, *proto.LineError) {
	var f [4]string
	if n := proto.Fields(line, f[:]); n != 4 {
		return Delta{}, &proto.LineError{Code: "bad_line", Msg: "want 4 tab-separated fields (table, id, column, delta), got " + strconv.Itoa(n)}
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
	n, ok := proto.ParseInt(f[3])
	if !ok || n == 0 {
		return Delta{}, &proto.LineError{Code: "bad_delta", Msg: "delta must be a non-zero 64-bit integer"}
	}
	return Delta{Table: t.Name, ID: f[1], Column: col, N: n}, nil
}

// AppendLine appends "table \t id \t column \t N \n".
func (d *Delta) AppendLine(b []byte) []byte {
	b = append(b, d.Table...)
	b = append(b, '\t')
	b = append(b, d.ID...)
	b = append(b, '\t')
	b = append(b, d.Column...)
	b = append(b, '\t')
	b = strconv.AppendInt(b, d.N, 10)
	return append(b, '\n')
}

// Key returns "table \t id \t column": the first three fields of the
// line, which identify the counter (keys sort by table, then row, then
// column).
func (d *Delta) Key() string {
	return d.Table + "\t" + d.ID + "\t" + d.Column
}
