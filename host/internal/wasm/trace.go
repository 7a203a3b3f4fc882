package wasm

import (
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/tetratelabs/wazero/api"
)

// HostCall is one host call as a trace shows it (edgeshard serve
// --trace): its arguments and result decoded from guest memory the way the
// function reads and writes them, so a trace speaks in keys, values,
// statements and times instead of pointers:
//
//	storage_get key="user:alice" → 42 bytes "{\"name\":\"Alice\",\"visits\":3…"
//	alarm_set at=2026-01-01T00:00:10.000Z → ok
//	storage_delete key=<outside memory: ptr 4294967295, len 2> → memory fault (errno 11)
//
// Decoding happens only for traced events; an untraced call pays nothing.
type HostCall struct {
	Fn string
	// Args are the decoded arguments (`key="user:alice" value=3 bytes "abc"`),
	// empty for a function without any.
	Args string
	// Result is the raw result: a length or count (≥ 0) or -errno; an i32
	// result is sign-extended.
	Result int64
	// Outcome is the decoded result ("42 bytes …", "not found", "ok",
	// "too large (errno 3)").
	Outcome string
	// Err is the message of this call's failure (what error_message would
	// answer), empty when it had none.
	Err string
}

// String is the trace line: `fn args → outcome[: error]`.
func (h HostCall) String() string {
	var b strings.Builder
	b.WriteString(h.Fn)
	if h.Args != "" {
		b.WriteByte(' ')
		b.WriteString(h.Args)
	}
	b.WriteString(" → ")
	b.WriteString(h.Outcome)
	if h.Err != "" {
		b.WriteString(": ")
		b.WriteString(h.Err)
	}
	return b.String()
}

// Preview limits: how much of a key, a value, SQL text or a message a trace
// line shows before "…".
const (
	traceKeyBytes   = 64
	traceValueBytes = 32
	traceSQLBytes   = 80
	traceTextBytes  = 120
	traceListItems  = 4 // keys, entries, statements or results shown per call
	// traceDecodeMax is the largest encoded argument a trace decodes; the
	// host function refuses larger ones anyway.
	traceDecodeMax = abi.MaxSQLPayload
)

// tracer decodes one function's call: args before it runs (it reads the
// guest's arguments as the function will), outcome after, for a result ≥ 0
// (a negative one is an errno, shown by name). Either may be nil.
type tracer struct {
	args    func(mem api.Memory, p []uint64) string
	outcome func(c *call, mem api.Memory, p []uint64, res int64) string
}

