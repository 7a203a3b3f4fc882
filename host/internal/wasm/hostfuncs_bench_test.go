package wasm

import (
	"context"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host/internal/wasm/wasmtest"
)

// BenchmarkHostCall measures one host function call from the guest (the
// driver's loop_<fn> exports call it b.N times in one guest call): the
// wrapper every host function runs in, argument reads, the Env call and
// the reply. ns/op is per host call; allocs/op must stay 0 for the calls
// that allocate nothing by contract.
func BenchmarkHostCall(b *testing.B) {
	d := newDriver(b, newTestEngine(b, Config{}))
	ctx, inst, env := context.Background(), d.inst, d.env
	if err := env.st.Put("k", []byte("value"), false); err != nil {
		b.Fatal(err)
	}
	if err := env.st.SetAlarm(1e12); err != nil {
		b.Fatal(err)
	}
	const (
		offK    = 0x2000 // "k"
		offA    = 0x2100 // "A"
		offKeys = 0x2200 // Keys ["k"]
		offOpts = 0x2400 // ListOptions{Prefix: "k"}
		offRec  = 0x2600 // LogRecord
		offPt   = 0x2800 // DataPoint
		buf     = wasmtest.Scratch
	)
	mem := inst.mod.Memory()
	keys := abi.AppendKeys(nil, []string{"k"})
	opts := abi.AppendListOptions(nil, &abi.ListOptions{Prefix: "k"})
	rec := abi.AppendLogRecord(nil, &abi.LogRecord{Message: "m"})
	pt := abi.AppendDataPoint(nil, &abi.DataPoint{Doubles: []float64{1}})
	mem.Write(offK, []byte("k"))
	mem.Write(offA, []byte("A"))
	mem.Write(offKeys, keys)
	mem.Write(offOpts, opts)
	mem.Write(offRec, rec)
	mem.Write(offPt, pt)
	for _, bc := range []struct {
		fn   string
		args []uint64
	}{
		{abi.FnErrorMessage, []uint64{buf, 64}},
		{abi.FnResultTake, []uint64{buf, 64}},
		{abi.FnStorageGet, []uint64{offK, 1, buf, 64}},
		{abi.FnStorageGetMulti, []uint64{offKeys, uint64(len(keys)), buf, 64}},
		{abi.FnStorageDelete, []uint64{offA, 1}},
		{abi.FnStorageList, []uint64{offOpts, uint64(len(opts)), buf, 64}},
		{abi.FnAlarmGet, nil},
		{abi.FnVarGet, []uint64{offA, 1, buf, 64}},
		{abi.FnLogWrite, []uint64{1, offRec, uint64(len(rec))}},
		{abi.FnAnalyticsWrite, []uint64{offPt, uint64(len(pt))}},
	} {
		b.Run(bc.fn, func(b *testing.B) {
			fn := inst.mod.ExportedFunction("loop_" + bc.fn)
			stack := make([]uint64, 1+len(bc.args))
			var x callCtx
			b.ReportAllocs()
			b.ResetTimer()
			cctx := x.reset(ctx, env)
			stack[0] = uint64(b.N)
			copy(stack[1:], bc.args)
			if err := fn.CallWithStack(cctx, stack); err != nil {
				b.Fatal(err)
			}
		})
	}
}
