package wasmbin

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host/internal/wasm/wasmtest"
	"github.com/tetratelabs/wazero"
)

// TestInstrumentRefuses: a module naming a global it does not define (which
// after the rewrite could be the interrupt flag) or exporting a reserved
// name is refused with the reason. The engine's TestInstrumentRefusedAtLoad
// checks Load refuses them as invalid modules.
func TestInstrumentRefuses(t *testing.T) {
	for _, tc := range wasmtest.Uninstrumentable() {
		t.Run(tc.Name, func(t *testing.T) {
			bin, err := Preflight(tc.Module.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Instrument(bin); err == nil || !strings.Contains(err.Error(), tc.Want) {
				t.Fatalf("Instrument = %v, want an error containing %q", err, tc.Want)
			}
		})
	}
	// wasmtest cannot import this package: its names are literals.
	var names []string
	for _, tc := range wasmtest.Uninstrumentable() {
		names = append(names, tc.Name)
	}
	for _, name := range []string{InterruptExport, StartExport} {
		if !slices.Contains(names, "reserved export "+name) {
			t.Errorf("wasmtest.Uninstrumentable has no case exporting %q: %q", name, names)
		}
	}
}

// TestInstrumentOpcodes: the rewrite walks every kind of immediate (block
// types, br_table, memargs, constants, bulk memory, SIMD, typed select)
// and puts one check after each loop; wazero compiles the result. The
// engine's TestInstrumentedOpcodesRun runs it.
func TestInstrumentOpcodes(t *testing.T) {
	body, loops := wasmtest.EveryImmediate()
	m := wasmtest.Plugin()
	m.SetExport(abi.ExportAlarm, wasmtest.Func{Params: []wasmtest.ValType{wasmtest.I32}, Results: []wasmtest.ValType{wasmtest.I32}, Body: body})
	out, err := Instrument(m.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	check := loopCheck(0, 1) // the module had no globals: the flag is 0, the budget 1
	if n := bytes.Count(out, check); n != loops {
		t.Fatalf("%d checks inserted, want %d (one per loop)", n, loops)
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
}

// TestInstrumentStartSection: the start section is removed and its
// function exported as StartExport, next to the interrupt flag.
func TestInstrumentStartSection(t *testing.T) {
	m := wasmtest.Plugin()
	idx := uint32(len(m.Imports) + len(m.Funcs))
	m.Funcs = append(m.Funcs, wasmtest.Func{})
	m.Start = &idx
	out, err := Instrument(m.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	r := &reader{b: out, off: 8}
	for r.off < len(r.b) && r.err == nil {
		id, size := r.byte(), r.u32()
		if id == 8 {
			t.Fatal("the start section is still there")
		}
		r.skip(uint64(size))
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	mod, err := rt.InstantiateWithConfig(ctx, out, wazero.NewModuleConfig().WithStartFunctions())
	if err != nil {
		t.Fatalf("the instrumented module does not instantiate: %v", err)
	}
	if mod.ExportedFunction(StartExport) == nil {
		t.Fatalf("no export %q", StartExport)
	}
	if g := mod.ExportedGlobal(InterruptExport); g == nil || g.Get() != 0 {
		t.Fatalf("export %q = %v, want a global holding 0", InterruptExport, g)
	}
}
