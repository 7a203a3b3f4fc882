// Package shardkit holds the small helpers the three edgeshard plugins
// share: a line/field splitter for their tab-separated request bodies, a
// JSON string encoder for hand-built responses, error responses, and the
// shard's own name (learned from the X-Edgeshard-Shard request header and
// kept in storage so alarms can read it).
//
// Everything here avoids encoding/json and reflection: it runs on the hot
// path of a Go guest, where every byte loop costs ~5 ns/byte.
package shardkit

import (
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/abi/sdk"
)

// ShardHeader is the request header the host sets on every fetch to
// "<binding>/<shard>".
const ShardHeader = "X-Edgeshard-Shard"

// ShardKey is the storage key holding the shard's name.
const ShardKey = "meta:shard"

// UnknownShard is the name used when the host did not say (an older host
// without the X-Edgeshard-Shard header).
const UnknownShard = "unknown"

// NowMs returns the current unix time in milliseconds (the host's clock,
// virtual in tests).
func NowMs() int64 { return time.Now().UnixMilli() }

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

// BadLine answers 400 {"error":{"code":code,"message":"line N: msg"}}.
func BadLine(code string, line int, msg string) *sdk.Response {
	return sdk.ErrorJSON(400, code, "line "+strconv.Itoa(line)+": "+msg)
}

// NotFound answers 404 for a route the plugin does not serve.
func NotFound(req *sdk.Request) *sdk.Response {
	return sdk.ErrorJSON(404, "not_found", "no route "+req.Method+" "+sdk.PathOnly(req))
}

// MethodNotAllowed answers 405 naming the allowed method.
func MethodNotAllowed(req *sdk.Request, allow string) *sdk.Response {
	r := sdk.ErrorJSON(405, "method_not_allowed", req.Method+" "+sdk.PathOnly(req)+" is not allowed; use "+allow)
	r.Header = append(r.Header, sdk.Header{Name: "Allow", Value: allow})
	return r
}

// Internal answers 500 with code and the error's text.
func Internal(code string, err error) *sdk.Response {
	return sdk.ErrorJSON(500, code, err.Error())
}

// ShardName returns the shard's name: the one stored under ShardKey, or,
// on the first request that carries it, the X-Edgeshard-Shard header,
// which it then stores (a confirmed write, part of the current event). req
// may be nil (alarms). It returns "" when neither is known; callers choose
// their fallback.
func ShardName(req *sdk.Request) (string, error) {
	v, ok, err := sdk.Storage().Get(ShardKey)
	if err != nil {
		return "", err
	}
	if ok {
		return string(v), nil
	}
	if req == nil {
		return "", nil
	}
	name := abi.GetHeader(req.Header, ShardHeader)
	if name == "" {
		return "", nil
	}
	if err := sdk.Storage().Put(ShardKey, []byte(name)); err != nil {
		return "", err
	}
	return name, nil
}

// LogName returns name, or UnknownShard when it is empty.
func LogName(name string) string {
	if name == "" {
		return UnknownShard
	}
	return name
}

// Abort ends the current event by trapping the guest, so the host
// discards every write the event made (a shard event has no other way to
// roll back). Use it when a storage call fails halfway through writes that
// must be all or nothing; the caller of the event sees a shard failure.
func Abort(what string, err error) {
	panic("aborting event: " + what + ": " + err.Error())
}

const hexDigits = "0123456789abcdef"

// AppendString appends s to b as a JSON string literal. Invalid UTF-8 is
// replaced by U+FFFD.
func AppendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// AppendField appends `"name":` to b, preceded by a comma unless b ends
// with '{' or '['.
func AppendField(b []byte, name string) []byte {
	if n := len(b); n > 0 && b[n-1] != '{' && b[n-1] != '[' {
		b = append(b, ',')
	}
	b = append(b, '"')
	b = append(b, name...)
	return append(b, '"', ':')
}

// AppendInt appends `"name":v`.
func AppendInt(b []byte, name string, v int64) []byte {
	return strconv.AppendInt(AppendField(b, name), v, 10)
}

// AppendBool appends `"name":v`.
func AppendBool(b []byte, name string, v bool) []byte {
	return strconv.AppendBool(AppendField(b, name), v)
}

// AppendStr appends `"name":"v"`.
func AppendStr(b []byte, name, v string) []byte {
	return AppendString(AppendField(b, name), v)
}

// ParseInt parses a decimal int64 without allocating on success.
func ParseInt(s string) (int64, bool) {
	v, err := strconv.ParseInt(s, 10, 64)
	return v, err == nil
}
