package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host/clock"
	"github.com/edgeshard/edgeshard/internal/hostinternal"
	"github.com/edgeshard/edgeshard/plugins/proto/ratelimit"
	"github.com/edgeshard/edgeshard/plugins/proto/window"
)

// nativeLimiter is RateLimitShard (plugins/ratelimit) written as a
// hostinternal.NativeShard: the same protocol, decision, storage layout and alarm
// cadence (plugins/proto/ratelimit and its window arithmetic, shared with
// the plugin), run in the host process on the same actor, storage and
// output gate as the wasm plugin. It is the baseline of ratelimit_wasm_vs_native;
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

// check counts the request in every bucket of the call, or in none.
func (n *nativeLimiter) check(env hostinternal.Env, req *abi.Request) (*abi.Response, error) {
	bs, le := ratelimit.ParseCheck(string(req.Body))
	if le != nil {
		return errorJSON(400, le.Code, le.Error()), nil
	}
	keys := n.keys[:0]
	for i := range bs {
		keys = append(keys, ratelimit.KeyPrefix+bs[i].Key)
	}
	n.keys = keys
	st := env.Store()
	kvs, err := st.GetMulti(keys)
	if err != nil {
		return errorJSON(500, "storage", err.Error()), nil
	}
	ratelimit.Load(bs, keys, kvs, func(b *ratelimit.Bucket, err error) {
		env.Log(abi.LogWarn, abi.LogRecord{Message: "bucket state unreadable; starting it afresh",
			Fields: []abi.Header{{Name: "bucket", Value: b.Key}, {Name: "error", Value: err.Error()}}})
	})
	all := ratelimit.Decide(bs, n.now())
	if all {
		if err := n.store(env, bs, keys); err != nil {
			// The plugin traps here (shardkit.Abort): the host discards the
			// event's writes and restarts the shard from storage.
			return nil, err
		}
	}
	return rawJSON(200, ratelimit.AppendReply(make([]byte, 0, 64+160*len(bs)), all, bs)), nil
}

// store writes the counted buckets (unconfirmed writes, as the plugin) and
// arms the cleanup alarm for buckets the call created.
func (n *nativeLimiter) store(env hostinternal.Env, bs []ratelimit.Bucket, keys []string) error {
	st := env.Store()
	for i := range bs {
		n.buf = bs[i].State.Encode(n.buf[:0]) // Put copies the value
		if err := st.Put(keys[i], n.buf, true); err != nil {
			return fmt.Errorf("aborting event: store bucket %s: %w", bs[i].Key, err)
		}
	}
	earliest, ok := ratelimit.CleanupAt(bs)
	if !ok {
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

// bucketState answers GET /bucket?key=K like the plugin.
func (n *nativeLimiter) bucketState(env hostinternal.Env, req *abi.Request) (*abi.Response, error) {
	key := query(req.Path, "key")
	if key == "" || len(key) > ratelimit.MaxKeyBytes {
		return errorJSON(400, "bad_key", "query parameter key must be 1.."+strconv.Itoa(ratelimit.MaxKeyBytes)+" bytes"), nil
	}
	v, ok, err := env.Store().Get(ratelimit.KeyPrefix + key)
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
	b := ratelimit.AppendState(make([]byte, 0, 192), key, st, n.now())
	return rawJSON(200, b), nil
}

// Alarm deletes idle buckets and re-arms while buckets remain, like the
// plugin's alarm.
func (n *nativeLimiter) Alarm(_ context.Context, env hostinternal.Env, _ int) (bool, error) {
	deleted, kept, next, ok, err := ratelimit.Sweep(env.Store(), n.now())
	if err != nil {
		return false, nil
	}
	if ok {
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
