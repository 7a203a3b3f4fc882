package wasm

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host/internal/wasm/wasmtest"
	"github.com/tetratelabs/wazero"
)

var i64Result = []wasmtest.ValType{wasmtest.I64}

// TestInterruptStopsRunawayGuest: a guest looping forever in fetch or in
// alloc is stopped at its event deadline (ErrTimeout) or when its context
// is cancelled, and the instance is dead afterwards.
func TestInterruptStopsRunawayGuest(t *testing.T) {
	eng := newTestEngine(t, Config{})
	for _, tc := range []struct {
		name   string
		export string
		f      wasmtest.Func
		cancel bool
		event  bool // a context of EventRoot: the reusable timer
		want   error
	}{
		{"fetch deadline", abi.ExportFetch, wasmtest.Func{Params: []wasmtest.ValType{wasmtest.I32, wasmtest.I32}, Results: i64Result, Body: wasmtest.Forever()}, false, false, ErrTimeout},
		{"fetch event deadline", abi.ExportFetch, wasmtest.Func{Params: []wasmtest.ValType{wasmtest.I32, wasmtest.I32}, Results: i64Result, Body: wasmtest.Forever()}, false, true, ErrTimeout},
		{"alloc deadline", abi.ExportAlloc, wasmtest.Func{Params: []wasmtest.ValType{wasmtest.I32}, Results: []wasmtest.ValType{wasmtest.I32}, Body: wasmtest.Forever()}, false, false, ErrTimeout},
		{"alloc event deadline", abi.ExportAlloc, wasmtest.Func{Params: []wasmtest.ValType{wasmtest.I32}, Results: []wasmtest.ValType{wasmtest.I32}, Body: wasmtest.Forever()}, false, true, ErrTimeout},
		{"fetch cancelled", abi.ExportFetch, wasmtest.Func{Params: []wasmtest.ValType{wasmtest.I32, wasmtest.I32}, Results: i64Result, Body: wasmtest.Forever()}, true, false, ErrTrap},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := wasmtest.Plugin()
			m.SetExport(tc.export, tc.f)
			_, inst := startInstance(t, eng, m.Bytes())
			var ctx context.Context
			var cancel context.CancelFunc
			switch {
			case tc.cancel:
				ctx, cancel = context.WithCancel(context.Background())
				time.AfterFunc(100*time.Millisecond, cancel)
			case tc.event:
				ctx, cancel = context.WithTimeout(EventRoot, 100*time.Millisecond)
			default:
				ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
			}
			defer cancel()
			t0 := time.Now()
			_, err := inst.Fetch(ctx, nil, &abi.Request{Method: "GET", Path: "/"})
			if !errors.Is(err, tc.want) {
				t.Fatalf("Fetch = %v, want %v", err, tc.want)
			}
			if d := time.Since(t0); d > 5*time.Second {
				t.Fatalf("stopping the guest took %v", d)
			}
			if inst.Err() == nil {
				t.Fatal("the instance is still usable after it was stopped")
			}
		})
	}
}

// TestInterruptLateRaiseKeepsInstance: a deadline that passes just after a
// call returned (the flag raised, no trap) leaves the instance usable, and
// the next call is not stopped by the stale flag.
func TestInterruptLateRaiseKeepsInstance(t *testing.T) {
	eng := newTestEngine(t, Config{})
	_, inst := startInstance(t, eng, wasmtest.Plugin().Bytes())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := inst.intr.arm(ctx); err != nil {
		t.Fatal(err)
	}
	inst.intr.raise(context.DeadlineExceeded) // what the deadline does, after the guest returned
	if inst.intr.disarm() == nil {
		t.Fatal("disarm did not report the raised flag")
	}
	if v := inst.intr.flag.Get(); v != 0 {
		t.Fatalf("flag = %d after disarm, want 0", v)
	}
	inst.intr.raise(context.DeadlineExceeded) // a raise after disarm must not touch the flag
	inst.intr.raiseTimed()
	if v := inst.intr.flag.Get(); v != 0 {
		t.Fatalf("flag = %d after a raise outside a call, want 0", v)
	}
	for i := 0; i < 3; i++ {
		if _, err := inst.Fetch(ctx, nil, &abi.Request{Method: "GET", Path: "/"}); err != nil {
			t.Fatalf("Fetch %d = %v", i, err)
		}
	}
}

