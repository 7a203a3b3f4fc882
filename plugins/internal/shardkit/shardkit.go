// Package shardkit holds the small guest-side helpers the three edgeshard
// plugins share: error responses, the clock, setting the alarm, aborting an
// event, and the shard's own name (learned from the X-Edgeshard-Shard
// request header and kept in storage so alarms can read it). Routing is
// sdk.Router's; the line framing and the JSON writers are protocol, in
// plugins/proto.
//
// Everything here avoids encoding/json and reflection: it runs on the hot
// path of a Go guest, where every byte loop costs ~5 ns/byte.
package shardkit

import (
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/abi/sdk"
	"github.com/edgeshard/edgeshard/plugins/proto"
)

// ShardHeader is the request header the host sets on every fetch to
// "<binding>/<shard>".
const ShardHeader = sdk.ShardHeader

// ShardKey is the storage key holding the shard's name.
const ShardKey = "meta:shard"

// UnknownShard is the name used when the host did not say (an older host
// without the X-Edgeshard-Shard header).
const UnknownShard = "unknown"

// NowMs returns the current unix time in milliseconds (the host's clock,
// virtual in tests).
func NowMs() int64 { return time.Now().UnixMilli() }

// Refuse answers 400 {"error":{"code":...,"message":"line N: ..."}} for a
// body the protocol's parser refused.
func Refuse(le *proto.LineError) *sdk.Response {
	return sdk.ErrorJSON(400, le.Code, le.Error())
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

// NodeName returns the host's node id (the reserved var edgeshard.node),
// or "" on a host without one: what a shard keys by, beside its own name,
// whatever must be unique per writer of the shared SQL database.
func NodeName() string {
	v, _ := sdk.Var(NodeVar)
	return v
}

// NodeVar is the reserved var naming the host's node.
const NodeVar = "edgeshard.node"

// LogName returns name, or UnknownShard when it is empty.
func LogName(name string) string {
	if name == "" {
		return UnknownShard
	}
	return name
}

// SetAlarm sets the shard's alarm for unix ms ms, aborting the event if
// the host refuses.
func SetAlarm(ms int64) {
	if err := sdk.SetAlarm(time.UnixMilli(ms)); err != nil {
		Abort("set alarm", err)
	}
}

// Abort ends the current event by trapping the guest, so the host
// discards every write the event made (a shard event has no other way to
// roll back). Use it when a storage call fails halfway through writes that
// must be all or nothing; the caller of the event sees a shard failure.
func Abort(what string, err error) {
	panic("aborting event: " + what + ": " + err.Error())
}
