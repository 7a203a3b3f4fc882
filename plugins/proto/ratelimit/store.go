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

// Storage is what the cleanup alarm needs of a shard's storage (the guest
// SDK's sdk.Store and the host's Store both have it).
type Storage interface {
	List(opts abi.ListOptions) ([]abi.KV, error)
	DeleteMulti(keys []string) (int, error)
}

// Sweep is the cleanup alarm: at now it deletes the buckets idle for more
// than two of their windows (and unreadable ones), a page at a time. It
// returns how many it deleted and kept, and when to sweep again while
// buckets remain (ok): at the earliest expiry, but not sooner than the
// smallest window from now, so a shard with many buckets sweeps at most
// once per window.
func Sweep(st Storage, now int64) (deleted, kept int, next int64, ok bool, err error) {
	opts := abi.ListOptions{Prefix: KeyPrefix, Limit: SweepPage}
	var idle []string
	var minW int64
	flush := func() error {
		n, err := st.DeleteMulti(idle)
		deleted += n
		idle = idle[:0]
		return err
	}
	for {
		kvs, err := st.List(opts)
		if err != nil {
			return deleted, kept, 0, false, err
		}
		for _, kv := range kvs {
			w, err := window.DecodeWindow(string(kv.Value))
			if err != nil || now >= w.ExpiresAt() {
				if idle = append(idle, kv.Key); len(idle) == abi.MaxMultiKeys {
					if err := flush(); err != nil {
						return deleted, kept, 0, false, err
					}
				}
				continue
			}
			if exp := w.ExpiresAt(); kept == 0 || exp < next {
				next = exp
			}
			if kept == 0 || w.W < minW {
				minW = w.W
			}
			kept++
		}
		if len(kvs) < SweepPage {
			break
		}
		opts.StartAfter, opts.HasStartAfter = kvs[len(kvs)-1].Key, true
	}
	if len(idle) > 0 {
		if err := flush(); err != nil {
			return deleted, kept, 0, false, err
		}
	}
	if kept == 0 {
		return deleted, 0, 0, false, nil
	}
	return deleted, kept, max(next, now+minW), true, nil
}
