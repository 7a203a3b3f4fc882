package wasm

import (
	"fmt"
	"math"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/tetratelabs/wazero/api"
)

// maxAlarmMs is the latest alarm time accepted, 2262-04-11: the time until
// any later alarm overflows a time.Duration, and the host's scheduler,
// handed a negative wait, would fire and re-arm at once, forever.
const maxAlarmMs = math.MaxInt64 / int64(time.Millisecond)

// alarm_set(unix_ms i64) -> i32: sets the shard's one alarm (group "alarm").
// Times ≤ 0 or after maxAlarmMs answer -ErrnoInvalid.
func alarmSet(c *call, mod api.Module, s []uint64) {
	if ms := int64(s[0]); ms <= 0 || ms > maxAlarmMs {
		c.errMsg = fmt.Sprintf("alarm time %d ms is outside 1..%d (2262-04-11)", ms, maxAlarmMs)
		s[0] = neg(abi.ErrnoInvalid)
		return
	}
	if err := c.env.SetAlarm(int64(s[0])); err != nil {
		s[0] = neg(c.errno(err))
		return
	}
	s[0] = 0
}

// alarm_get() -> i64: the alarm's unix ms, or -ErrnoNotFound.
func alarmGet(c *call, mod api.Module, s []uint64) {
	at, ok, err := c.env.GetAlarm()
	switch {
	case err != nil:
		s[0] = neg(c.errno(err))
	case !ok:
		s[0] = neg(abi.ErrnoNotFound)
	default:
		s[0] = uint64(at)
	}
}

// alarm_delete() -> i32.
func alarmDelete(c *call, mod api.Module, s []uint64) {
	if err := c.env.DeleteAlarm(); err != nil {
		s[0] = neg(c.errno(err))
		return
	}
	s[0] = 0
}

// var_get(name_ptr, name_len, buf, cap) -> i64: the value, or
// -ErrnoNotFound (group "vars").
func varGet(c *call, mod api.Module, s []uint64) {
	name, ok := read(mod, u32(s[0]), u32(s[1]))
	if !ok {
		s[0] = neg(abi.ErrnoFault)
		return
	}
	if len(name) > abi.MaxVarName {
		s[0] = neg(abi.ErrnoTooLarge)
		return
	}
	v, found := c.env.Var(string(name))
	if !found {
		s[0] = neg(abi.ErrnoNotFound)
		return
	}
	s[0] = c.reply(mod, []byte(v), u32(s[2]), u32(s[3]))
}

// log_write(level i32, rec_ptr, rec_len) -> i32: writes an encoded
// abi.LogRecord to the host log (group "log").
func logWrite(c *call, mod api.Module, s []uint64) {
	level := int32(u32(s[0]))
	raw, ok := read(mod, u32(s[1]), u32(s[2]))
	if !ok {
		s[0] = neg(abi.ErrnoFault)
		return
	}
	if len(raw) > abi.MaxLogMessage {
		s[0] = neg(abi.ErrnoTooLarge)
		return
	}
	rec, err := abi.DecodeLogRecord(raw)
	if err != nil {
		c.errMsg = err.Error()
		s[0] = neg(abi.ErrnoInvalid)
		return
	}
	c.env.Log(level, rec)
	s[0] = 0
}

// sql_exec(stmts_ptr, stmts_len, buf, cap) -> i64: runs an encoded batch
// of statements in one transaction and answers the encoded results
// (group "sql"). -ErrnoSQL with the database's message on failure.
func sqlExec(c *call, mod api.Module, s []uint64) {
	if u32(s[1]) > abi.MaxSQLPayload {
		c.errMsg = "SQL batch exceeds 16 MiB"
		s[0] = neg(abi.ErrnoTooLarge)
		return
	}
	raw, ok := read(mod, u32(s[0]), u32(s[1]))
	if !ok {
		s[0] = neg(abi.ErrnoFault)
		return
	}
	if err := sqlCounts(raw); err != nil {
		c.errMsg = err.Error()
		s[0] = neg(abi.ErrnoTooLarge)
		return
	}
	stmts, err := abi.DecodeStatements(raw)
	if err != nil {
		c.errMsg = err.Error()
		s[0] = neg(abi.ErrnoInvalid)
		return
	}
	rs, err := c.env.SQL(c.ctx, stmts)
	if err != nil {
		e := c.errno(err)
		if e == abi.ErrnoIO {
			e = abi.ErrnoSQL
		}
		s[0] = neg(e)
		return
	}
	s[0] = c.reply(mod, abi.AppendResults(nil, rs), u32(s[2]), u32(s[3]))
}

// sqlCounts walks an encoded batch without allocating and reports a
// statement or argument count above the ABI limits. Decoding first would let
// a 16 MiB batch of one-byte NULL arguments cost the host 16 bytes of []any
// per byte. Malformed input is left for the decoder to report.
func sqlCounts(raw []byte) error {
	d := abi.NewDecoder(raw)
	n := d.U32()
	if n > abi.MaxSQLStatements {
		return fmt.Errorf("%d statements in one batch, at most %d allowed", n, abi.MaxSQLStatements)
	}
	for i := uint32(0); i < n && d.Err() == nil; i++ {
		d.Bytes() // SQL text
		na := d.U32()
		if na > abi.MaxSQLArgs {
			return fmt.Errorf("statement %d: %d arguments, at most %d allowed", i+1, na, abi.MaxSQLArgs)
		}
		for j := uint32(0); j < na && d.Err() == nil; j++ {
			switch d.U8() {
			case abi.TagInt, abi.TagFloat:
				d.U64()
			case abi.TagText, abi.TagBlob:
				d.Bytes()
			}
		}
	}
	return nil
}

// maxDataPointBytes is the largest encoding of a data point within the
// analytics limits; anything longer breaks one of them.
const maxDataPointBytes = 4 + abi.MaxAnalyticsIdx*(4+abi.MaxAnalyticsIdxB) +
	4 + abi.MaxAnalyticsBlob*4 + abi.MaxAnalyticsBlobTotal +
	4 + abi.MaxAnalyticsDbl*8

// analytics_write(point_ptr, point_len) -> i32: records an encoded
// abi.DataPoint (group "analytics"); -ErrnoAnalytics when rejected.
func analyticsWrite(c *call, mod api.Module, s []uint64) {
	raw, ok := read(mod, u32(s[0]), u32(s[1]))
	if !ok {
		s[0] = neg(abi.ErrnoFault)
		return
	}
	if len(raw) > maxDataPointBytes {
		c.errMsg = fmt.Sprintf("data point of %d bytes exceeds the analytics limits (%d bytes)", len(raw), maxDataPointBytes)
		s[0] = neg(abi.ErrnoTooLarge)
		return
	}
	dp, err := abi.DecodeDataPoint(raw)
	if err != nil {
		c.errMsg = err.Error()
		s[0] = neg(abi.ErrnoInvalid)
		return
	}
	if err := c.env.WriteDataPoint(dp); err != nil {
		e := c.errno(err)
		if e == abi.ErrnoIO {
			e = abi.ErrnoAnalytics
		}
		s[0] = neg(e)
		return
	}
	s[0] = 0
}
