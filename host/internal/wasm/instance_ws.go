package wasm

import (
	"context"
	"fmt"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/tetratelabs/wazero/api"
)

// wsEventSig is the signature of the optional export abi.ExportWSEvent.
var wsEventSig = sig{[]api.ValueType{i32, i32}, []api.ValueType{i32}}

// wsAccepted reports whether env accepted a WebSocket upgrade during the
// event: then, and only then, a response may have status 101.
func wsAccepted(env Env) bool {
	w, ok := env.(WebSocketEnv)
	return ok && w.WSAccepted()
}

// HasWebSockets reports whether the instance handles WebSocket events.
func (i *Instance) HasWebSockets() bool { return i.fnWS != nil }

// WSEvent delivers a WebSocket event, written through edgeshard_alloc
// like a request. ok is false when the handler reported a failure; err is
// set when the instance died (as for Fetch).
func (i *Instance) WSEvent(ctx context.Context, env Env, ev *abi.WSEvent) (ok bool, err error) {
	if i.dead != nil {
		return false, i.dead
	}
	if i.fnWS == nil {
		return false, fmt.Errorf("%w: the module does not export %s", ErrTrap, abi.ExportWSEvent)
	}
	ctx = i.cctx.reset(ctx, env)
	i.cctx.c.begin(false)
	i.reqBuf = abi.AppendWSEvent(i.reqBuf[:0], ev)
	ptr, n, err := i.writeRequests(ctx)
	if err != nil {
		return false, err
	}
	i.stack[0], i.stack[1] = uint64(ptr), uint64(n)
	if err := i.call(ctx, i.fnWS, i.stack[:]); err != nil {
		return false, i.kill(err)
	}
	return uint32(i.stack[0]) == 0, nil
}
