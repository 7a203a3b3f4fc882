// Package events is the protocol of RUNTIME_EVENT_SHARD
// (plugins/runtimeevents): the normalised event, its /enqueue line (the
// edge encodes it, the plugin parses it), the field limits both sides
// enforce, and the runtime_events insert that the plugin's flushes and the
// edge's inline path both run.
package events

import (
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/plugins/proto"
)

// Field limits.
const (
	// MaxTypeBytes bounds an event's type: 1..128 bytes of UTF-8 without
	// control characters.
	MaxTypeBytes = 128
	// MaxTSMillis is the latest ts / received_at: 9999-12-31T23:59:59.999Z.
	MaxTSMillis = 253402300799999
	// MaxLineBytes bounds one /enqueue line (it is buffered as one storage
	// value).
	MaxLineBytes = abi.MaxValueSize
	// MaxPerCall is the most events one /enqueue may carry.
	MaxPerCall = 1000
	// NumFields is the number of tab-separated fields of a line.
	NumFields = 7
)

// Event is one normalised runtime event:
//
//	id \t capsule_id \t run_id \t type \t ts_ms \t received_at_ms \t payload_json \n
//
// id, and capsule_id and run_id when present, follow the id rule
// (proto.ValidID); "" means absent and is stored as SQL NULL, as is an
// empty payload. type follows ValidType; ts_ms and received_at_ms are
// 0..MaxTSMillis; payload_json is compact JSON (no tab or newline). The
// edge gives every event a UUID as its id.
type Event struct {
	ID         string
	CapsuleID  string
	RunID      string
	Type       string
	TsMs       int64
	ReceivedMs int64
	Payload    string
}

// RoutingKey is the key RUNTIME_EVENT_SHARD routes the event by: its
// capsule_id, else its run_id, else its id.
func (ev *Event) RoutingKey() string {
	switch {
	case ev.CapsuleID != "":
		return ev.CapsuleID
	case ev.RunID != "":
		return ev.RunID
	}
	return ev.ID
}

// AppendLine appends the event's line, newline included.
func (ev *Event) AppendLine(b []byte) []byte {
	b = proto.AppendFields(b, ev.ID, ev.CapsuleID, ev.RunID, ev.Type)
	b = proto.AppendInts(b, ev.TsMs, ev.ReceivedMs)
	return proto.EndLine(proto.AppendFields(b, ev.Payload))
}

// CheckType returns why s is not a valid event type, as the end of a
// sentence starting "type " ("" if it is valid): 1..MaxTypeBytes bytes of
// valid UTF-8 without control characters.
func CheckType(s string) string {
	switch {
	case s == "":
		return "is required"
	case len(s) > MaxTypeBytes:
		return "is " + strconv.Itoa(len(s)) + " bytes, at most " + strconv.Itoa(MaxTypeBytes)
	case !utf8.ValidString(s):
		return "is not valid UTF-8"
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return "has control characters"
		}
	}
	return ""
}

// ValidTS reports whether ms is a valid ts_ms / received_at_ms.
func ValidTS(ms int64) bool { return ms >= 0 && ms <= MaxTSMillis }

// ParseLine parses one line (without its newline). A refused line yields
// the plugin's error (Line 0: the caller knows the line number): codes
// event_too_large, bad_line, bad_id, bad_capsule_id, bad_run_id, bad_type,
// bad_ts, bad_received_at. The event's strings share the line's memory.
func ParseLine(line string) (Event, *proto.LineError) {
	if len(line) > MaxLineBytes {
		return Event{}, &proto.LineError{Code: "event_too_large", Msg: "event of " + strconv.Itoa(len(line)) + " bytes exceeds " + strconv.Itoa(MaxLineBytes)}
	}
	var f [NumFields]string
	if n := proto.Fields(line, f[:]); n != NumFields {
		return Event{}, &proto.LineError{Code: "bad_line", Msg: "want 7 tab-separated fields (id, capsule_id, run_id, type, ts_ms, received_at_ms, payload_json), got " + strconv.Itoa(n)}
	}
	ev := Event{ID: f[0], CapsuleID: f[1], RunID: f[2], Type: f[3], Payload: f[6]}
	switch {
	case !proto.ValidID(ev.ID):
		return Event{}, &proto.LineError{Code: "bad_id", Msg: "id must be " + proto.IDRule}
	case ev.CapsuleID != "" && !proto.ValidID(ev.CapsuleID):
		return Event{}, &proto.LineError{Code: "bad_capsule_id", Msg: "capsule_id must be empty or " + proto.IDRule}
	case ev.RunID != "" && !proto.ValidID(ev.RunID):
		return Event{}, &proto.LineError{Code: "bad_run_id", Msg: "run_id must be empty or " + proto.IDRule}
	}
	if why := CheckType(ev.Type); why != "" {
		return Event{}, &proto.LineError{Code: "bad_type", Msg: "type " + why}
	}
	var ok bool
	if ev.TsMs, ok = proto.ParseInt(f[4]); !ok || !ValidTS(ev.TsMs) {
		return Event{}, &proto.LineError{Code: "bad_ts", Msg: "ts_ms must be an integer in 0.." + strconv.Itoa(MaxTSMillis)}
	}
	if ev.ReceivedMs, ok = proto.ParseInt(f[5]); !ok || !ValidTS(ev.ReceivedMs) {
		return Event{}, &proto.LineError{Code: "bad_received_at", Msg: "received_at_ms must be an integer in 0.." + strconv.Itoa(MaxTSMillis)}
	}
	return ev, nil
}

// insertCols is the start of the runtime_events insert.
const insertCols = "INSERT INTO runtime_events (id, capsule_id, run_id, type, ts, received_at, payload) VALUES "

// RowsPerInsert is how many rows one insert carries: NumFields parameters
// a row, at most abi.MaxSQLArgs bound parameters a statement.
const RowsPerInsert = abi.MaxSQLArgs / NumFields

// InsertSQL returns the insert of n rows (1 ≤ n ≤ RowsPerInsert), with ON
// CONFLICT(id) DO NOTHING: the shard's flushes, their retries and the
// edge's inline writes dedupe on the event's id.
func InsertSQL(n int) string {
	var b strings.Builder
	b.Grow(len(insertCols) + n*16 + 32)
	b.WriteString(insertCols)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("(?,?,?,?,?,?,?)")
	}
	b.WriteString(" ON CONFLICT(id) DO NOTHING")
	return b.String()
}

// AppendArgs appends the event's row to the arguments of InsertSQL (empty
// capsule_id, run_id and payload as NULL).
func (ev *Event) AppendArgs(args []any) []any {
	return append(args, ev.ID, nullable(ev.CapsuleID), nullable(ev.RunID), ev.Type, ev.TsMs, ev.ReceivedMs, nullable(ev.Payload))
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}
