// Command ratelimit is RateLimitShard: sliding-window-counter rate limits
// for the edge proxy, one bucket per user / ip / host key, kept in shard
// storage. The protocol and the decision are plugins/proto/ratelimit's; see
// README.md and ../PROTOCOLS.md.
//
// Build: GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared \
//
//	-o ratelimit.wasm ./plugins/ratelimit
package main

import (
	"strconv"
	"time"

	"github.com/edgeshard/edgeshard/abi/sdk"
	"github.com/edgeshard/edgeshard/plugins/internal/shardkit"
	"github.com/edgeshard/edgeshard/plugins/proto/ratelimit"
	"github.com/edgeshard/edgeshard/plugins/proto/window"
)

func main() {}

func init() {
	sdk.Serve(sdk.Handlers{Fetch: router.Fetch, Alarm: alarm})
}

var router = sdk.Router{Answer405: true, Routes: []sdk.Route{
	{Method: "POST", Path: "/check", Handle: check},
	{Method: "GET", Path: "/bucket", Handle: bucketState},
}}

// check counts one request in every bucket of the call, or in none: only
// if every bucket allows it (ratelimit.Decide).
func check(req *sdk.Request) *sdk.Response {
	bs, le := ratelimit.ParseCheck(string(req.Body))
	if le != nil {
		return shardkit.Refuse(le)
	}
	keys := scratch.keys[:0]
	for i := range bs {
		keys = append(keys, ratelimit.KeyPrefix+bs[i].Key)
	}
	scratch.keys = keys
	kvs, err := sdk.Storage().GetMulti(keys)
	if err != nil {
		return shardkit.Internal("storage", err)
	}
	ratelimit.Load(bs, keys, kvs, unreadable)
	now := shardkit.NowMs()
	all := ratelimit.Decide(bs, now)
	if all {
		store(bs, keys)
	}
	// The SDK encodes the response before the next event: the buffer can
	// be reused.
	scratch.reply = ratelimit.AppendReply(scratch.reply[:0], all, bs)
	return sdk.RawJSON(200, scratch.reply)
}

// scratch holds buffers reused from event to event (an instance runs one
// event at a time; each allocation costs ~200 ns in a Go guest).
var scratch struct {
	keys  []string
	reply []byte
	state []byte
}

func unreadable(b *ratelimit.Bucket, err error) {
	sdk.Warn("bucket state unreadable; starting it afresh", "bucket", b.Key, "error", err.Error())
}

// store writes the counted buckets (unconfirmed writes: see README.md),
// then makes sure the cleanup alarm covers every bucket this call created.
// A storage failure part-way aborts the event so no bucket is counted
// alone.
func store(bs []ratelimit.Bucket, keys []string) {
	for i := range bs {
		scratch.state = bs[i].State.Encode(scratch.state[:0])
		if err := sdk.Storage().PutUnconfirmed(keys[i], scratch.state); err != nil {
			shardkit.Abort("store bucket "+bs[i].Key, err)
		}
	}
	earliest, ok := ratelimit.CleanupAt(bs)
	if !ok {
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

// bucketState answers GET /bucket?key=K with the bucket's state as of
// now (windows rolled forward, nothing written).
func bucketState(req *sdk.Request) *sdk.Response {
	key := sdk.Query(req, "key")
	if key == "" || len(key) > ratelimit.MaxKeyBytes {
		return sdk.ErrorJSON(400, "bad_key", "query parameter key must be 1.."+strconv.Itoa(ratelimit.MaxKeyBytes)+" bytes")
	}
	v, ok, err := sdk.Storage().Get(ratelimit.KeyPrefix + key)
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
	b := ratelimit.AppendState(make([]byte, 0, 192), key, st, shardkit.NowMs())
	return sdk.RawJSON(200, b)
}

// alarm deletes buckets idle for more than two of their windows and
// re-arms itself while buckets remain: at the earliest expiry, but not
// sooner than the smallest remaining window from now (so a shard with many
// buckets sweeps at most once per window).
func alarm(sdk.AlarmInfo) error {
	deleted, kept, next, ok, err := ratelimit.Sweep(sdk.Storage(), shardkit.NowMs())
	if err != nil {
		return err
	}
	if ok {
		if err := sdk.SetAlarm(time.UnixMilli(next)); err != nil {
			return err
		}
	}
	sdk.Debug("rate-limit sweep", "deleted", strconv.Itoa(deleted), "kept", strconv.Itoa(kept))
	return nil
}