// tracers are the decoders of the ABI v1 host functions by name. A
// function without one is traced with its raw parameters and result.
var tracers = map[string]tracer{
	abi.FnResultTake: {
		args:    func(_ api.Memory, p []uint64) string { return "cap=" + u(p[1]) },
		outcome: func(_ *call, _ api.Memory, p []uint64, n int64) string { return sized(n, p[1]) },
	},
	abi.FnErrorMessage: {
		args: func(_ api.Memory, p []uint64) string { return "cap=" + u(p[1]) },
		outcome: func(_ *call, mem api.Memory, p []uint64, n int64) string {
			b, _ := mem.Read(u32(p[0]), uint32(min(n, int64(u32(p[1])))))
			return text(b, traceTextBytes)
		},
	},

	abi.FnStorageGet: {
		args: func(mem api.Memory, p []uint64) string { return "key=" + key(mem, p[0], p[1]) },
		outcome: func(c *call, mem api.Memory, p []uint64, n int64) string {
			return value(result(c, mem, p[2], p[3], n), int(n)) + held(n, p[3])
		},
	},
	abi.FnStorageGetMulti: {
		args: func(mem api.Memory, p []uint64) string { return keysArg(mem, p[0], p[1]) },
		outcome: func(c *call, mem api.Memory, p []uint64, n int64) string {
			return kvsResult(result(c, mem, p[2], p[3], n), "found") + held(n, p[3])
		},
	},
	abi.FnStoragePut: {
		args: func(mem api.Memory, p []uint64) string {
			val := outside(p[2], p[3])
			if v, okm := read(mem, p[2], p[3]); okm {
				val = value(v, len(v))
			}
			return "key=" + key(mem, p[0], p[1]) + " value=" + val + putFlags(p[4])
		},
		outcome: ok,
	},
	abi.FnStoragePutMulti: {
		args: func(mem api.Memory, p []uint64) string {
			return decoded(mem, p[0], p[1], "KVs", abi.DecodeKVs, func(kvs []abi.KV) string { return kvList(kvs, "entries") + putFlags(p[2]) })
		},
		outcome: ok,
	},
	abi.FnStorageDelete: {
		args: func(mem api.Memory, p []uint64) string { return "key=" + key(mem, p[0], p[1]) },
		outcome: func(_ *call, _ api.Memory, _ []uint64, n int64) string {
			if n == 1 {
				return "deleted"
			}
			return "absent"
		},
	},
	abi.FnStorageDeleteMulti: {
		args:    func(mem api.Memory, p []uint64) string { return keysArg(mem, p[0], p[1]) },
		outcome: func(_ *call, _ api.Memory, _ []uint64, n int64) string { return strconv.FormatInt(n, 10) + " deleted" },
	},
	abi.FnStorageList: {
		args: func(mem api.Memory, p []uint64) string {
			return decoded(mem, p[0], p[1], "ListOptions", abi.DecodeListOptions, listOptions)
		},
		outcome: func(c *call, mem api.Memory, p []uint64, n int64) string {
			return kvsResult(result(c, mem, p[2], p[3], n), "entries") + held(n, p[3])
		},
	},
	abi.FnStorageDeleteAll: {outcome: ok},

	abi.FnAlarmSet: {
		args:    func(_ api.Memory, p []uint64) string { return "at=" + unixMs(int64(p[0])) },
		outcome: ok,
	},
	abi.FnAlarmGet: {
		outcome: func(_ *call, _ api.Memory, _ []uint64, ms int64) string { return unixMs(ms) },
	},
	abi.FnAlarmDelete: {outcome: ok},

	abi.FnVarGet: {
		args: func(mem api.Memory, p []uint64) string { return "name=" + key(mem, p[0], p[1]) },
		outcome: func(c *call, mem api.Memory, p []uint64, n int64) string {
			return text(result(c, mem, p[2], p[3], n), traceTextBytes) + held(n, p[3])
		},
	},

	abi.FnLogWrite: {
		args: func(mem api.Memory, p []uint64) string {
			return decoded(mem, p[1], p[2], "LogRecord", abi.DecodeLogRecord, func(rec abi.LogRecord) string { return logRecord(int32(p[0]), rec) })
		},
		outcome: ok,
	},

	abi.FnSQLExec: {
		args: func(mem api.Memory, p []uint64) string {
			return decoded(mem, p[0], p[1], "Statements", abi.DecodeStatements, statements)
		},
		outcome: func(c *call, mem api.Memory, p []uint64, n int64) string {
			rs, err := abi.DecodeResults(result(c, mem, p[2], p[3], n))
			if err != nil {
				return strconv.FormatInt(n, 10) + " bytes" + held(n, p[3])
			}
			return results(rs) + held(n, p[3])
		},
	},

	abi.FnAnalyticsWrite: {
		args: func(mem api.Memory, p []uint64) string {
			return decoded(mem, p[0], p[1], "DataPoint", abi.DecodeDataPoint, dataPoint)
		},
		outcome: ok,
	},

	abi.FnShardCall: {
		args: func(mem api.Memory, p []uint64) string {
			return decoded(mem, p[0], p[1], "CallRequest", abi.DecodeCallRequest, func(c *abi.CallRequest) string {
				return c.Binding + "/" + strconv.Quote(c.Key) + " " + outbound(&c.Request)
			})
		},
		outcome: responseOutcome,
	},
	abi.FnHTTPFetch: {
		args: func(mem api.Memory, p []uint64) string {
			return decoded(mem, p[0], p[1], "Request", abi.DecodeRequest, outbound)
		},
		outcome: responseOutcome,
	},
}

// outbound shows a request a shard sends (shard_call, http_fetch).
func outbound(r *abi.Request) string {
	return r.Method + " " + text([]byte(r.Path), traceTextBytes) + " body=" + value(r.Body, len(r.Body))
}

