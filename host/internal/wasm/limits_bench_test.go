package wasm

import (
	"context"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
)

// BenchmarkEventBudget measures what charging the per-event budgets costs
// one host call: storage_put and log_write with limits (high enough never
// to refuse) and without (an Env that is not a Limiter).
func BenchmarkEventBudget(b *testing.B) {
	d := newDriver(b, newTestEngine(b, Config{}))
	const offK, offRec = 0x2000, 0x2600
	rec := abi.AppendLogRecord(nil, &abi.LogRecord{Message: "m"})
	d.inst.mod.Memory().Write(offK, []byte("k"))
	d.inst.mod.Memory().Write(offRec, rec)
	logged := &discardLogEnv{fakeEnv: d.env}
	for _, bc := range []struct {
		fn   string
		args []uint64
	}{
		{abi.FnStoragePut, []uint64{offK, 1, offK, 1, 0}},
		{abi.FnLogWrite, []uint64{1, offRec, uint64(len(rec))}},
	} {
		for _, mode := range []struct {
			name string
			env  Env
		}{
			{"off", logged},
			{"on", &limitedDiscardEnv{discardLogEnv: logged, lim: EventLimits{WriteBytes: 1 << 62, WriteKeys: 1 << 62, LogLines: 1 << 62, LogBytes: 1 << 62}}},
		} {
			b.Run(bc.fn+"/"+mode.name, func(b *testing.B) {
				fn := d.inst.mod.ExportedFunction("loop_" + bc.fn)
				stack := make([]uint64, 1+len(bc.args))
				var x callCtx
				b.ReportAllocs()
				b.ResetTimer()
				cctx := x.reset(context.Background(), mode.env)
				x.c.begin(false)
				stack[0] = uint64(b.N)
				copy(stack[1:], bc.args)
				if err := fn.CallWithStack(cctx, stack); err != nil {
					b.Fatal(err)
				}
			})
		}
	}
}

// discardLogEnv is the fake Env without the records it would keep.
type discardLogEnv struct{ *fakeEnv }

func (e *discardLogEnv) Log(int32, abi.LogRecord) {}

// limitedDiscardEnv is discardLogEnv with limits never reached.
type limitedDiscardEnv struct {
	*discardLogEnv
	lim EventLimits
}

func (e *limitedDiscardEnv) BeginEvent(bool) *EventLimits { return &e.lim }

func (e *limitedDiscardEnv) LimitReached(string, string) {}
