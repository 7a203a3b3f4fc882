package wasmbin

import (
	"bytes"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/host/internal/wasm/wasmtest"
)

// TestPreflightKeepsValidModules: the checks before compilation accept
// every module the tests build by hand, unchanged unless a table needs its
// maximum.
func TestPreflightKeepsValidModules(t *testing.T) {
	for name, bin := range map[string][]byte{
		"plugin": wasmtest.Plugin().Bytes(),
		"driver": wasmtest.DriverPlugin(8).Bytes(),
		"clock":  wasmtest.InitSpinsAfter(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)).Bytes(),
	} {
		out, err := Preflight(bin)
		if err != nil || !bytes.Equal(out, bin) {
			t.Errorf("%s: preflight = %v (changed: %v)", name, err, !bytes.Equal(out, bin))
		}
	}
	m := wasmtest.Plugin()
	m.Tables = []wasmtest.Limits{{Min: 3, Max: -1}, {Min: 2, Max: 7}, {Min: 1, Max: 1 << 30}}
	out, err := Preflight(m.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	m.Tables = []wasmtest.Limits{{Min: 3, Max: 3}, {Min: 2, Max: 7}, {Min: 1, Max: MaxTableElems}}
	if want := m.Bytes(); !bytes.Equal(out, want) {
		t.Fatalf("capped tables:\n%x\nwant\n%x", out, want)
	}
}

// TestPreflightRefusesHugeTable: a table whose minimum exceeds
// MaxTableElems is refused, naming the limit.
func TestPreflightRefusesHugeTable(t *testing.T) {
	m := wasmtest.Plugin()
	m.Tables = []wasmtest.Limits{{Min: MaxTableElems + 1, Max: -1}}
	_, err := Preflight(m.Bytes())
	if err == nil || err.Error() != "table section: table of 1048577 entries exceeds the limit of 1048576" {
		t.Fatalf("Preflight of a huge table = %v", err)
	}
}

// TestPreflightRefusesAllocationBombs: a few bytes claiming billions of
// elements are refused without allocating for them (each of these killed
// the process with a fatal out-of-memory in wazero's decoder, or allocated
// 4 GiB). The engine's TestAllocationBombsAreRefused checks Load refuses
// them before wazero sees them.
func TestPreflightRefusesAllocationBombs(t *testing.T) {
	for name, bin := range wasmtest.AllocationBombs() {
		t.Run(name, func(t *testing.T) {
			var err error
			n := wasmtest.AllocBytes(func() { _, err = Preflight(bin) })
			if err == nil {
				t.Fatal("Preflight passed it")
			}
			if n > 1<<20 {
				t.Fatalf("refusing %d bytes allocated %d bytes", len(bin), n)
			}
			t.Log(err)
		})
	}
}

// FuzzPreflight drives the checks before compilation directly (much faster
// than the engine's FuzzLoad): they never panic, and what they pass on
// passes them again unchanged.
func FuzzPreflight(f *testing.F) {
	f.Add(wasmtest.Plugin().Bytes())
	f.Add(wasmtest.DriverPlugin(8).Bytes())
	tab := wasmtest.Plugin()
	tab.Tables = []wasmtest.Limits{{Min: 3, Max: -1}, {Min: 1, Max: 1 << 30}}
	f.Add(tab.Bytes())
	f.Add([]byte("\x00asm\x01\x00\x00\x00\x00\x0c\x04name\x01\x05\xff\xff\xff\xff\x0f"))
	f.Fuzz(func(t *testing.T, bin []byte) {
		if len(bin) < 8 {
			return // Load refuses these before preflight
		}
		out, err := Preflight(bin)
		if err != nil {
			return
		}
		again, err := Preflight(out)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("preflight output %x is not a fixed point: %v", out, err)
		}
	})
}
