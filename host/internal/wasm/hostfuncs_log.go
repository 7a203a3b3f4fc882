package wasm

import (
	"fmt"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/tetratelabs/wazero/api"
)

// Log host functions (group "log"): structured records for the host log,
// through Env.Log (the host adds binding, shard and component=guest).

// logFuncs are the host functions of group "log".
var logFuncs = []hostFunc{logWrite}

// logWrite is log_write(level i32, rec_ptr, rec_len) -> i32: writes one
// record to the host log.
//
// Parameters:
//   - level: 0 debug, 1 info, 2 warn, 3 error; any other answers
//     ErrnoInvalid;
//   - rec_ptr, rec_len: an encoded abi.LogRecord (a message, then
//     key/value fields), at most abi.MaxLogMessage bytes.
//
// Result: 0. Errnos: ErrnoFault; ErrnoTooLarge for a record over
// abi.MaxLogMessage (no message); ErrnoInvalid for a malformed record or
// an unknown level; ErrnoLimit when the event has logged its budget
// (EventLimits.LogLines, LogBytes): the record is dropped.
var logWrite = hostFunc{abi.FnLogWrite, logWriteFn, p(i32, i32, i32), p(i32)}

func logWriteFn(c *call, mod api.Module, s []uint64) {
	level := int32(u32(s[0]))
	raw, ok := shortArg(mod, s, 1, abi.MaxLogMessage)
	if !ok {
		return
	}
	if level < abi.LogDebug || level > abi.LogError {
		c.fail(s, abi.ErrnoInvalid, fmt.Sprintf("log level %d: want 0 debug, 1 info, 2 warn or 3 error", level))
		return
	}
	rec, err := abi.DecodeLogRecord(raw)
	if c.invalid(s, err) || !c.spendLog(s, int64(len(raw))) {
		return
	}
	c.env.Log(level, rec)
	s[0] = 0
}
