package wasmbin_test

import (
	"bytes"
	"context"
	"os"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host/internal/wasm/wasmbin"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// TestMergeDataGoGuest: a Go guest (examples/counter) starts with the
// same memory, byte for byte, from its merged data section of a few
// segments as from the tens of thousands the Go linker wrote.
func TestMergeDataGoGuest(t *testing.T) {
	bin, err := os.ReadFile(testutil.Plugin(t, "examples/counter"))
	if err != nil {
		t.Fatal(err)
	}
	code, err := wasmbin.Preflight(bin)
	if err != nil {
		t.Fatal(err)
	}
	merged := wasmbin.MergeData(code)
	if bytes.Equal(merged, code) {
		t.Fatal("nothing merged")
	}
	ctx := context.Background()
	// The interpreter: no machine code to generate for a 3 MB guest.
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer rt.Close(ctx)
	wasi_snapshot_preview1.MustInstantiate(ctx, rt)
	// Stubs for the host functions: no function runs, only the data
	// segments are applied.
	c, err := rt.CompileModule(ctx, code)
	if err != nil {
		t.Fatal(err)
	}
	stubs := rt.NewHostModuleBuilder(abi.ImportModule)
	for _, d := range c.ImportedFunctions() {
		if mod, name, _ := d.Import(); mod == abi.ImportModule {
			stubs.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(context.Context, api.Module, []uint64) {}),
				d.ParamTypes(), d.ResultTypes()).Export(name)
		}
	}
	if _, err := stubs.Instantiate(ctx); err != nil {
		t.Fatal(err)
	}
	memory := func(bin []byte) []byte {
		mod, err := rt.InstantiateWithConfig(ctx, bin, wazero.NewModuleConfig().WithStartFunctions().WithName(""))
		if err != nil {
			t.Fatal(err)
		}
		defer mod.Close(ctx)
		b, _ := mod.Memory().Read(0, mod.Memory().Size())
		return bytes.Clone(b)
	}
	if a, b := memory(code), memory(merged); !bytes.Equal(a, b) {
		t.Fatal("the merged Go guest starts with another memory")
	}
}