// responseOutcome shows the Response a shard_call or http_fetch answered.
func responseOutcome(c *call, mem api.Memory, p []uint64, n int64) string {
	r, err := abi.DecodeResponse(result(c, mem, p[2], p[3], n))
	if err != nil {
		return strconv.FormatInt(n, 10) + " bytes" + held(n, p[3])
	}
	return "status " + strconv.Itoa(r.Status) + " body=" + value(r.Body, len(r.Body)) + held(n, p[3])
}

// traceCall builds the HostCall of a call that answered res, with the
// arguments args decoded before it ran.
func traceCall(dec tracer, fn string, c *call, mem api.Memory, params []uint64, args string, res int64, msg string) HostCall {
	h := HostCall{Fn: fn, Args: args, Result: res, Err: msg}
	switch {
	case res == -int64(abi.ErrnoNotFound) && absentOutcomes[fn] != "":
		h.Outcome = absentOutcomes[fn]
	case res < 0:
		h.Outcome = errnoName(res)
	case dec.outcome != nil:
		h.Outcome = dec.outcome(c, mem, params, res)
	default:
		h.Outcome = strconv.FormatInt(res, 10)
	}
	return h
}

// rawArgs is the trace of a function without a decoder: its parameters.
func rawArgs(params []uint64) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, p := range params {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.FormatUint(p, 10))
	}
	b.WriteByte(']')
	return b.String()
}

// absentOutcomes are the functions for which absence (ErrnoNotFound) is a
// result, not a failure, with how a trace shows it.
var absentOutcomes = map[string]string{
	abi.FnStorageGet: "not found",
	abi.FnVarGet:     "unset",
	abi.FnAlarmGet:   "no alarm",
}

// errnoName is a negative result by name: "too large (errno 3)".
func errnoName(res int64) string {
	if res < -0xffff {
		return strconv.FormatInt(res, 10)
	}
	e := abi.Errno(-res)
	return e.Error() + " (errno " + strconv.FormatInt(-res, 10) + ")"
}

func ok(*call, api.Memory, []uint64, int64) string { return "ok" }

func u(v uint64) string { return strconv.FormatUint(v, 10) }

// read returns the bytes of (ptr, len), as the host function reads them.
func read(mem api.Memory, ptr, n uint64) ([]byte, bool) {
	if u32(n) == 0 {
		return nil, true
	}
	if u32(n) > traceDecodeMax {
		return nil, false
	}
	return mem.Read(u32(ptr), u32(n))
}

func outside(ptr, n uint64) string {
	if u32(n) > traceDecodeMax {
		return "<" + u(uint64(u32(n))) + " bytes, not decoded>"
	}
	return "<outside memory: ptr " + u(uint64(u32(ptr))) + ", len " + u(uint64(u32(n))) + ">"
}

func undecodable(what string, b []byte) string {
	return "<malformed " + what + ", " + strconv.Itoa(len(b)) + " bytes>"
}

// decoded is the encoded (ptr, len) argument of type what, read as the
// host function reads it, decoded with decode and shown with show.
func decoded[T any](mem api.Memory, ptr, n uint64, what string, decode func([]byte) (T, error), show func(T) string) string {
	b, okm := read(mem, ptr, n)
	if !okm {
		return outside(ptr, n)
	}
	v, err := decode(b)
	if err != nil {
		return undecodable(what, b)
	}
	return show(v)
}

// key is the (ptr, len) argument as a quoted, clipped string.
func key(mem api.Memory, ptr, n uint64) string {
	b, okm := read(mem, ptr, n)
	if !okm {
		return outside(ptr, n)
	}
	if len(b) > traceKeyBytes {
		return text(b, traceKeyBytes) + " (" + plural(len(b), "byte") + ")"
	}
	return text(b, traceKeyBytes)
}

// result returns the bytes a "caller passes a buffer" call answered: in
// (buf, cap) when they fitted, else held for result_take.
func result(c *call, mem api.Memory, buf, bufCap uint64, n int64) []byte {
	if n <= int64(u32(bufCap)) {
		b, _ := mem.Read(u32(buf), uint32(n))
		return b
	}
	if int64(len(c.pending)) == n {
		return c.pending
	}
	return nil
}

