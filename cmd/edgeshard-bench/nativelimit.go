package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host/clock"
	"github.com/edgeshard/edgeshard/internal/hostinternal"
	"github.com/edgeshard/edgeshard/plugins/ratelimit/window"
)

// nativeLimiter is RateLimitShard (plugins/ratelimit) written as a
// hostinternal.NativeShard: the same protocol, the same storage layout and alarm
// cadence, the same window arithmetic (package window, shared with the
// plugin), run in the host process on the same actor, storage and output
// gate as the wasm plugin. It is the baseline of ratelimit_wasm_vs_native;
// TestNativeLimiterMatchesPlugin checks that it answers byte for byte what
// the plugin answers.
type nativeLimiter struct {
	clk  clock.Clock
	keys []string // scratch, reused between events (one event at a time)
	buf  []byte
}

// newNativeLimiter returns the factory of a native rate-limit binding whose
// shards read the time from clk (the host's clock).
func newNativeLimiter(clk clock.Clock) hostinternal.NewNativeShard {
	return func(string) hostinternal.NativeShard { return &nativeLimiter{clk: clk} }
}

// Mirrors of the plugin's constants.
const (
	nlBucketPrefix = "b:"
	nlMaxBuckets   = abi.MaxMultiKeys
	nlSweepPage    = 512
)

func (n *nativeLimiter) now() int64 { return n.clk.Now().UnixMilli() }

// Fetch routes like the plugin's fetch.
func (n *nativeLimiter) Fetch(_ context.Context, env hostinternal.Env, req *abi.Request) (*abi.Response, error) {
	switch pathOnly(req.Path) {
	case "/check":
		if req.Method != "POST" {
			return methodNotAllowed(req, "POST"), nil
		}
		return n.check(env, req)
	case "/bucket":
		if req.Method != "GET" {
			return methodNotAllowed(req, "GET"), nil
		}
		return n.bucketState(env, req)
	}
	return errorJSON(404, "not_found", "no route "+req.Method+" "+pathOnly(req.Path)), nil
}

// nlLine is one bucket of a /check call and its state.
type nlLine struct {
	key                   string
	limit, window, cost   int64
	no                    int
	st                    window.Window
	fresh                 bool
	allowed               bool
	remaining, retryAfter int64
}

func badLine(code string, no int, msg string) *abi.Response {
	return errorJSON(400, code, "line "+strconv.Itoa(no)+": "+msg)
}

// parseCheck parses `key \t limit \t window_ms [\t cost]` lines with the
// plugin's rules and messages.
func parseCheck(body string) ([]nlLine, *abi.Response) {
	var out []nlLine
	var f [4]string
	no := 0
	for off := 0; off < len(body); {
		s := body[off:]
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s, off = s[:i], off+i+1
		} else {
			off = len(body)
		}
		no++
		s = strings.TrimSuffix(s, "\r")
		if s == "" {
			continue
		}
		nf := splitTabs(s, f[:])
		if nf != 3 && nf != 4 {
			return nil, badLine("bad_line", no, "want key\\tlimit\\twindow_ms[\\tcost], got "+strconv.Itoa(nf)+" fields")
		}
		l := nlLine{key: f[0], no: no, cost: 1}
		if l.key == "" || len(l.key) > window.MaxKeyBytes {
			return nil, badLine("bad_key", no, "key must be 1.."+strconv.Itoa(window.MaxKeyBytes)+" bytes")
		}
		var err1, err2 error
		l.limit, err1 = strconv.ParseInt(f[1], 10, 64)
		if err1 != nil || l.limit < 1 || l.limit > window.MaxLimit {
			return nil, badLine("bad_limit", no, "limit must be an integer in 1.."+strconv.Itoa(window.MaxLimit))
		}
		l.window, err2 = strconv.ParseInt(f[2], 10, 64)
		if err2 != nil || l.window < window.MinWindowMs || l.window > window.MaxWindowMs {
			return nil, badLine("bad_window", no, "window_ms must be an integer in "+strconv.Itoa(window.MinWindowMs)+".."+strconv.Itoa(window.MaxWindowMs))
		}
		if nf == 4 {
			c, err := strconv.ParseInt(f[3], 10, 64)
			if err != nil || c < 1 || c > l.limit {
				return nil, badLine("bad_cost", no, "cost must be an integer in 1..limit")
			}
			l.cost = c
		}
		for i := range out {
			if out[i].key == l.key {
				return nil, badLine("duplicate_key", no, "bucket "+strconv.Quote(l.key)+" already named on line "+strconv.Itoa(out[i].no))
			}
		}
		if len(out) == nlMaxBuckets {
			return nil, badLine("too_many_buckets", no, "at most "+strconv.Itoa(nlMaxBuckets)+" buckets per call")
		}
		out = append(out, l)
	}
	if len(out) == 0 {
		return nil, errorJSON(400, "empty_body", "no bucket lines in the body")
	}
	return out, nil
}

