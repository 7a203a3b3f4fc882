// Package ratelimit is the protocol of RATE_LIMIT_SHARD (plugins/ratelimit)
// and the decision every rate-limit store makes: the /check line the edge
// writes and the plugin parses, the answer the plugin writes and the edge
// reads, Decide (one call's buckets counted all or none, with the
// arithmetic of proto/window), and the statements of the edge's SQL
// fallback table proxy_rate_limits, whose rows hold the same state the
// shard keeps. The shard, the SQL fallback and the in-memory fallback all
// run Decide, so they decide alike.
package ratelimit

import (
	"github.com/edgeshard/edgeshard/abi/sdk"
	"strconv"
	"strings"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/plugins/proto"
	"github.com/edgeshard/edgeshard/plugins/proto/window"
)

// Limits of a /check call.
const (
	MaxBuckets  = abi.MaxMultiKeys // buckets one call may name (one GetMulti)
	MaxKeyBytes = 512
)

// Line is one bucket of a /check call:
//
//	key \t limit \t window_ms [\t cost] \n
//
// key is 1..MaxKeyBytes bytes without tab or newline (the edge uses
// "user:<id>", "ip:<addr>", "host:<hostname>"); limit 1..window.MaxLimit;
// window_ms window.MinWindowMs..window.MaxWindowMs; cost 1..limit
// (default 1). A key may appear once per call.
type Line struct {
	Key      string
	Limit    int64
	WindowMs int64
	Cost     int64 // 0 means 1
}

// AppendLine appends the line, newline included (cost only when above 1).
func (l Line) AppendLine(b []byte) []byte {
	b = proto.AppendInts(proto.AppendFields(b, l.Key), l.Limit, l.WindowMs)
	if l.Cost > 1 {
		b = proto.AppendInts(b, l.Cost)
	}
	return proto.EndLine(b)
}

// Bucket is one line of a call and its evaluation: the caller fills Line
// and the stored state (Stored, Exists); Decide fills the rest.
type Bucket struct {
	Line
	No int // line number in the body (1-based), for messages

	Stored window.Window // the state kept for Key, if Exists
	Exists bool

	State        window.Window // Stored rolled to now, and counted if the call was
	Fresh        bool          // State started afresh (new bucket or another window_ms)
	Allowed      bool          // this bucket alone would allow the call
	Remaining    int64         // unit-cost requests left after the call
	RetryAfterMs int64         // 0 when the call was allowed
}

// ParseCheck parses a /check body into buckets (Line and No filled). A
// refused body yields the plugin's error: codes empty_body, bad_line,
// bad_key, bad_limit, bad_window, bad_cost, duplicate_key,
// too_many_buckets.
func ParseCheck(body string) ([]Bucket, *proto.LineError) {
	out := make([]Bucket, 0, min(strings.Count(body, "\n")+1, MaxBuckets))
	var f [4]string
	lines := proto.NewLines(body)
	for {
		s, no, ok := lines.Next()
		if !ok {
			break
		}
		n := proto.Fields(s, f[:])
		if n != 3 && n != 4 {
			return nil, &proto.LineError{Line: no, Code: "bad_line", Msg: "want key\\tlimit\\twindow_ms[\\tcost], got " + strconv.Itoa(n) + " fields"}
		}
		b := Bucket{Line: Line{Key: f[0], Cost: 1}, No: no}
		if b.Key == "" || len(b.Key) > MaxKeyBytes {
			return nil, &proto.LineError{Line: no, Code: "bad_key", Msg: "key must be 1.." + strconv.Itoa(MaxKeyBytes) + " bytes"}
		}
		var ok1, ok2 bool
		b.Limit, ok1 = proto.ParseInt(f[1])
		if !ok1 || b.Limit < 1 || b.Limit > window.MaxLimit {
			return nil, &proto.LineError{Line: no, Code: "bad_limit", Msg: "limit must be an integer in 1.." + strconv.Itoa(window.MaxLimit)}
		}
		b.WindowMs, ok2 = proto.ParseInt(f[2])
		if !ok2 || b.WindowMs < window.MinWindowMs || b.WindowMs > window.MaxWindowMs {
			return nil, &proto.LineError{Line: no, Code: "bad_window", Msg: "window_ms must be an integer in " + strconv.Itoa(window.MinWindowMs) + ".." + strconv.Itoa(window.MaxWindowMs)}
		}
		if n == 4 {
			c, ok := proto.ParseInt(f[3])
			if !ok || c < 1 || c > b.Limit {
				return nil, &proto.LineError{Line: no, Code: "bad_cost", Msg: "cost must be an integer in 1..limit"}
			}
			b.Cost = c
		}
		for i := range out {
			if out[i].Key == b.Key {
				return nil, &proto.LineError{Line: no, Code: "duplicate_key", Msg: "bucket " + strconv.Quote(b.Key) + " already named on line " + strconv.Itoa(out[i].No)}
			}
		}
		if len(out) == MaxBuckets {
			return nil, &proto.LineError{Line: no, Code: "too_many_buckets", Msg: "at most " + strconv.Itoa(MaxBuckets) + " buckets per call"}
		}
		out = append(out, b)
	}
	if len(out) == 0 {
		return nil, &proto.LineError{Code: "empty_body", Msg: "no bucket lines in the body"}
	}
	return out, nil
}