// held notes a result larger than the guest's buffer, which the guest
// now takes with result_take.
func held(n int64, bufCap uint64) string {
	if n > int64(u32(bufCap)) {
		return " (held for result_take, cap " + u(uint64(u32(bufCap))) + ")"
	}
	return ""
}

// sized is result_take's outcome: the bytes copied, or the size needed.
func sized(n int64, bufCap uint64) string {
	if n > int64(u32(bufCap)) {
		return strconv.FormatInt(n, 10) + " bytes needed, cap " + u(uint64(u32(bufCap)))
	}
	return plural(int(n), "byte")
}

// value is "N bytes" and a printable preview of b (the first bytes of a
// value of n bytes).
func value(b []byte, n int) string {
	s := plural(n, "byte")
	if n > 0 && len(b) > 0 {
		s += " " + text(b, traceValueBytes)
	}
	return s
}

// text quotes b as Go does, clipped to max bytes (on a rune boundary) with
// "…" after the closing quote when clipped.
func text(b []byte, max int) string {
	if len(b) <= max {
		return strconv.Quote(string(b))
	}
	cut := max
	for cut > max-utf8.UTFMax && cut > 0 && !utf8.RuneStart(b[cut]) {
		cut--
	}
	return strconv.Quote(string(b[:cut])) + "…"
}

// clip shortens s to max bytes, unquoted.
func clip(s string, max int) string {
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}

func plural(n int, unit string) string {
	switch {
	case n == 1:
		return "1 " + unit
	case unit == "entry":
		return strconv.Itoa(n) + " entries"
	}
	return strconv.Itoa(n) + " " + unit + "s"
}

func putFlags(flags uint64) string {
	if uint32(flags)&abi.PutAllowUnconfirmed != 0 {
		return " unconfirmed"
	}
	return ""
}

// keysArg is an encoded Keys argument: `3 keys ["a" "b" "c"]`.
func keysArg(mem api.Memory, ptr, n uint64) string {
	return decoded(mem, ptr, n, "Keys", abi.DecodeKeys, keyList)
}

func keyList(keys []string) string {
	var s strings.Builder
	s.WriteString(plural(len(keys), "key"))
	s.WriteString(" [")
	writeList(&s, len(keys), traceListItems, "", " ", func(i int) string { return text([]byte(keys[i]), traceKeyBytes) })
	s.WriteByte(']')
	return s.String()
}

// kvsResult is an encoded KVs result: `2 found ["a"=1 byte "b"=3 bytes]`.
func kvsResult(b []byte, what string) string {
	kvs, err := abi.DecodeKVs(b)
	if err != nil {
		return plural(len(b), "byte")
	}
	return kvList(kvs, what)
}

func kvList(kvs []abi.KV, what string) string {
	var s strings.Builder
	if what == "entries" {
		s.WriteString(plural(len(kvs), "entry"))
	} else {
		s.WriteString(strconv.Itoa(len(kvs)) + " " + what)
	}
	if len(kvs) == 0 {
		return s.String()
	}
	s.WriteString(" [")
	writeList(&s, len(kvs), traceListItems, "", " ", func(i int) string {
		return text([]byte(kvs[i].Key), traceKeyBytes) + "=" + value(kvs[i].Value, len(kvs[i].Value))
	})
	s.WriteByte(']')
	return s.String()
}

// writeList writes item(i) for at most max of n items: first before the
// first, sep between two, and sep+"…" after the last shown when there are
// more.
func writeList(s *strings.Builder, n, max int, first, sep string, item func(i int) string) {
	for i := range n {
		switch i {
		case max:
			s.WriteString(sep + "…")
			return
		case 0:
			s.WriteString(first)
		default:
			s.WriteString(sep)
		}
		s.WriteString(item(i))
	}
}

