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
	i.reqBuf = abi.AppendWSEvent(i.reqBuf[:0], ev)
	if err := i.deliver(ctx, env, i.fnWS); err != nil {
		return false, err
	}
	return uint32(i.stack[0]) == 0, nil
}
