package wasm

import (
	"strconv"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/tetratelabs/wazero/api"
)

// Trace decoders of the WebSocket host functions (hostfuncs_ws.go), kept
// beside the group rather than in trace.go's table.
func init() {
	msg := func(mem api.Memory, ptr, n, flags uint64) string {
		kind := "text"
		if u32(flags)&abi.WSBinary != 0 {
			kind = "binary"
		}
		b, okm := read(mem, ptr, n)
		if !okm {
			return kind + " " + outside(ptr, n)
		}
		return kind + " " + value(b, len(b))
	}
	socket := func(id uint64) string { return "socket=" + strconv.FormatUint(id, 10) }
	tag := func(mem api.Memory, ptr, n uint64) string {
		if u32(n) == 0 {
			return "all"
		}
		return "tag=" + key(mem, ptr, n)
	}
	tracers[abi.FnWSAccept] = tracer{
		args: func(mem api.Memory, p []uint64) string {
			tags := "no tags"
			if u32(p[1]) > 0 {
				tags = decoded(mem, p[0], p[1], "Keys", abi.DecodeKeys, keyList)
			}
			att, okm := read(mem, p[2], p[3])
			if !okm {
				return tags + " attachment=" + outside(p[2], p[3])
			}
			return tags + " attachment=" + value(att, len(att))
		},
		outcome: func(_ *call, _ api.Memory, _ []uint64, n int64) string { return socket(uint64(n)) },
	}
	tracers[abi.FnWSSend] = tracer{
		args:    func(mem api.Memory, p []uint64) string { return socket(p[0]) + " " + msg(mem, p[2], p[3], p[1]) },
		outcome: ok,
	}
	tracers[abi.FnWSBroadcast] = tracer{
		args: func(mem api.Memory, p []uint64) string {
			return tag(mem, p[0], p[1]) + " " + msg(mem, p[3], p[4], p[2])
		},
		outcome: func(_ *call, _ api.Memory, _ []uint64, n int64) string { return plural(int(n), "socket") },
	}
	tracers[abi.FnWSClose] = tracer{
		args: func(mem api.Memory, p []uint64) string {
			return socket(p[0]) + " code=" + strconv.Itoa(int(int32(u32(p[1])))) + " reason=" + key(mem, p[2], p[3])
		},
		outcome: ok,
	}
	tracers[abi.FnWSList] = tracer{
		args: func(mem api.Memory, p []uint64) string { return tag(mem, p[0], p[1]) },
		outcome: func(c *call, mem api.Memory, p []uint64, n int64) string {
			socks, err := abi.DecodeSockets(result(c, mem, p[2], p[3], n))
			if err != nil {
				return plural(int(n), "byte") + held(n, p[3])
			}
			return plural(len(socks), "socket") + held(n, p[3])
		},
	}
	tracers[abi.FnWSSetAttachment] = tracer{
		args: func(mem api.Memory, p []uint64) string {
			b, okm := read(mem, p[1], p[2])
			if !okm {
				return socket(p[0]) + " attachment=" + outside(p[1], p[2])
			}
			return socket(p[0]) + " attachment=" + value(b, len(b))
		},
		outcome: ok,
	}
	tracers[abi.FnWSSetAutoResponse] = tracer{
		args: func(mem api.Memory, p []uint64) string {
			return "request=" + key(mem, p[0], p[1]) + " response=" + key(mem, p[2], p[3])
		},
		outcome: ok,
	}
}
