package wasm

import (
	"testing"

	"github.com/edgeshard/edgeshard/abi"
)

// Tests of the core host functions, result_take and error_message.

// TestResultHostileArguments: result_take and error_message answer every
// argument, bad ones included, with a length or an errno. The held result
// and the message come from calls of other groups.
func TestResultHostileArguments(t *testing.T) {
	d := newHostileDriver(t)
	runSteps(t, d, []step{
		{"take with nothing held", nil, "result_take", []uint64{buf, 16}, eNoResult, ""},
		{"no error message yet", nil, "error_message", []uint64{buf, 16}, 0, ""},
		{"put", nil, "storage_put", []uint64{offKey, 1, offVal, 1, 0}, 0, ""},
		{"get into no buffer holds the result", nil, "storage_get", []uint64{offKey, 1, 0, 0}, 1, ""},
		{"take into a buffer past memory", nil, "result_take", []uint64{oob, 16}, eFault, ""},
		{"take into a buffer still too small", nil, "result_take", []uint64{buf, 0}, 1, ""},
		{"take", nil, "result_take", []uint64{buf, 16}, 1, "v"},
		{"take twice", nil, "result_take", []uint64{buf, 16}, eNoResult, ""},
		{"analytics with a failed message set", le32(5), "analytics_write", []uint64{offData, 4}, eInvalid, ""},
		{"error message into a buffer past memory", nil, "error_message", []uint64{oob, 100}, eFault, ""},
		{"error message truncated", nil, "error_message", []uint64{buf, 5}, 5, "abi: "},
	})
}

// TestResultHeldAndTaken: a result larger than the guest's buffer is held
// whole and delivered by result_take; a later call answering through a
// buffer drops it.
func TestResultHeldAndTaken(t *testing.T) {
	d := newHostileDriver(t)
	stmts, err := abi.AppendStatements(nil, []abi.Statement{{SQL: "SELECT 1"}, {SQL: "SELECT 2"}})
	if err != nil {
		t.Fatal(err)
	}
	want := abi.AppendResults(nil, []abi.Result{
		{Columns: []string{"x"}, Rows: [][]any{{int64(0)}}},
		{Columns: []string{"x"}, Rows: [][]any{{int64(1)}}},
	})
	n := int64(len(want))
	runSteps(t, d, []step{
		{"sql into a small buffer", stmts, "sql_exec", []uint64{offData, uint64(len(stmts)), buf, 8}, n, ""},
		{"take", nil, "result_take", []uint64{buf, 256}, n, string(want)},
		{"sql again", stmts, "sql_exec", []uint64{offData, uint64(len(stmts)), buf, 8}, n, ""},
		{"var into a large buffer", nil, "var_get", []uint64{offVar, 1, buf, 16}, 3, "abc"},
		{"take after another reply", nil, "result_take", []uint64{buf, 256}, eNoResult, ""},
	})
}

// TestErrorMessageStays: the message of the last failure with one stays
// through successful calls and failures without one, and a new event
// starts without it; the same when the event is traced.
func TestErrorMessageStays(t *testing.T) {
	t.Run("untraced", func(t *testing.T) { checkErrorMessageStays(t, false) })
	t.Run("traced", func(t *testing.T) { checkErrorMessageStays(t, true) })
}

func checkErrorMessageStays(t *testing.T, traced bool) {
	d := newHostileDriver(t)
	reset := d.reset
	if traced {
		reset = func() { d.resetWith(&tracingEnv{fakeEnv: d.env}) }
	}
	reset()
	const msg = "key of 2049 bytes exceeds 2048"
	runSteps(t, d, []step{
		{"key too large", nil, "storage_delete", []uint64{offBig, abi.MaxKeySize + 1}, eTooLarge, ""},
		{"message", nil, "error_message", []uint64{buf, 100}, int64(len(msg)), msg},
		{"a successful call", nil, "storage_put", []uint64{offKey, 1, offVal, 1, 0}, 0, ""},
		{"a fault", nil, "storage_get", []uint64{oob, 1, buf, 16}, eFault, ""},
		{"not found", nil, "var_get", []uint64{offKey, 1, buf, 16}, eNotFound, ""},
		{"message still", nil, "error_message", []uint64{buf, 100}, int64(len(msg)), msg},
	})
	reset()
	runSteps(t, d, []step{{"a new event", nil, "error_message", []uint64{buf, 100}, 0, ""}})
}