// splitTabs splits s at tabs into dst and returns the field count.
func splitTabs(s string, dst []string) int {
	n := 0
	for {
		i := strings.IndexByte(s, '\t')
		if i < 0 {
			if n < len(dst) {
				dst[n] = s
			}
			return n + 1
		}
		if n < len(dst) {
			dst[n] = s[:i]
		}
		n++
		s = s[i+1:]
	}
}

// check counts the request in every bucket of the call, or in none.
func (n *nativeLimiter) check(env hostinternal.Env, req *abi.Request) (*abi.Response, error) {
	ls, bad := parseCheck(string(req.Body))
	if bad != nil {
		return bad, nil
	}
	keys := n.keys[:0]
	for i := range ls {
		keys = append(keys, nlBucketPrefix+ls[i].key)
	}
	n.keys = keys
	st := env.Store()
	kvs, err := st.GetMulti(keys)
	if err != nil {
		return errorJSON(500, "storage", err.Error()), nil
	}
	now := n.now()
	all := true
	for i := range ls {
		l := &ls[i]
		var stored window.Window
		exists := false
		for _, kv := range kvs {
			if kv.Key == keys[i] {
				if w, err := window.DecodeWindow(string(kv.Value)); err == nil {
					stored, exists = w, true
				} else {
					env.Log(abi.LogWarn, abi.LogRecord{Message: "bucket state unreadable; starting it afresh",
						Fields: []abi.Header{{Name: "bucket", Value: l.key}, {Name: "error", Value: err.Error()}}})
				}
				break
			}
		}
		l.st, l.fresh = window.Roll(stored, exists, now, l.window)
		l.allowed = l.st.Allows(now, l.limit, l.cost)
		all = all && l.allowed
	}
	if all {
		if err := n.commitCounts(env, ls, keys, now); err != nil {
			// The plugin traps here (shardkit.Abort): the host discards the
			// event's writes and restarts the shard from storage.
			return nil, err
		}
	}
	for i := range ls {
		l := &ls[i]
		l.remaining = l.st.Remaining(now, l.limit)
		l.retryAfter = l.st.RetryAfter(now, l.limit, l.cost)
		if all {
			l.retryAfter = 0
		}
	}
	return rawJSON(200, appendCheck(make([]byte, 0, 64+160*len(ls)), all, ls)), nil
}

// commitCounts stores the counted buckets (unconfirmed writes, as the
// plugin) and arms the cleanup alarm for buckets the call created.
func (n *nativeLimiter) commitCounts(env hostinternal.Env, ls []nlLine, keys []string, now int64) error {
	earliest := int64(-1)
	st := env.Store()
	for i := range ls {
		l := &ls[i]
		l.st.Cur += l.cost
		l.st.Last = now
		n.buf = l.st.Encode(n.buf[:0]) // Put copies the value
		if err := st.Put(keys[i], n.buf, true); err != nil {
			return fmt.Errorf("aborting event: store bucket %s: %w", l.key, err)
		}
		if l.fresh {
			if exp := l.st.ExpiresAt(); earliest < 0 || exp < earliest {
				earliest = exp
			}
		}
	}
	if earliest < 0 {
		return nil
	}
	at, ok, err := env.GetAlarm()
	if err != nil {
		return fmt.Errorf("aborting event: read alarm: %w", err)
	}
	if !ok || at > earliest {
		if err := env.SetAlarm(earliest); err != nil {
			return fmt.Errorf("aborting event: set cleanup alarm: %w", err)
		}
	}
	return nil
}

func appendCheck(b []byte, all bool, ls []nlLine) []byte {
	b = append(b, '{')
	b = appendBool(b, "allowed", all)
	b = appendField(b, "buckets")
	b = append(b, '[')
	for i := range ls {
		l := &ls[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '{')
		b = appendStr(b, "key", l.key)
		b = appendBool(b, "allowed", l.allowed)
		b = appendInt(b, "limit", l.limit)
		b = appendInt(b, "remaining", l.remaining)
		b = appendInt(b, "window_ms", l.window)
		b = appendInt(b, "reset_ms", l.st.ResetMs())
		b = appendInt(b, "retry_after_ms", l.retryAfter)
		b = append(b, '}')
	}
	return append(b, ']', '}')
}