// TestInstrumentRefuses: a module naming a global it does not define (which
// after the rewrite could be the interrupt flag) or exporting a reserved
// name is refused at load with the reason.
func TestInstrumentRefuses(t *testing.T) {
	eng := newTestEngine(t, Config{})
	for _, tc := range []struct {
		name   string
		mutate func(*wasmtest.Module)
		want   string
	}{
		{"global.set of an undefined global", func(m *wasmtest.Module) {
			m.SetExport(abi.ExportAlarm, wasmtest.Func{Params: []wasmtest.ValType{wasmtest.I32}, Results: []wasmtest.ValType{wasmtest.I32},
				Body: wasmtest.Code(wasmtest.I32Const(0), []byte{0x24, 0x00}, wasmtest.I32Const(0))})
		}, "global 0 does not exist (the module has 0)"},
		{"reserved export " + InterruptExport, func(m *wasmtest.Module) {
			m.Exports[InterruptExport] = m.Exports[abi.ExportInitialize]
		}, `exports "edgeshard_interrupt", a name the host reserves`},
		{"reserved export " + StartExport, func(m *wasmtest.Module) {
			m.Exports[StartExport] = m.Exports[abi.ExportInitialize]
		}, `exports "edgeshard_start_section", a name the host reserves`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := wasmtest.Plugin()
			tc.mutate(m)
			_, err := eng.Load(context.Background(), m.Bytes(), nil)
			if !errors.Is(err, ErrInvalidModule) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load = %v, want ErrInvalidModule containing %q", err, tc.want)
			}
		})
	}
}

// TestInstrumentStartSection: a start section still runs, once, before
// _initialize.
func TestInstrumentStartSection(t *testing.T) {
	eng := newTestEngine(t, Config{})
	m := wasmtest.Plugin()
	// start: mem[0] += 1; _initialize: mem[4] = mem[0] * 10
	idx := uint32(len(m.Imports) + len(m.Funcs))
	m.Funcs = append(m.Funcs, wasmtest.Func{Body: wasmtest.Code(
		wasmtest.I32Const(0), wasmtest.I32Const(0), wasmtest.Mem(wasmtest.OpI32Load, 0),
		wasmtest.I32Const(1), wasmtest.Op(0x6a), wasmtest.Mem(wasmtest.OpI32Store, 0))})
	m.Start = &idx
	m.SetExport(abi.ExportInitialize, wasmtest.Func{Body: wasmtest.Code(
		wasmtest.I32Const(4), wasmtest.I32Const(0), wasmtest.Mem(wasmtest.OpI32Load, 0),
		wasmtest.I32Const(10), wasmtest.Op(0x6c), wasmtest.Mem(wasmtest.OpI32Store, 0))})
	_, inst := startInstance(t, eng, m.Bytes())
	a, _ := inst.mod.Memory().ReadUint32Le(0)
	b, _ := inst.mod.Memory().ReadUint32Le(4)
	if a != 1 || b != 10 {
		t.Fatalf("mem[0]=%d mem[4]=%d, want 1 and 10 (start once, then _initialize)", a, b)
	}
}

// TestInstrumentOpcodes: the rewrite walks every kind of immediate (block
// types, br_table, memargs, constants, bulk memory, SIMD, typed select)
// and puts one check after each loop; wazero compiles the result.
func TestInstrumentOpcodes(t *testing.T) {
	v128 := func(b byte) []byte { return append([]byte{0xfd, 12}, bytes.Repeat([]byte{b}, 16)...) }
	shuffle := append([]byte{0xfd, 13}, []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}...)
	body := wasmtest.Code(
		[]byte{0x02, 0x40, 0x03, 0x40},                             // block, loop
		wasmtest.I32Const(0), []byte{0x0e, 0x02, 0x01, 0x00, 0x01}, // br_table [1 0] 1: out of the block
		[]byte{0x0b, 0x0b},                                                                       // end, end
		wasmtest.I32Const(0), wasmtest.I32Const(0), wasmtest.I32Const(0), []byte{0xfc, 10, 0, 0}, // memory.copy
		wasmtest.I32Const(0), wasmtest.I32Const(0), wasmtest.I32Const(0), []byte{0xfc, 11, 0}, // memory.fill
		[]byte{0x43, 0, 0, 0x80, 0x3f, 0x1a},             // f32.const 1 drop
		[]byte{0x44, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0x1a}, // f64.const 1 drop
		wasmtest.I64Const(-1<<40), []byte{0x1a},
		v128(1), v128(2), shuffle, []byte{0xfd, 27, 0}, []byte{0x1a}, // i32x4.extract_lane 0, drop
		wasmtest.I32Const(0), []byte{0xfd, 0, 0x04, 0x00, 0x1a}, // v128.load, drop
		[]byte{0x03, 0x7f}, wasmtest.I32Const(7), []byte{0x0b, 0x1a}, // loop (result i32) 7 end drop
		wasmtest.I32Const(1), wasmtest.I32Const(2), wasmtest.I32Const(1), []byte{0x1c, 0x01, 0x7f}, // select (result i32)
		[]byte{0x04, 0x7f}, wasmtest.I32Const(3), []byte{0x05}, wasmtest.I32Const(4), []byte{0x0b}, // if/else (result i32)
	)
	m := wasmtest.Plugin()
	m.SetExport(abi.ExportAlarm, wasmtest.Func{Params: []wasmtest.ValType{wasmtest.I32}, Results: []wasmtest.ValType{wasmtest.I32}, Body: body})
	out, err := instrument(m.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	check := loopCheck(0, 1) // the module had no globals: the flag is 0, the budget 1
	if n := bytes.Count(out, check); n != 2 {
		t.Fatalf("%d checks inserted, want 2 (one per loop)", n)
	}
	rt := wazero.NewRuntime(context.Background())
	defer rt.Close(context.Background())
	c, err := rt.CompileModule(context.Background(), out)
	if err != nil {
		t.Fatalf("the instrumented module does not compile: %v", err)
	}
	if _, ok := c.ExportedFunctions()[abi.ExportAlarm]; !ok {
		t.Fatal("exports lost")
	}
	// And it still runs, through the engine.
	eng := newTestEngine(t, Config{})
	_, inst := startInstance(t, eng, m.Bytes())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := inst.Alarm(ctx, nil, 0); err != nil {
		t.Fatal(err)
	}
}