// cost returns the line's cost (at least 1).
func (l *Line) cost() int64 { return max(1, l.Cost) }

// Decide evaluates one call at now (unix ms): every bucket's stored state
// is rolled forward (a bucket kept with another window_ms starts afresh),
// and the request is counted in every bucket only if every bucket allows
// it. It reports whether the call was allowed; each bucket gets its own
// verdict, what remains, and when a request of its cost would fit again.
// If the call was allowed, each State is what to store.
func Decide(bs []Bucket, now int64) bool {
	all := true
	for i := range bs {
		b := &bs[i]
		b.State, b.Fresh = window.Roll(b.Stored, b.Exists, now, b.WindowMs)
		b.Allowed = b.State.Allows(now, b.Limit, b.cost())
		all = all && b.Allowed
	}
	for i := range bs {
		b := &bs[i]
		if all {
			b.State.Cur += b.cost()
			b.State.Last = now
			b.RetryAfterMs = 0
		} else {
			b.RetryAfterMs = b.State.RetryAfter(now, b.Limit, b.cost())
		}
		b.Remaining = b.State.Remaining(now, b.Limit)
	}
	return all
}

// Reply is the /check answer (200):
//
//	{"allowed":false,"buckets":[{"key":"user:alice","allowed":false,
//	  "limit":60,"remaining":0,"window_ms":60000,
//	  "reset_ms":1767225660000,"retry_after_ms":1534}]}
//
// buckets are in the order of the lines. AppendReply writes it; the edge
// decodes it into this type.
type Reply struct {
	Allowed *bool         `json:"allowed"`
	Buckets []BucketReply `json:"buckets"`
}

// BucketReply is one bucket of a Reply. reset_ms is when the current
// window ends (unix ms); retry_after_ms is 0 when the call was allowed,
// else how long until a request of this line's cost would be (0 for a
// bucket that alone allowed it).
type BucketReply struct {
	Key          string `json:"key"`
	Allowed      bool   `json:"allowed"`
	Limit        int64  `json:"limit"`
	Remaining    int64  `json:"remaining"`
	WindowMs     int64  `json:"window_ms"`
	ResetMs      int64  `json:"reset_ms"`
	RetryAfterMs int64  `json:"retry_after_ms"`
}

// Reply returns the bucket's entry of the answer (after Decide).
func (b *Bucket) Reply() BucketReply {
	return BucketReply{Key: b.Key, Allowed: b.Allowed, Limit: b.Limit, Remaining: b.Remaining,
		WindowMs: b.WindowMs, ResetMs: b.State.ResetMs(), RetryAfterMs: b.RetryAfterMs}
}

// AppendReply appends the JSON answer of a decided call.
func AppendReply(b []byte, all bool, bs []Bucket) []byte {
	b = append(b, '{')
	b = sdk.AppendJSONBool(b, "allowed", all)
	b = sdk.AppendJSONField(b, "buckets")
	b = append(b, '[')
	for i := range bs {
		r := bs[i].Reply()
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '{')
		b = sdk.AppendJSONStr(b, "key", r.Key)
		b = sdk.AppendJSONBool(b, "allowed", r.Allowed)
		b = sdk.AppendJSONInt(b, "limit", r.Limit)
		b = sdk.AppendJSONInt(b, "remaining", r.Remaining)
		b = sdk.AppendJSONInt(b, "window_ms", r.WindowMs)
		b = sdk.AppendJSONInt(b, "reset_ms", r.ResetMs)
		b = sdk.AppendJSONInt(b, "retry_after_ms", r.RetryAfterMs)
		b = append(b, '}')
	}
	return append(b, ']', '}')
}

// AppendState appends the GET /bucket answer: the state of key rolled
// forward to now, nothing counted.
func AppendState(b []byte, key string, st window.Window, now int64) []byte {
	st, _ = window.Roll(st, true, now, st.W)
	b = append(b, '{')
	b = sdk.AppendJSONStr(b, "key", key)
	b = sdk.AppendJSONInt(b, "window_ms", st.W)
	b = sdk.AppendJSONInt(b, "window_start_ms", st.Start)
	b = sdk.AppendJSONInt(b, "count", st.Cur)
	b = sdk.AppendJSONInt(b, "prev_count", st.Prev)
	b = strconv.AppendFloat(sdk.AppendJSONField(b, "estimate"), st.Estimate(now), 'f', -1, 64)
	b = sdk.AppendJSONInt(b, "last_ms", st.Last)
	b = sdk.AppendJSONInt(b, "expires_ms", st.ExpiresAt())
	return append(b, '}')
}
