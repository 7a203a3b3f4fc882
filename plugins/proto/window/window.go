// Package window is the sliding-window-counter arithmetic of rate limits:
// a bucket's state, how it rolls forward in time, the allow/remaining/
// retry-after decisions in exact integer arithmetic, and its stored form.
// RateLimitShard (plugins/ratelimit), its native benchmark baseline
// (cmd/edgeshard-bench) and the edge's SQL and in-memory fallbacks
// (edge/ratelimit.go, through proto/ratelimit) all decide with this code,
// so a fallback never decides differently from the shard.
package window

import (
	"errors"
	"strconv"
	"strings"
)

// Window is the stored state of one bucket: a sliding-window counter. It
// keeps the count of the current fixed window and of the one before; the
// estimate of requests in the last window_ms is the previous count
// weighted by how much of the previous window still overlaps the sliding
// window, plus the current count:
//
//	estimate(now) = Prev·(W − (now − Start))/W + Cur
//
// All arithmetic is done in integers scaled by W, so decisions are exact.
type Window struct {
	W     int64 // window length, ms
	Start int64 // start of the current fixed window (a multiple of W), unix ms
	Prev  int64 // requests counted in [Start−W, Start)
	Cur   int64 // requests counted in [Start, Start+W)
	Last  int64 // unix ms of the last counted request
}

// Limits on a bucket's limit and window. They keep every product below
// 2^63: MaxLimit·MaxWindowMs·2 < 1.3e18.
const (
	MinWindowMs = 1000
	MaxWindowMs = 7 * 24 * 3600 * 1000
	MaxLimit    = 1_000_000_000
)

// windowStart returns the start of the fixed window of length w holding now.
func windowStart(now, w int64) int64 {
	s := now - now%w
	if now < 0 && now%w != 0 {
		s -= w
	}
	return s
}

// Roll returns the state as seen at now for a window of w ms. A bucket
// that does not exist yet, or was kept with another window length, starts
// empty (fresh reports that). Whole windows that passed shift the counts;
// a clock that went backwards keeps the stored window.
func Roll(st Window, exists bool, now, w int64) (out Window, fresh bool) {
	ws := windowStart(now, w)
	if !exists || st.W != w {
		return Window{W: w, Start: ws}, true
	}
	switch {
	case ws == st.Start:
	case ws == st.Start+w:
		st.Prev, st.Cur, st.Start = st.Cur, 0, ws
	case ws > st.Start+w:
		st.Prev, st.Cur, st.Start = 0, 0, ws
	}
	return st, false
}

// elapsed returns now − Start clamped to [0, W−1].
func (st Window) elapsed(now int64) int64 {
	e := now - st.Start
	if e < 0 {
		return 0
	}
	if e >= st.W {
		return st.W - 1
	}
	return e
}

// usedScaled returns estimate(now)·W.
func (st Window) usedScaled(now int64) int64 {
	return st.Prev*(st.W-st.elapsed(now)) + st.Cur*st.W
}

// Allows reports whether cost more requests fit under limit at now.
func (st Window) Allows(now, limit, cost int64) bool {
	return st.usedScaled(now)+cost*st.W <= limit*st.W
}

// Estimate returns the weighted request count at now.
func (st Window) Estimate(now int64) float64 {
	return float64(st.usedScaled(now)) / float64(st.W)
}

// Remaining returns how many more unit-cost requests limit allows at now
// (never negative).
func (st Window) Remaining(now, limit int64) int64 {
	r := (limit*st.W - st.usedScaled(now)) / st.W
	if r < 0 {
		return 0
	}
	return r
}

// ResetMs returns when the current fixed window ends (unix ms).
func (st Window) ResetMs() int64 { return st.Start + st.W }

// RetryAfter returns how many ms after now a request of cost would first
// be allowed, assuming nothing else is counted meanwhile: 0 if it is
// allowed now. cost must be ≤ limit.
func (st Window) RetryAfter(now, limit, cost int64) int64 {
	if st.Allows(now, limit, cost) {
		return 0
	}
	w := st.W
	// Later in the current window the previous window's weight shrinks:
	// allowed once Prev·(W−e) ≤ (limit−Cur−cost)·W.
	if avail := limit - st.Cur - cost; avail >= 0 && st.Prev > 0 {
		e := ceilDiv((st.Prev-avail)*w, st.Prev)
		if e < w {
			return st.Start + e - now
		}
	}
	// In the next window Cur becomes the previous count: allowed once
	// Cur·(W−e) ≤ (limit−cost)·W. At the latest (e = W) the window after
	// next starts empty.
	var e int64
	if avail := limit - cost; st.Cur > avail {
		e = ceilDiv((st.Cur-avail)*w, st.Cur)
	}
	return st.Start + w + e - now
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

// ExpiresAt is when the bucket has been idle for more than two windows and
// the cleanup alarm may delete it.
func (st Window) ExpiresAt() int64 { return st.Last + 2*st.W + 1 }

// Encode appends the stored form "W,Start,Prev,Cur,Last".
func (st Window) Encode(b []byte) []byte {
	b = strconv.AppendInt(b, st.W, 10)
	b = append(b, ',')
	b = strconv.AppendInt(b, st.Start, 10)
	b = append(b, ',')
	b = strconv.AppendInt(b, st.Prev, 10)
	b = append(b, ',')
	b = strconv.AppendInt(b, st.Cur, 10)
	b = append(b, ',')
	return strconv.AppendInt(b, st.Last, 10)
}

var errBadState = errors.New("malformed bucket state")

// DecodeWindow parses the stored form.
func DecodeWindow(s string) (Window, error) {
	var f [5]int64
	for i := range f {
		part := s
		if i < len(f)-1 {
			j := strings.IndexByte(s, ',')
			if j < 0 {
				return Window{}, errBadState
			}
			part, s = s[:j], s[j+1:]
		}
		v, err := strconv.ParseInt(part, 10, 64)
		if err != nil {
			return Window{}, errBadState
		}
		f[i] = v
	}
	if f[0] < MinWindowMs || f[0] > MaxWindowMs {
		return Window{}, errBadState
	}
	return Window{W: f[0], Start: f[1], Prev: f[2], Cur: f[3], Last: f[4]}, nil
}
