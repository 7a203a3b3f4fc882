package wasm

import (
	"fmt"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
)

// TestTraceListsAreClipped: every list a trace line shows stops after
// traceListItems items (log fields: twice as many) with "…".
func TestTraceListsAreClipped(t *testing.T) {
	var keys []string
	var kvs []abi.KV
	var args []any
	var stmts []abi.Statement
	var rs []abi.Result
	var doubles []float64
	var fields []abi.Header
	for i := range 10 {
		keys = append(keys, fmt.Sprint("k", i))
		kvs = append(kvs, abi.KV{Key: fmt.Sprint("k", i), Value: []byte{'v'}})
		args = append(args, int64(i))
		stmts = append(stmts, abi.Statement{SQL: fmt.Sprint("SELECT ", i), Args: args[:i%3]})
		rs = append(rs, abi.Result{RowsAffected: int64(i)})
		doubles = append(doubles, float64(i)/2)
		fields = append(fields, abi.Header{Name: fmt.Sprint("f", i), Value: fmt.Sprint(i)})
	}
	for _, c := range []struct{ got, want string }{
		{keyList(keys), `10 keys ["k0" "k1" "k2" "k3" …]`},
		{keyList(keys[:2]), `2 keys ["k0" "k1"]`},
		{keyList(nil), `0 keys []`},
		{kvList(kvs, "entries"), `10 entries ["k0"=1 byte "v" "k1"=1 byte "v" "k2"=1 byte "v" "k3"=1 byte "v" …]`},
		{kvList(kvs[:1], "found"), `1 found ["k0"=1 byte "v"]`},
		{kvList(nil, "found"), `0 found`},
		{statements([]abi.Statement{{SQL: "SELECT ?", Args: args}}), `1 statement: "SELECT ?" [0 1 2 3 …]`},
		{statements(stmts), `10 statements: "SELECT 0"; "SELECT 1" [0]; "SELECT 2" [0 1]; "SELECT 3"; …`},
		{statements(nil), `0 statements`},
		{results(rs), `10 results: 0 affected, 1 affected, 2 affected, 3 affected, …`},
		{results(rs[:1]), `1 result: 0 affected`},
		{dataPoint(abi.DataPoint{Indexes: keys[:5], Doubles: doubles}), `indexes=["k0" "k1" "k2" "k3" "k4"] blobs=0 (0 bytes) doubles=[0 0.5 1 1.5 …]`},
		{dataPoint(abi.DataPoint{}), `indexes=[] blobs=0 (0 bytes) doubles=[]`},
		{logRecord(abi.LogInfo, abi.LogRecord{Message: "m", Fields: fields}), `info "m" f0="0" f1="1" f2="2" f3="3" f4="4" f5="5" f6="6" f7="7" …`},
		{logRecord(abi.LogDebug, abi.LogRecord{Message: "m"}), `debug "m"`},
	} {
		if c.got != c.want {
			t.Errorf("got  %s\nwant %s", c.got, c.want)
		}
	}
}
