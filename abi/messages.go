package abi

// Header is one HTTP header field. Headers keep their order and may repeat.
type Header struct {
	Name  string
	Value string
}

// Request is an event delivered to a shard's fetch export.
type Request struct {
	Method string
	// Path is the path the shard sees, with the raw query if any
	// ("/increment?by=2").
	Path   string
	Header []Header
	Body   []byte
}

// CallRequest is a shard's request to a shard of another binding
// (shard_call): Binding and Key address it as /do/{Binding}/{Key}/... would,
// Path is the path that shard sees.
type CallRequest struct {
	Binding string
	Key     string
	Request
}

// Response is what a shard's fetch export returns.
type Response struct {
	Status int
	Header []Header
	Body   []byte
}

// GetHeader returns the first value of the named header (case-insensitive
// ASCII match), or "".
func GetHeader(h []Header, name string) string {
	for _, f := range h {
		if equalFold(f.Name, name) {
			return f.Value
		}
	}
	return ""
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// KV is one storage entry.
type KV struct {
	Key   string
	Value []byte
}

// ListOptions selects a range of a shard's keys, in key order (bytewise).
// Start is inclusive, StartAfter exclusive (at most one of the two), End
// exclusive; Prefix restricts to keys with that prefix. Limit 0 means no
// limit. Reverse returns the range from its end.
type ListOptions struct {
	Prefix        string
	Start         string
	StartAfter    string
	End           string
	HasStart      bool
	HasStartAfter bool
	HasEnd        bool
	Reverse       bool
	Limit         uint32
}

// Statement is one SQL statement with its bound parameters. Args hold nil,
// int64, float64, string or []byte.
type Statement struct {
	SQL  string
	Args []any
}

// Result is what one statement returned. Row values hold nil, int64,
// float64, string or []byte.
type Result struct {
	Columns      []string
	Rows         [][]any
	RowsAffected int64
	LastInsertID int64
}

// DataPoint is one analytics data point (Workers Analytics Engine shape).
type DataPoint struct {
	Indexes []string
	Blobs   [][]byte
	Doubles []float64
}

// LogRecord is one structured log line written by a guest.
type LogRecord struct {
	Message string
	Fields  []Header // key/value pairs, in order
}
