// Command ratelimit is RateLimitShard: sliding-window-counter rate limits
// for the edge proxy, one bucket per user / ip / host key, kept in shard
// storage. See README.md and ../PROTOCOLS.md.
//
// Build: GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared \
//
//	-o ratelimit.wasm ./plugins/ratelimit
package main

import (
	"strconv"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/abi/sdk"
	"github.com/edgeshard/edgeshard/plugins/internal/shardkit"
	"github.com/edgeshard/edgeshard/plugins/ratelimit/window"
)

func main() {}

func init() {
	sdk.Serve(sdk.Handlers{Fetch: fetch, Alarm: alarm})
}

// bucketPrefix prefixes the storage key of every bucket.
const bucketPrefix = "b:"

// maxBuckets is the most buckets one /check may name (one GetMulti).
const maxBuckets = abi.MaxMultiKeys

// sweepPage is how many buckets the cleanup alarm reads per List call.
const sweepPage = 512

func fetch(req *sdk.Request) *sdk.Response {
	switch sdk.PathOnly(req) {
	case "/check":
		if req.Method != "POST" {
			return shardkit.MethodNotAllowed(req, "POST")
		}
		return check(req)
	case "/bucket":
		if req.Method != "GET" {
			return shardkit.MethodNotAllowed(req, "GET")
		}
		return bucketState(req)
	}
	return shardkit.NotFound(req)
}

// line is one bucket of a /check request and its state.
type line struct {
	key                   string
	limit, window, cost   int64
	no                    int
	st                    window.Window
	fresh                 bool
	allowed               bool
	remaining, retryAfter int64
}

// parseCheck parses the body of /check: `key \t limit \t window_ms [\t
// cost]` per line.
func parseCheck(body string) ([]line, *sdk.Response) {
	var out []line
	var f [4]string
	lines := shardkit.NewLines(body)
	for {
		s, no, ok := lines.Next()
		if !ok {
			break
		}
		n := shardkit.Fields(s, f[:])
		if n != 3 && n != 4 {
			return nil, shardkit.BadLine("bad_line", no, "want key\\tlimit\\twindow_ms[\\tcost], got "+strconv.Itoa(n)+" fields")
		}
		l := line{key: f[0], no: no, cost: 1}
		if l.key == "" || len(l.key) > window.MaxKeyBytes {
			return nil, shardkit.BadLine("bad_key", no, "key must be 1.."+strconv.Itoa(window.MaxKeyBytes)+" bytes")
		}
		var ok1, ok2 bool
		l.limit, ok1 = shardkit.ParseInt(f[1])
		if !ok1 || l.limit < 1 || l.limit > window.MaxLimit {
			return nil, shardkit.BadLine("bad_limit", no, "limit must be an integer in 1.."+strconv.Itoa(window.MaxLimit))
		}
		l.window, ok2 = shardkit.ParseInt(f[2])
		if !ok2 || l.window < window.MinWindowMs || l.window > window.MaxWindowMs {
			return nil, shardkit.BadLine("bad_window", no, "window_ms must be an integer in "+strconv.Itoa(window.MinWindowMs)+".."+strconv.Itoa(window.MaxWindowMs))
		}
		if n == 4 {
			c, ok := shardkit.ParseInt(f[3])
			if !ok || c < 1 || c > l.limit {
				return nil, shardkit.BadLine("bad_cost", no, "cost must be an integer in 1..limit")
			}
			l.cost = c
		}
		for i := range out {
			if out[i].key == l.key {
				return nil, shardkit.BadLine("duplicate_key", no, "bucket "+strconv.Quote(l.key)+" already named on line "+strconv.Itoa(out[i].no))
			}
		}
		if len(out) == maxBuckets {
			return nil, shardkit.BadLine("too_many_buckets", no, "at most "+strconv.Itoa(maxBuckets)+" buckets per call")
		}
		out = append(out, l)
	}
	if len(out) == 0 {
		return nil, sdk.ErrorJSON(400, "empty_body", "no bucket lines in the body")
	}
	return out, nil
}

// check counts one request in every bucket of the call, or in none: only
// if every bucket allows it.
func check(req *sdk.Request) *sdk.Response {
	ls, bad := parseCheck(string(req.Body))
	if bad != nil {
		return bad
	}
	keys := make([]string, len(ls))
	for i := range ls {
		keys[i] = bucketPrefix + ls[i].key
	}
	kvs, err := sdk.Storage().GetMulti(keys)
	if err != nil {
		return shardkit.Internal("storage", err)
	}
	now := shardkit.NowMs()
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
					sdk.Warn("bucket state unreadable; starting it afresh", "bucket", l.key, "error", err.Error())
				}
				break
			}
		}
		l.st, l.fresh = window.Roll(stored, exists, now, l.window)
		l.allowed = l.st.Allows(now, l.limit, l.cost)
		all = all && l.allowed
	}
	if all {
		commitCounts(ls, keys, now)
	}
	for i := range ls {
		l := &ls[i]
		l.remaining = l.st.Remaining(now, l.limit)
		l.retryAfter = l.st.RetryAfter(now, l.limit, l.cost)
		if all {
			l.retryAfter = 0
		}
	}
	return sdk.RawJSON(200, appendCheck(make([]byte, 0, 64+160*len(ls)), all, ls))
}

