package wasm

import (
	"reflect"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
)

// Tests of the log host function, log_write.

// TestLogHostileArguments: log_write answers every argument, bad ones
// included, with 0 or an errno.
func TestLogHostileArguments(t *testing.T) {
	d := newHostileDriver(t)
	validLog := abi.AppendLogRecord(nil, &abi.LogRecord{Message: "hi"})
	runSteps(t, d, []step{
		{"log record past memory", nil, "log_write", []uint64{1, oob, 1}, eFault, ""},
		{"log record over the limit", nil, "log_write", []uint64{1, offBig, abi.MaxLogMessage + 1}, eTooLarge, ""},
		{"log record malformed", le32(9), "log_write", []uint64{1, offData, 4}, eInvalid, ""},
		{"log at level 2^32-1", validLog, "log_write", []uint64{neg1, offData, uint64(len(validLog))}, eInvalid, ""},
		{"log at level 4", validLog, "log_write", []uint64{4, offData, uint64(len(validLog))}, eInvalid, ""},
		{"log at level 3", validLog, "log_write", []uint64{3, offData, uint64(len(validLog))}, 0, ""},
	})
	if d.env.logs != 1 || d.env.lastLevel != 3 {
		t.Fatalf("%d records logged, the last at level %d; want 1 at level 3 (unknown levels refused)", d.env.logs, d.env.lastLevel)
	}
}

// TestLogRecord: the record reaches the Env decoded, with its level.
func TestLogRecord(t *testing.T) {
	d := newHostileDriver(t)
	rec := abi.LogRecord{Message: "m", Fields: []abi.Header{{Name: "k", Value: "v"}, {Name: "k", Value: "w"}}}
	enc := abi.AppendLogRecord(nil, &rec)
	runSteps(t, d, []step{{"log", enc, "log_write", []uint64{3, offData, uint64(len(enc))}, 0, ""}})
	if d.env.lastLevel != 3 || !reflect.DeepEqual(d.env.lastLog, rec) {
		t.Fatalf("logged %d %+v, want 3 %+v", d.env.lastLevel, d.env.lastLog, rec)
	}
}

// TestLogDoesNotAmplify: a record of 16 MiB is refused without copying it.
func TestLogDoesNotAmplify(t *testing.T) {
	checkNoAmplify(t, []amplifyCase{
		{"log record of 16 MiB", nil, abi.FnLogWrite, []uint64{1, amplifyAt, amplifyBig}, eTooLarge},
	})
}
