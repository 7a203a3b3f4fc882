package wasm

import (
	"encoding/binary"
	"reflect"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
)

// Tests of the SQL host function, sql_exec.

// sqlBatch encodes n statements "S" of args NULL arguments each.
func sqlBatch(n, args int) []byte {
	b := le32(uint32(n))
	for i := 0; i < n; i++ {
		b = append(b, le32(1)...)
		b = append(b, 'S')
		b = append(b, le32(uint32(args))...)
		for j := 0; j < args; j++ {
			b = append(b, abi.TagNull)
		}
	}
	return b
}

// TestSQLHostileArguments: sql_exec answers every argument, bad ones
// included, with a length or an errno; counts over the limits are refused
// before decoding.
func TestSQLHostileArguments(t *testing.T) {
	d := newHostileDriver(t)
	validStmts, _ := abi.AppendStatements(nil, []abi.Statement{{SQL: "SELECT 1"}})
	tooMany, tooManyArgs, oneArg := sqlBatch(abi.MaxSQLStatements+1, 0), sqlBatch(1, abi.MaxSQLArgs+1), sqlBatch(1, 1)
	runSteps(t, d, []step{
		{"sql past memory", nil, "sql_exec", []uint64{oob, 4, buf, 16}, eFault, ""},
		{"sql over 16 MiB", nil, "sql_exec", []uint64{0, abi.MaxSQLPayload + 1, buf, 16}, eTooLarge, ""},
		{"sql 1001 statements", tooMany, "sql_exec", []uint64{offData, uint64(len(tooMany)), buf, 16}, eTooLarge, ""},
		{"sql 101 arguments", tooManyArgs, "sql_exec", []uint64{offData, uint64(len(tooManyArgs)), buf, 16}, eTooLarge, ""},
		{"sql count 2^32-1", le32(0xffffffff), "sql_exec", []uint64{offData, 4, buf, 16}, eTooLarge, ""},
		{"sql bad value tag", append(oneArg[:len(oneArg)-1], 9), "sql_exec", []uint64{offData, uint64(len(oneArg)), buf, 16}, eInvalid, ""},
		{"sql results into a buffer past memory", validStmts, "sql_exec", []uint64{offData, uint64(len(validStmts)), oob, 1 << 20}, eFault, ""},
	})
}

// TestSQLResults: the statements reach the Env decoded and its results
// come back encoded; a failed statement answers ErrnoSQL with the
// database's message.
func TestSQLResults(t *testing.T) {
	d := newHostileDriver(t)
	stmts := []abi.Statement{{SQL: "SELECT ?", Args: []any{int64(1), "x", []byte{1}, nil, 1.5}}}
	enc, err := abi.AppendStatements(nil, stmts)
	if err != nil {
		t.Fatal(err)
	}
	want := abi.AppendResults(nil, []abi.Result{{Columns: []string{"x"}, Rows: [][]any{{int64(0)}}}})
	failing, _ := abi.AppendStatements(nil, []abi.Statement{{SQL: "FAIL"}})
	const msg = "statement 1: syntax error"
	runSteps(t, d, []step{
		{"select", enc, "sql_exec", []uint64{offData, uint64(len(enc)), buf, 256}, int64(len(want)), string(want)},
		{"failing statement", failing, "sql_exec", []uint64{offData, uint64(len(failing)), buf, 256}, -int64(abi.ErrnoSQL), ""},
		{"its message", nil, "error_message", []uint64{buf, 100}, int64(len(msg)), msg},
	})
	if !reflect.DeepEqual(d.env.lastSQL, stmts) {
		t.Fatalf("the Env got %#v, want %#v", d.env.lastSQL, stmts)
	}
}

// TestSQLEnvErrors: a failure of the Env answers the errno call.errno maps
// it to, ErrnoSQL for what would be ErrnoIO; an injected crash traps.
func TestSQLEnvErrors(t *testing.T) {
	d := newHostileDriver(t)
	enc, _ := abi.AppendStatements(nil, []abi.Statement{{SQL: "SELECT 1"}})
	d.write(t, offData, enc)
	checkEnvErrors(t, d, abi.ErrnoSQL, "sql_exec", offData, uint64(len(enc)), buf, 16)
}

// TestSQLDoesNotAmplify: a 16 MiB batch of one-byte NULL arguments is
// refused before it is decoded.
func TestSQLDoesNotAmplify(t *testing.T) {
	le := binary.LittleEndian
	nullArgs := append(le.AppendUint32(le.AppendUint32(le.AppendUint32(nil, 1), 0), 16<<20-12), make([]byte, 16<<20-12)...)
	checkNoAmplify(t, []amplifyCase{
		{"SQL with 16M NULL arguments", nullArgs, abi.FnSQLExec, []uint64{amplifyAt, amplifyBig, 0, 0}, eTooLarge},
	})
}
