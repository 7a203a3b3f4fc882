package ratelimit

import (
	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/plugins/proto/window"
)

// RateLimitShard's storage, which the plugin and its native twin (the
// benchmark baseline in cmd/edgeshard-bench) share: one key per bucket,
// KeyPrefix + bucket key → window.Window.Encode; a cleanup alarm deletes
// buckets idle for more than two of their windows.
const (
	KeyPrefix = "b:"
	SweepPage = 512 // buckets the cleanup alarm reads per List call
)

// Load fills each bucket's Stored and Exists from kvs, the GetMulti answer
// for keys (KeyPrefix + Key of each bucket, in order). A state that does
// not decode is reported to unreadable and starts afresh.
func Load(bs []Bucket, keys []string, kvs []abi.KV, unreadable func(b *Bucket, err error)) {
	for i := range bs {
		b := &bs[i]
		for _, kv := range kvs {
			if kv.Key != keys[i] {
				continue
			}
			if st, err := window.DecodeWindow(string(kv.Value)); err == nil {
				b.Stored, b.Exists = st, true
			} else {
				unreadable(b, err)
			}
			break
		}
	}
}

// CleanupAt returns the latest time the cleanup alarm may fire for the
// buckets a counted call created (the earliest expiry among the Fresh
// ones); ok is false when the call created none.
func CleanupAt(bs []Bucket) (at int64, ok bool) {
	for i := range bs {
		if b := &bs[i]; b.Fresh {
			if exp := b.State.ExpiresAt(); !ok || exp < at {
				at, ok = exp, true
			}
		}
	}
	return at, ok
}

// Sweep is one pass of the cleanup alarm over the stored buckets, at Now.
type Sweep struct {
	Now  int64
	Kept int // buckets that stay
	next int64
	minW int64
}

// Idle reports whether the stored bucket kv is to be deleted: idle for
// more than two windows, or unreadable. A bucket that stays counts towards
// Next.
func (s *Sweep) Idle(kv abi.KV) bool {
	st, err := window.DecodeWindow(string(kv.Value))
	if err != nil || s.Now >= st.ExpiresAt() {
		return true
	}
	if exp := st.ExpiresAt(); s.Kept == 0 || exp < s.next {
		s.next = exp
	}
	if s.Kept == 0 || st.W < s.minW {
		s.minW = st.W
	}
	s.Kept++
	return false
}

// Next returns when to sweep again while buckets remain: at the earliest
// expiry, but not sooner than the smallest window from now (a shard with
// many buckets sweeps at most once per window).
func (s *Sweep) Next() (at int64, ok bool) {
	if s.Kept == 0 {
		return 0, false
	}
	return max(s.next, s.Now+s.minW), true
}