// bucketState answers GET /bucket?key=K like the plugin.
func (n *nativeLimiter) bucketState(env hostinternal.Env, req *abi.Request) (*abi.Response, error) {
	key := query(req.Path, "key")
	if key == "" || len(key) > window.MaxKeyBytes {
		return errorJSON(400, "bad_key", "query parameter key must be 1.."+strconv.Itoa(window.MaxKeyBytes)+" bytes"), nil
	}
	v, ok, err := env.Store().Get(nlBucketPrefix + key)
	if err != nil {
		return errorJSON(500, "storage", err.Error()), nil
	}
	if !ok {
		return errorJSON(404, "bucket_not_found", "no bucket "+strconv.Quote(key)), nil
	}
	st, err := window.DecodeWindow(string(v))
	if err != nil {
		return errorJSON(500, "bad_state", err.Error()), nil
	}
	now := n.now()
	st, _ = window.Roll(st, true, now, st.W)
	b := append(make([]byte, 0, 192), '{')
	b = appendStr(b, "key", key)
	b = appendInt(b, "window_ms", st.W)
	b = appendInt(b, "window_start_ms", st.Start)
	b = appendInt(b, "count", st.Cur)
	b = appendInt(b, "prev_count", st.Prev)
	b = strconv.AppendFloat(appendField(b, "estimate"), st.Estimate(now), 'f', -1, 64)
	b = appendInt(b, "last_ms", st.Last)
	b = appendInt(b, "expires_ms", st.ExpiresAt())
	b = append(b, '}')
	return rawJSON(200, b), nil
}

// Alarm deletes idle buckets and re-arms while buckets remain, like the
// plugin's alarm.
func (n *nativeLimiter) Alarm(_ context.Context, env hostinternal.Env, _ int) (bool, error) {
	now := n.now()
	st := env.Store()
	opts := abi.ListOptions{Prefix: nlBucketPrefix, Limit: nlSweepPage}
	var idle []string
	deleted, kept := 0, 0
	next, minW := int64(-1), int64(-1)
	for {
		kvs, err := st.List(opts)
		if err != nil {
			return false, nil
		}
		for _, kv := range kvs {
			w, err := window.DecodeWindow(string(kv.Value))
			if err != nil || now >= w.ExpiresAt() {
				idle = append(idle, kv.Key)
				if len(idle) == abi.MaxMultiKeys {
					d, err := st.DeleteMulti(idle)
					if err != nil {
						return false, nil
					}
					deleted += d
					idle = idle[:0]
				}
				continue
			}
			kept++
			if exp := w.ExpiresAt(); next < 0 || exp < next {
				next = exp
			}
			if minW < 0 || w.W < minW {
				minW = w.W
			}
		}
		if len(kvs) < nlSweepPage {
			break
		}
		opts.StartAfter, opts.HasStartAfter = kvs[len(kvs)-1].Key, true
	}
	if len(idle) > 0 {
		d, err := st.DeleteMulti(idle)
		if err != nil {
			return false, nil
		}
		deleted += d
	}
	if kept > 0 {
		if floor := now + minW; next < floor {
			next = floor
		}
		if err := env.SetAlarm(next); err != nil {
			return false, nil
		}
	}
	env.Log(abi.LogDebug, abi.LogRecord{Message: "rate-limit sweep",
		Fields: []abi.Header{{Name: "deleted", Value: strconv.Itoa(deleted)}, {Name: "kept", Value: strconv.Itoa(kept)}}})
	return true, nil
}

// HTTP helpers, mirroring the guest SDK's (abi/sdk/http.go) and shardkit's.

func pathOnly(p string) string {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		return p[:i]
	}
	return p
}

func query(p, name string) string {
	i := strings.IndexByte(p, '?')
	if i < 0 {
		return ""
	}
	q, err := url.ParseQuery(p[i+1:])
	if err != nil {
		return ""
	}
	return q.Get(name)
}

func rawJSON(status int, body []byte) *abi.Response {
	return &abi.Response{Status: status, Header: []abi.Header{{Name: "Content-Type", Value: "application/json"}}, Body: body}
}

func errorJSON(status int, code, msg string) *abi.Response {
	b, _ := json.Marshal(map[string]map[string]string{"error": {"code": code, "message": msg}})
	return rawJSON(status, b)
}

func methodNotAllowed(req *abi.Request, allow string) *abi.Response {
	r := errorJSON(405, "method_not_allowed", req.Method+" "+pathOnly(req.Path)+" is not allowed; use "+allow)
	r.Header = append(r.Header, abi.Header{Name: "Allow", Value: allow})
	return r
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string literal, exactly as shardkit's
// AppendString (invalid UTF-8 becomes U+FFFD; U+2028/9 are escaped).
func appendString(b []byte, s string) []byte {
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

func appendField(b []byte, name string) []byte {
	if n := len(b); n > 0 && b[n-1] != '{' && b[n-1] != '[' {
		b = append(b, ',')
	}
	b = append(b, '"')
	b = append(b, name...)
	return append(b, '"', ':')
}

func appendInt(b []byte, name string, v int64) []byte {
	return strconv.AppendInt(appendField(b, name), v, 10)
}

func appendBool(b []byte, name string, v bool) []byte {
	return strconv.AppendBool(appendField(b, name), v)
}

func appendStr(b []byte, name, v string) []byte { return appendString(appendField(b, name), v) }