// TestInterruptTimerReuse: with event contexts the instance reuses one
// timer; a deadline from an earlier event (its timer stopped or firing
// late) never stops a later event, and a later event's own deadline still
// does.
func TestInterruptTimerReuse(t *testing.T) {
	eng := newTestEngine(t, Config{})
	m := wasmtest.Plugin()
	// alarm(n): spin n iterations, return 0 (a bounded loop).
	m.SetExport(abi.ExportAlarm, wasmtest.Func{Params: []wasmtest.ValType{wasmtest.I32}, Results: []wasmtest.ValType{wasmtest.I32},
		Body: wasmtest.Code([]byte{0x03, 0x40}, // loop
			wasmtest.LocalGet(0), wasmtest.I32Const(1), wasmtest.Op(0x6b), []byte{0x22, 0x00}, // n-- (local.tee)
			[]byte{0x0d, 0x00, 0x0b}, // br_if 0 while n != 0, end
			wasmtest.I32Const(0))})
	mod, inst := startInstance(t, eng, m.Bytes())
	// Many short events with deadlines that pass right after each returns.
	for i := 0; i < 200; i++ {
		ctx, cancel := context.WithTimeout(EventRoot, time.Duration(i%5)*time.Millisecond+time.Millisecond)
		_, err := inst.Alarm(ctx, nil, 1000)
		cancel()
		if err != nil && !errors.Is(err, ErrTimeout) {
			t.Fatalf("event %d: %v", i, err)
		}
		if err != nil { // stopped by its own deadline: start afresh
			inst.Close(context.Background())
			if inst, err = mod.Instantiate(context.Background(), InstanceConfig{}); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(time.Duration(i%3) * time.Millisecond)
	}
	// A long deadline is never cut short by the stale timers above.
	for i := 0; i < 20; i++ {
		ctx, cancel := context.WithTimeout(EventRoot, time.Minute)
		_, err := inst.Alarm(ctx, nil, 100000)
		cancel()
		if err != nil {
			t.Fatalf("long event %d: %v", i, err)
		}
	}
	// And its own deadline still stops a runaway event.
	ctx, cancel := context.WithTimeout(EventRoot, 50*time.Millisecond)
	defer cancel()
	if _, err := inst.Alarm(ctx, nil, 0); !errors.Is(err, ErrTimeout) { // n = 0 wraps: 2^32 iterations
		t.Fatalf("Alarm = %v, want ErrTimeout", err)
	}
}

// TestSpinningGuestDoesNotStallGC: a garbage collection needs every
// goroutine at a safe point; a guest spinning in machine code gives the
// Go runtime one every checkEvery iterations, so a collection started
// while a guest spins finishes at once rather than waiting for (or, with
// every P taken, dead-locking against) the event deadline.
func TestSpinningGuestDoesNotStallGC(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	eng := newTestEngine(t, Config{})
	m := wasmtest.Plugin()
	m.SetExport(abi.ExportFetch, wasmtest.Func{Params: []wasmtest.ValType{wasmtest.I32, wasmtest.I32}, Results: i64Result, Body: wasmtest.Forever()})
	_, inst := startInstance(t, eng, m.Bytes())
	ctx, cancel := context.WithTimeout(EventRoot, 4*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := inst.Fetch(ctx, nil, &abi.Request{Method: "GET", Path: "/"})
		done <- err
	}()
	time.Sleep(200 * time.Millisecond) // the guest is spinning
	for i := 0; i < 3; i++ {
		t0 := time.Now()
		runtime.GC()
		if d := time.Since(t0); d > time.Second {
			t.Fatalf("runtime.GC took %v while a guest spun", d)
		}
	}
	select {
	case err := <-done:
		t.Fatalf("the guest ended before its deadline: %v", err)
	default:
	}
	if err := <-done; !errors.Is(err, ErrTimeout) {
		t.Fatalf("Fetch = %v, want ErrTimeout", err)
	}
}

// startInstance loads bin and starts one instance of it; both are closed
// when the test ends.
func startInstance(t *testing.T, eng *Engine, bin []byte) (*Module, *Instance) {
	t.Helper()
	mod, err := eng.Load(context.Background(), bin, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mod.Close(context.Background()) })
	inst, err := mod.Instantiate(context.Background(), InstanceConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst.Close(context.Background()) })
	return mod, inst
}
