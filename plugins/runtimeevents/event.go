package main

import (
	"strconv"
	"strings"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/abi/sdk"
	"github.com/edgeshard/edgeshard/plugins/internal/shardkit"
)

// Event is one normalised runtime event, as the edge sends it:
//
//	id \t capsule_id \t run_id \t type \t ts_ms \t received_at_ms \t payload_json
type Event struct {
	ID         string
	CapsuleID  string // "" is stored as NULL
	RunID      string // "" is stored as NULL
	Type       string
	TsMs       int64
	ReceivedMs int64
	Payload    string // compact JSON; "" is stored as NULL
}

// Field limits. A line is stored verbatim as one storage value.
const (
	MaxIDBytes    = 256
	MaxTypeBytes  = 256
	MaxEventBytes = abi.MaxValueSize
	eventFields   = 7
)

// lineError is why a line was refused: an error code and a message.
type lineError struct{ code, msg string }

// ParseEvent parses one line (without its newline).
func ParseEvent(line string) (Event, *lineError) {
	if len(line) > MaxEventBytes {
		return Event{}, &lineError{"event_too_large", "event of " + strconv.Itoa(len(line)) + " bytes exceeds " + strconv.Itoa(MaxEventBytes)}
	}
	var f [eventFields]string
	if n := shardkit.Fields(line, f[:]); n != eventFields {
		return Event{}, &lineError{"bad_line", "want 7 tab-separated fields (id, capsule_id, run_id, type, ts_ms, received_at_ms, payload_json), got " + strconv.Itoa(n)}
	}
	ev := Event{ID: f[0], CapsuleID: f[1], RunID: f[2], Type: f[3], Payload: f[6]}
	switch {
	case ev.ID == "" || len(ev.ID) > MaxIDBytes:
		return Event{}, &lineError{"bad_id", "id must be 1.." + strconv.Itoa(MaxIDBytes) + " bytes"}
	case len(ev.CapsuleID) > MaxIDBytes:
		return Event{}, &lineError{"bad_capsule_id", "capsule_id must be at most " + strconv.Itoa(MaxIDBytes) + " bytes"}
	case len(ev.RunID) > MaxIDBytes:
		return Event{}, &lineError{"bad_run_id", "run_id must be at most " + strconv.Itoa(MaxIDBytes) + " bytes"}
	case ev.Type == "" || len(ev.Type) > MaxTypeBytes:
		return Event{}, &lineError{"bad_type", "type must be 1.." + strconv.Itoa(MaxTypeBytes) + " bytes"}
	}
	var ok bool
	if ev.TsMs, ok = shardkit.ParseInt(f[4]); !ok || ev.TsMs < 0 {
		return Event{}, &lineError{"bad_ts", "ts_ms must be a non-negative integer"}
	}
	if ev.ReceivedMs, ok = shardkit.ParseInt(f[5]); !ok || ev.ReceivedMs < 0 {
		return Event{}, &lineError{"bad_received_at", "received_at_ms must be a non-negative integer"}
	}
	return ev, nil
}

// ParseBody parses every line of an /enqueue body. Lines are returned as
// they came (without newline), ready to be stored.
func ParseBody(body string, maxEvents int) ([]string, *sdk.Response) {
	var out []string
	lines := shardkit.NewLines(body)
	for {
		s, no, ok := lines.Next()
		if !ok {
			break
		}
		if len(out) == maxEvents {
			return nil, shardkit.BadLine("too_many_events", no, "at most "+strconv.Itoa(maxEvents)+" events per call")
		}
		if _, le := ParseEvent(s); le != nil {
			return nil, shardkit.BadLine(le.code, no, le.msg)
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, sdk.ErrorJSON(400, "empty_body", "no event lines in the body")
	}
	return out, nil
}

// insertCols is the column list of runtime_events a flush writes.
const insertCols = "INSERT INTO runtime_events (id, capsule_id, run_id, type, ts, received_at, payload) VALUES "

// RowsPerInsert is how many rows one INSERT carries: 7 parameters a row,
// at most abi.MaxSQLArgs (100) bound parameters a statement.
const RowsPerInsert = abi.MaxSQLArgs / eventFields

// InsertSQL returns the multi-row INSERT for n rows (1 ≤ n ≤ RowsPerInsert).
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

// AppendArgs appends the row's bound parameters.
func (ev *Event) AppendArgs(args []any) []any {
	return append(args, ev.ID, nullable(ev.CapsuleID), nullable(ev.RunID), ev.Type, ev.TsMs, ev.ReceivedMs, nullable(ev.Payload))
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// DataPoint returns the event's analytics data point: index capsule_id (or
// run_id), blobs id, type, capsule_id, run_id, double ts_ms.
func (ev *Event) DataPoint() sdk.DataPoint {
	p := sdk.DataPoint{
		Blobs:   [][]byte{[]byte(ev.ID), []byte(ev.Type), []byte(ev.CapsuleID), []byte(ev.RunID)},
		Doubles: []float64{float64(ev.TsMs)},
	}
	idx := ev.CapsuleID
	if idx == "" {
		idx = ev.RunID
	}
	if idx != "" {
		p.Indexes = []string{truncateUTF8(idx, abi.MaxAnalyticsIdxB)}
	}
	return p
}

// truncateUTF8 cuts s to at most n bytes without splitting a character.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}