// commitCounts adds each line's cost to its bucket and stores the buckets
// (unconfirmed writes: see README.md), then makes sure the cleanup alarm
// covers every bucket this call created. A storage failure part-way
// aborts the event so no bucket is counted alone.
func commitCounts(ls []line, keys []string, now int64) {
	var buf []byte
	earliest := int64(-1)
	for i := range ls {
		l := &ls[i]
		l.st.Cur += l.cost
		l.st.Last = now
		buf = l.st.Encode(buf[:0])
		if err := sdk.Storage().PutUnconfirmed(keys[i], buf); err != nil {
			shardkit.Abort("store bucket "+l.key, err)
		}
		if l.fresh {
			if exp := l.st.ExpiresAt(); earliest < 0 || exp < earliest {
				earliest = exp
			}
		}
	}
	if earliest < 0 {
		return
	}
	at, ok, err := sdk.GetAlarm()
	if err != nil {
		shardkit.Abort("read alarm", err)
	}
	if !ok || at.UnixMilli() > earliest {
		if err := sdk.SetAlarm(time.UnixMilli(earliest)); err != nil {
			shardkit.Abort("set cleanup alarm", err)
		}
	}
}

func appendCheck(b []byte, all bool, ls []line) []byte {
	b = append(b, '{')
	b = shardkit.AppendBool(b, "allowed", all)
	b = shardkit.AppendField(b, "buckets")
	b = append(b, '[')
	for i := range ls {
		l := &ls[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '{')
		b = shardkit.AppendStr(b, "key", l.key)
		b = shardkit.AppendBool(b, "allowed", l.allowed)
		b = shardkit.AppendInt(b, "limit", l.limit)
		b = shardkit.AppendInt(b, "remaining", l.remaining)
		b = shardkit.AppendInt(b, "window_ms", l.window)
		b = shardkit.AppendInt(b, "reset_ms", l.st.ResetMs())
		b = shardkit.AppendInt(b, "retry_after_ms", l.retryAfter)
		b = append(b, '}')
	}
	return append(b, ']', '}')
}

// bucketState answers GET /bucket?key=K with the bucket's state as of
// now (windows rolled forward, nothing written).
func bucketState(req *sdk.Request) *sdk.Response {
	key := sdk.Query(req, "key")
	if key == "" || len(key) > window.MaxKeyBytes {
		return sdk.ErrorJSON(400, "bad_key", "query parameter key must be 1.."+strconv.Itoa(window.MaxKeyBytes)+" bytes")
	}
	v, ok, err := sdk.Storage().Get(bucketPrefix + key)
	if err != nil {
		return shardkit.Internal("storage", err)
	}
	if !ok {
		return sdk.ErrorJSON(404, "bucket_not_found", "no bucket "+strconv.Quote(key))
	}
	st, err := window.DecodeWindow(string(v))
	if err != nil {
		return shardkit.Internal("bad_state", err)
	}
	now := shardkit.NowMs()
	st, _ = window.Roll(st, true, now, st.W)
	b := append(make([]byte, 0, 192), '{')
	b = shardkit.AppendStr(b, "key", key)
	b = shardkit.AppendInt(b, "window_ms", st.W)
	b = shardkit.AppendInt(b, "window_start_ms", st.Start)
	b = shardkit.AppendInt(b, "count", st.Cur)
	b = shardkit.AppendInt(b, "prev_count", st.Prev)
	b = strconv.AppendFloat(shardkit.AppendField(b, "estimate"), st.Estimate(now), 'f', -1, 64)
	b = shardkit.AppendInt(b, "last_ms", st.Last)
	b = shardkit.AppendInt(b, "expires_ms", st.ExpiresAt())
	b = append(b, '}')
	return sdk.RawJSON(200, b)
}

// alarm deletes buckets idle for more than two of their windows and
// re-arms itself while buckets remain: at the earliest expiry, but not
// sooner than the smallest remaining window from now (so a shard with many
// buckets sweeps at most once per window).
func alarm(sdk.AlarmInfo) error {
	now := shardkit.NowMs()
	opts := sdk.ListOptions{Prefix: bucketPrefix, Limit: sweepPage}
	var idle []string
	deleted, kept := 0, 0
	next, minW := int64(-1), int64(-1)
	for {
		kvs, err := sdk.Storage().List(opts)
		if err != nil {
			return err
		}
		for _, kv := range kvs {
			st, err := window.DecodeWindow(string(kv.Value))
			if err != nil || now >= st.ExpiresAt() {
				idle = append(idle, kv.Key)
				if len(idle) == abi.MaxMultiKeys {
					n, err := sdk.Storage().DeleteMulti(idle)
					if err != nil {
						return err
					}
					deleted += n
					idle = idle[:0]
				}
				continue
			}
			kept++
			if exp := st.ExpiresAt(); next < 0 || exp < next {
				next = exp
			}
			if minW < 0 || st.W < minW {
				minW = st.W
			}
		}
		if len(kvs) < sweepPage {
			break
		}
		opts.StartAfter, opts.HasStartAfter = kvs[len(kvs)-1].Key, true
	}
	if len(idle) > 0 {
		n, err := sdk.Storage().DeleteMulti(idle)
		if err != nil {
			return err
		}
		deleted += n
	}
	if kept > 0 {
		if floor := now + minW; next < floor {
			next = floor
		}
		if err := sdk.SetAlarm(time.UnixMilli(next)); err != nil {
			return err
		}
	}
	sdk.Debug("rate-limit sweep", "deleted", strconv.Itoa(deleted), "kept", strconv.Itoa(kept))
	return nil
}
