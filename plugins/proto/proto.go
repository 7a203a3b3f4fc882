// Package proto is the one definition of every protocol between the edge
// application (edge/) and its three shard plugins (plugins/ratelimit,
// plugins/runtimeevents, plugins/counters): the id rule, the framing of
// the tab-separated request lines, and the JSON the plugins write by hand.
// Its sub-packages hold each pipeline's line format, field limits and SQL
// statements:
//
//	proto/window     the sliding-window arithmetic of rate limits
//	proto/ratelimit  the /check line and answer, the decision over a call's
//	                 buckets, and the proxy_rate_limits statements
//	proto/events     the /enqueue line, the event field limits and the
//	                 runtime_events insert
//	proto/counters   the /increment line, the counter tables and columns,
//	                 and every statement on them (flush, legacy, reconcile)
//
// The edge and the plugins import these packages; neither keeps a copy.
// They are compiled for the host and for GOOS=wasip1, so they use neither
// reflection nor the guest SDK: everything here is cheap inside a guest
// (no allocation per line beyond the result slices).
package proto

import (
	"strconv"
	"strings"
)

// MaxIDBytes is the longest id: user, post, capsule, run and event ids.
const MaxIDBytes = 128

// IDRule says the id rule in words, for error messages and docs.
const IDRule = "1-128 characters of [A-Za-z0-9._:@+=~|-]"

// ValidID reports whether s is an id: 1..MaxIDBytes bytes of
// [A-Za-z0-9._:@+=~|-]. Ids travel in tab-separated shard lines, in
// rate-limit bucket keys and in storage keys, so whitespace, control
// bytes, '/', quotes and every non-ASCII character are refused. This is
// the one id rule: user ids in auth, post ids in paths, an event's id,
// capsule_id and run_id, and the row ids of counter deltas.
func ValidID(s string) bool {
	if s == "" || len(s) > MaxIDBytes {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !idByte[s[i]] {
			return false
		}
	}
	return true
}

// idByte marks the bytes an id may hold.
var idByte = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range []byte("._:@+=~|-") {
		t[c] = true
	}
	return t
}()

// LineError is why a request body was refused: the plugin's error code,
// a message, and the 1-based line it is about (0: the whole body).
type LineError struct {
	Line int
	Code string
	Msg  string
}

// Error returns "line N: msg", or msg for the whole body.
func (e *LineError) Error() string {
	if e.Line == 0 {
		return e.Msg
	}
	return "line " + strconv.Itoa(e.Line) + ": " + e.Msg
}

// Lines iterates over the lines of a request body. Line numbers start at 1
// and count every physical line; empty lines (including the one after a
// final "\n") are skipped, and a trailing "\r" is dropped.
type Lines struct {
	s   string
	off int
	no  int
}

// NewLines returns an iterator over body.
func NewLines(body string) Lines { return Lines{s: body} }

// Next returns the next non-empty line and its number.
func (l *Lines) Next() (line string, no int, ok bool) {
	for l.off < len(l.s) {
		rest := l.s[l.off:]
		i := strings.IndexByte(rest, '\n')
		if i < 0 {
			line, l.off = rest, len(l.s)
		} else {
			line, l.off = rest[:i], l.off+i+1
		}
		l.no++
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if line != "" {
			return line, l.no, true
		}
	}
	return "", l.no, false
}

// AppendFields appends each field and a tab after it: a line of
// tab-separated fields (as Fields reads them) under construction, which
// EndLine ends.
func AppendFields(b []byte, fields ...string) []byte {
	for _, f := range fields {
		b = append(append(b, f...), '\t')
	}
	return b
}

// AppendInts appends each number in decimal and a tab after it, as
// AppendFields does.
func AppendInts(b []byte, ns ...int64) []byte {
	for _, n := range ns {
		b = append(strconv.AppendInt(b, n, 10), '\t')
	}
	return b
}

// EndLine ends a line AppendFields and AppendInts built: its last tab
// becomes the newline.
func EndLine(b []byte) []byte {
	b[len(b)-1] = '\n'
	return b
}

// Fields splits line at tabs into dst and returns the number of fields
// the line has (which may exceed len(dst); only len(dst) are stored).
func Fields(line string, dst []string) int {
	n := 0
	for {
		i := strings.IndexByte(line, '\t')
		if i < 0 {
			if n < len(dst) {
				dst[n] = line
			}
			return n + 1
		}
		if n < len(dst) {
			dst[n] = line[:i]
		}
		n++
		line = line[i+1:]
	}
}

// ParseInt parses a decimal int64 without allocating on success.
func ParseInt(s string) (int64, bool) {
	v, err := strconv.ParseInt(s, 10, 64)
	return v, err == nil
}
