package wasm

import (
	"math"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
)

// Tests of the alarm host functions.

// TestAlarmHostileArguments: alarm_set refuses times outside
// 1..maxAlarmMs; the alarm set is the one alarm_get answers until
// alarm_delete.
func TestAlarmHostileArguments(t *testing.T) {
	d := newHostileDriver(t)
	runSteps(t, d, []step{
		{"alarm at 0", nil, "alarm_set", []uint64{0}, eInvalid, ""},
		{"alarm at -1", nil, "alarm_set", []uint64{math.MaxUint64}, eInvalid, ""},
		{"alarm at MaxInt64", nil, "alarm_set", []uint64{math.MaxInt64}, eInvalid, ""},
		{"alarm past 2262", nil, "alarm_set", []uint64{uint64(maxAlarmMs) + 1}, eInvalid, ""},
		{"alarm at the latest time", nil, "alarm_set", []uint64{uint64(maxAlarmMs)}, 0, ""},
		{"alarm", nil, "alarm_set", []uint64{1e12}, 0, ""},
		{"alarm get", nil, "alarm_get", nil, 1e12, ""},
		{"alarm delete", nil, "alarm_delete", nil, 0, ""},
		{"alarm get after delete", nil, "alarm_get", nil, eNotFound, ""},
		{"alarm delete without an alarm", nil, "alarm_delete", nil, 0, ""},
	})
	const msg = "alarm time 0 ms is outside 1..9223372036854 (2262-04-11)"
	runSteps(t, d, []step{
		{"alarm at 0", nil, "alarm_set", []uint64{0}, eInvalid, ""},
		{"its message", nil, "error_message", []uint64{buf, 100}, int64(len(msg)), msg},
	})
}

// TestAlarmEnvErrors: a failure of the Env's alarm methods answers the
// errno call.errno maps it to, with its message; an injected crash traps.
func TestAlarmEnvErrors(t *testing.T) {
	d := newHostileDriver(t)
	checkEnvErrors(t, d, abi.ErrnoIO, "alarm_set", 1e12)
	checkEnvErrors(t, d, abi.ErrnoIO, "alarm_get")
	checkEnvErrors(t, d, abi.ErrnoIO, "alarm_delete")
}
