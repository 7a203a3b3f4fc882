package wasm

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host/internal/wasm/wasmtest"
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

// TestInstrumentRefusedAtLoad: a module naming a global it does not define
// (which after the rewrite could be the interrupt flag) or exporting a
// reserved name is refused at load with the reason (wasmbin's
// TestInstrumentRefuses checks the rewrite itself).
func TestInstrumentRefusedAtLoad(t *testing.T) {
	eng := newTestEngine(t, Config{})
	for _, tc := range wasmtest.Uninstrumentable() {
		t.Run(tc.Name, func(t *testing.T) {
			_, err := eng.Load(context.Background(), tc.Module.Bytes(), nil)
			if !errors.Is(err, ErrInvalidModule) || !strings.Contains(err.Error(), tc.Want) {
				t.Fatalf("Load = %v, want ErrInvalidModule containing %q", err, tc.Want)
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

// TestInstrumentedOpcodesRun: a function using every kind of immediate
// the rewrite steps over still runs after the rewrite, through the engine
// (wasmbin's TestInstrumentOpcodes checks the rewrite itself).
func TestInstrumentedOpcodesRun(t *testing.T) {
	body, _ := wasmtest.EveryImmediate()
	m := wasmtest.Plugin()
	m.SetExport(abi.ExportAlarm, wasmtest.Func{Params: []wasmtest.ValType{wasmtest.I32}, Results: []wasmtest.ValType{wasmtest.I32}, Body: body})
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
// Go runtime one every few thousand iterations (wasmbin's loop check), so a collection started
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