// logRecord is a log_write argument: `info "message" name=value …`.
func logRecord(level int32, rec abi.LogRecord) string {
	var s strings.Builder
	s.WriteString(logLevel(level))
	s.WriteByte(' ')
	s.WriteString(text([]byte(rec.Message), traceTextBytes))
	writeList(&s, len(rec.Fields), 2*traceListItems, " ", " ", func(i int) string {
		return clip(rec.Fields[i].Name, traceKeyBytes) + "=" + text([]byte(rec.Fields[i].Value), traceValueBytes)
	})
	return s.String()
}

// listOptions shows the options a storage_list call set.
func listOptions(o abi.ListOptions) string {
	var parts []string
	if o.Prefix != "" {
		parts = append(parts, "prefix="+text([]byte(o.Prefix), traceKeyBytes))
	}
	if o.HasStart {
		parts = append(parts, "start="+text([]byte(o.Start), traceKeyBytes))
	}
	if o.HasStartAfter {
		parts = append(parts, "startAfter="+text([]byte(o.StartAfter), traceKeyBytes))
	}
	if o.HasEnd {
		parts = append(parts, "end="+text([]byte(o.End), traceKeyBytes))
	}
	if o.Reverse {
		parts = append(parts, "reverse")
	}
	if o.Limit > 0 {
		parts = append(parts, "limit="+u(uint64(o.Limit)))
	}
	if len(parts) == 0 {
		return "all keys"
	}
	return strings.Join(parts, " ")
}

// unixMs shows an alarm time as RFC 3339 in UTC with milliseconds, or the
// number when it is outside the ABI's range.
func unixMs(ms int64) string {
	if ms < 1 || ms > 9223372036854 {
		return strconv.FormatInt(ms, 10) + " ms"
	}
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

func logLevel(l int32) string {
	switch l {
	case abi.LogDebug:
		return "debug"
	case abi.LogInfo:
		return "info"
	case abi.LogWarn:
		return "warn"
	case abi.LogError:
		return "error"
	}
	return "level " + strconv.Itoa(int(l))
}

// statements shows an sql_exec batch: each statement's text, whitespace
// collapsed and clipped, with its bound parameters.
func statements(stmts []abi.Statement) string {
	var s strings.Builder
	s.WriteString(plural(len(stmts), "statement"))
	writeList(&s, len(stmts), traceListItems, ": ", "; ", func(i int) string {
		st := text([]byte(strings.Join(strings.Fields(stmts[i].SQL), " ")), traceSQLBytes)
		if args := stmts[i].Args; len(args) > 0 {
			var a strings.Builder
			writeList(&a, len(args), traceListItems, "", " ", func(j int) string { return sqlValue(args[j]) })
			st += " [" + a.String() + "]"
		}
		return st
	})
	return s.String()
}

func sqlValue(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case int64:
		return strconv.FormatInt(v, 10)
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	case string:
		return text([]byte(v), traceValueBytes)
	case []byte:
		return "blob(" + plural(len(v), "byte") + ")"
	}
	return "?"
}

// results shows what each statement of an sql_exec call returned.
func results(rs []abi.Result) string {
	var s strings.Builder
	s.WriteString(plural(len(rs), "result"))
	writeList(&s, len(rs), traceListItems, ": ", ", ", func(i int) string {
		if len(rs[i].Columns) > 0 {
			return plural(len(rs[i].Rows), "row")
		}
		return strconv.FormatInt(rs[i].RowsAffected, 10) + " affected"
	})
	return s.String()
}

// dataPoint shows an analytics data point.
func dataPoint(p abi.DataPoint) string {
	var s strings.Builder
	s.WriteString("indexes=[")
	writeList(&s, len(p.Indexes), len(p.Indexes), "", " ", func(i int) string { return text([]byte(p.Indexes[i]), traceKeyBytes) })
	total := 0
	for _, b := range p.Blobs {
		total += len(b)
	}
	s.WriteString("] blobs=" + strconv.Itoa(len(p.Blobs)) + " (" + plural(total, "byte") + ") doubles=[")
	writeList(&s, len(p.Doubles), traceListItems, "", " ", func(i int) string { return strconv.FormatFloat(p.Doubles[i], 'g', -1, 64) })
	s.WriteByte(']')
	return s.String()
}
