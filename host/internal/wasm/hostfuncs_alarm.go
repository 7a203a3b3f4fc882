package wasm

import (
	"fmt"
	"math"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/tetratelabs/wazero/api"
)

// Alarm host functions (group "alarm"): the shard's single alarm, through
// Env.SetAlarm, GetAlarm and DeleteAlarm. Alarm changes are part of the
// event, committed with its writes.

// alarmFuncs are the host functions of group "alarm".
var alarmFuncs = []hostFunc{alarmSet, alarmGet, alarmDelete}

// maxAlarmMs is the latest alarm time accepted, 2262-04-11: the time until
// any later alarm overflows a time.Duration, and the host's scheduler,
// handed a negative wait, would fire and re-arm at once, forever.
const maxAlarmMs = math.MaxInt64 / int64(time.Millisecond)

// alarmSet is alarm_set(unix_ms i64) -> i32: sets the shard's alarm,
// replacing any; a time in the past fires at once.
//
// Parameters:
//   - unix_ms: when, in Unix milliseconds.
//
// Result: 0. Errno: ErrnoInvalid for a time ≤ 0 or after maxAlarmMs
// ("alarm time … ms is outside 1..9223372036854 (2262-04-11)").
var alarmSet = hostFunc{abi.FnAlarmSet, alarmSetFn, p(i64), p(i32)}

func alarmSetFn(c *call, mod api.Module, s []uint64) {
	if ms := int64(s[0]); ms <= 0 || ms > maxAlarmMs {
		c.fail(s, abi.ErrnoInvalid, fmt.Sprintf("alarm time %d ms is outside 1..%d (2262-04-11)", ms, maxAlarmMs))
		return
	}
	c.answer(s, c.env.SetAlarm(int64(s[0])))
}

// alarmGet is alarm_get() -> i64: the alarm's time.
//
// Result: the alarm's Unix milliseconds. Errno: ErrnoNotFound when no
// alarm is set.
var alarmGet = hostFunc{abi.FnAlarmGet, alarmGetFn, nil, p(i64)}

func alarmGetFn(c *call, mod api.Module, s []uint64) {
	if at, ok, err := c.env.GetAlarm(); c.found(s, ok, err) {
		s[0] = uint64(at)
	}
}

// alarmDelete is alarm_delete() -> i32: removes the alarm, if any.
//
// Result: 0, whether or not an alarm was set.
var alarmDelete = hostFunc{abi.FnAlarmDelete, alarmDeleteFn, nil, p(i32)}

func alarmDeleteFn(c *call, mod api.Module, s []uint64) {
	c.answer(s, c.env.DeleteAlarm())
}
