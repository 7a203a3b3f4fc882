package wasm

import (
	"bytes"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/tetratelabs/wazero/api"
)

// Call host functions (group "call", granted when the binding names the
// bindings it may call): a request to a shard of another binding, through
// Env.CallShard.

// callFuncs are the host functions of group "call".
var callFuncs = []hostFunc{shardCall}

// shardCall is shard_call(req_ptr, req_len, buf, cap) -> i64: sends a
// request to the shard a key routes to in a binding the caller may call,
// and answers that shard's response once its writes are durable.
//
// Parameters:
//   - req_ptr, req_len: an encoded CallRequest (binding, key, then a
//     Request whose path is the one the called shard sees), at most
//     abi.MaxOutboundRequest bytes;
//   - buf, cap: where the encoded Response goes (held for result_take past
//     cap).
//
// Result: the encoded Response's length. A failure of the called shard (a
// trap, its deadline, a full queue…) is a Response too, with the status and
// JSON error body /do would answer. Errnos: ErrnoNotGranted for a binding
// the caller may not call; ErrnoDeadlock when the called shard is waiting,
// directly or through others, on the caller (A → B → A, A → A);
// ErrnoLimit past abi.MaxCallDepth nested calls; ErrnoDeadline when the
// calling event's deadline passed first; ErrnoInvalid for a malformed
// request or a key the binding cannot route; ErrnoTooLarge; ErrnoFault.
var shardCall = hostFunc{abi.FnShardCall, shardCallFn, p(i32, i32, i32, i32), p(i64)}

func shardCallFn(c *call, mod api.Module, s []uint64) {
	sendOutbound(c, mod, s, "call", abi.DecodeCallRequest, func(r *abi.CallRequest) (*abi.Response, error) {
		return c.env.CallShard(c.ctx, r)
	})
}

// sendOutbound is the body of shard_call and http_fetch: it decodes the
// request at s[0], s[1] (a copy of guest memory: the request may outlive
// the call when the other side gives up late), sends it, and answers the
// encoded Response through s[2], s[3].
func sendOutbound[T any](c *call, mod api.Module, s []uint64, what string, decode func([]byte) (T, error), send func(T) (*abi.Response, error)) {
	raw, ok := c.boundedArg(mod, s, 0, abi.MaxOutboundRequest, what+" request")
	if !ok {
		return
	}
	req, err := decode(bytes.Clone(raw))
	if c.invalid(s, err) {
		return
	}
	resp, err := send(req)
	if err != nil {
		s[0] = neg(c.errno(err))
		return
	}
	s[0] = c.reply(mod, abi.AppendResponse(nil, resp), u32(s[2]), u32(s[3]))
}
