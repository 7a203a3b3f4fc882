package wasm

import (
	"github.com/edgeshard/edgeshard/abi"
	"github.com/tetratelabs/wazero/api"
)

// Core host functions (group "core", always granted): the result held back
// by the previous call, and the detail of the last failed call.

// resultFuncs are the host functions of group "core".
var resultFuncs = []hostFunc{resultTake, errorMessage}

// resultTake is result_take(buf, cap) -> i64: copies the result the
// previous host call held back because it did not fit the guest's buffer
// ("caller passes a buffer", abi/ABI.md section 3).
//
// Parameters:
//   - buf, cap: where the held result goes.
//
// Result: the held result's length n; when n ≤ cap the bytes are in
// buf[0:n] and the result is no longer held, otherwise nothing is written
// and it stays held (call again with a buffer of n bytes). Errnos:
// ErrnoNoResult when nothing is held (none was, it was delivered, or a
// later call answering through a buffer dropped it), ErrnoFault when
// buf[0:n] is outside memory (the result stays held).
var resultTake = hostFunc{abi.FnResultTake, resultTakeFn, p(i32, i32), p(i64)}

func resultTakeFn(c *call, mod api.Module, s []uint64) {
	if c.pending == nil {
		s[0] = neg(abi.ErrnoNoResult)
		return
	}
	buf, bufCap := u32(s[0]), u32(s[1])
	if uint32(len(c.pending)) > bufCap {
		s[0] = uint64(len(c.pending))
		return
	}
	if !mod.Memory().Write(buf, c.pending) {
		s[0] = neg(abi.ErrnoFault)
		return
	}
	s[0] = uint64(len(c.pending))
	c.pending = nil
}

// errorMessage is error_message(buf, cap) -> i64: the detail of the last
// failed host call of this event that had one (e.g. SQLite's message). A
// successful call, or a failure without detail (ErrnoFault, ErrnoNotFound
// and the size checks of var_get and log_write), leaves the message as it
// was.
//
// Parameters:
//   - buf, cap: where the message goes; it is cut to cap bytes.
//
// Result: the number of bytes written, min(len(message), cap); 0 when no
// call of this event left a message. Errno: ErrnoFault when buf[0:n] is
// outside memory.
var errorMessage = hostFunc{abi.FnErrorMessage, errorMessageFn, p(i32, i32), p(i64)}

func errorMessageFn(c *call, mod api.Module, s []uint64) {
	buf, bufCap := u32(s[0]), u32(s[1])
	msg := c.errMsg
	if uint32(len(msg)) > bufCap {
		msg = msg[:bufCap]
	}
	if len(msg) > 0 && !mod.Memory().Write(buf, []byte(msg)) {
		s[0] = neg(abi.ErrnoFault)
		return
	}
	s[0] = uint64(len(msg))
}
