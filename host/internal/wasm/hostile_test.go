package wasm

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host/internal/wasm/wasmbin"
	"github.com/edgeshard/edgeshard/host/internal/wasm/wasmtest"
)

// TestStartIsBounded: a start function, _initialize, the ABI version probe
// or init that never returns is ended by Config.StartTimeout even when the
// caller's context has no deadline, at load and when a shard starts.
func TestStartIsBounded(t *testing.T) {
	eng := newTestEngine(t, Config{StartTimeout: 200 * time.Millisecond})
	loop := func(name string, results ...wasmtest.ValType) func(*wasmtest.Module) {
		return func(m *wasmtest.Module) {
			m.SetExport(name, wasmtest.Func{Results: results, Body: wasmtest.Forever()})
		}
	}
	i32 := wasmtest.I32
	for _, tc := range []struct {
		name   string
		mutate func(*wasmtest.Module)
		want   string
	}{
		{"wasm start section", func(m *wasmtest.Module) {
			idx := uint32(len(m.Imports) + len(m.Funcs))
			m.Funcs = append(m.Funcs, wasmtest.Func{Body: wasmtest.Forever()})
			m.Start = &idx
		}, "start (start section) did not return before the start deadline (start timeout 200ms)"},
		{"_initialize", loop(abi.ExportInitialize), "start (_initialize) did not return before the start deadline"},
		{"abi version", loop(abi.ExportABIVersion, i32), "edgeshard_abi_version did not return before the start deadline"},
		{"init", loop(abi.ExportInit, i32), "edgeshard_init did not return before the start deadline"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := wasmtest.Plugin()
			tc.mutate(m)
			t0 := time.Now()
			_, err := eng.Load(context.Background(), m.Bytes(), nil)
			if !errors.Is(err, ErrInvalidModule) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load = %v, want ErrInvalidModule containing %q", err, tc.want)
			}
			if d := time.Since(t0); d > 5*time.Second {
				t.Fatalf("Load took %v", d)
			}
		})
	}
	t.Run("init loops only when a shard starts", func(t *testing.T) {
		m := initLoopsAfter2030()
		mod, err := eng.Load(context.Background(), m, nil) // the probe runs on the real clock
		if err != nil {
			t.Fatal(err)
		}
		defer mod.Close(context.Background())
		future := func() time.Time { return time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC) }
		_, err = mod.Instantiate(context.Background(), InstanceConfig{Walltime: future})
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("Instantiate = %v, want ErrTimeout", err)
		}
	})
}

func initLoopsAfter2030() []byte {
	return wasmtest.InitSpinsAfter(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)).Bytes()
}

// TestLoadEveryTruncation: every proper prefix of a valid plugin is refused
// as an invalid module (never a panic), except a cut between sections that
// leaves a module without its data, which is still a valid plugin.
func TestLoadEveryTruncation(t *testing.T) {
	eng := newTestEngine(t, Config{})
	bin := wasmtest.Plugin().Bytes()
	ends := wasmtest.SectionEnds(bin)
	for n := 0; n < len(bin); n++ {
		m, err := eng.Load(context.Background(), bin[:n], nil)
		switch {
		case err == nil && slices.Contains(ends, n):
			m.Close(context.Background())
		case !errors.Is(err, ErrInvalidModule):
			t.Fatalf("Load(first %d of %d bytes) = %v, want ErrInvalidModule", n, len(bin), err)
		}
	}
	m, err := eng.Load(context.Background(), bin, nil)
	if err != nil {
		t.Fatalf("the whole module: %v", err)
	}
	m.Close(context.Background())
}

func TestFetchResponseLimits(t *testing.T) {
	eng := newTestEngine(t, Config{})
	const hdr = 12 // status, header count, body length
	for _, tc := range []struct {
		name   string
		body   uint32 // body length claimed and returned
		packed int64  // overrides the returned ptr<<32|len when non-zero
		want   error
	}{
		{"body at the limit", abi.MaxResponseBody, 0, nil},
		{"body one byte over", abi.MaxResponseBody + 1, 0, ErrBadResponse},
		{"length 2^32-1", 0, wasmtest.Packed(0, math.MaxUint32), ErrBadResponse},
		{"pointer past memory", 0, wasmtest.Packed(math.MaxUint32-4, hdr), ErrBadResponse},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := wasmtest.Plugin()
			m.Memory = &wasmtest.Limits{Min: (hdr + abi.MaxResponseBody + 2 + 0xffff) >> 16, Max: -1}
			head := wasmtest.EncodeResponse(200, 0, nil)
			binary.LittleEndian.PutUint32(head[8:], tc.body)
			m.Data = []wasmtest.Data{{Offset: 0, Bytes: head}}
			packed := tc.packed
			if packed == 0 {
				packed = wasmtest.Packed(0, hdr+tc.body)
			}
			m.SetExport(abi.ExportFetch, wasmtest.Func{Params: []wasmtest.ValType{wasmtest.I32, wasmtest.I32}, Results: []wasmtest.ValType{wasmtest.I64}, Body: wasmtest.I64Const(packed)})
			_, inst := startInstance(t, eng, m.Bytes())
			resp, err := inst.Fetch(context.Background(), newFakeEnv(t), &abi.Request{Method: "GET", Path: "/"})
			if !errors.Is(err, tc.want) {
				t.Fatalf("Fetch = %v, want %v", err, tc.want)
			}
			if err == nil && len(resp.Body) != int(tc.body) {
				t.Fatalf("body %d bytes, want %d", len(resp.Body), tc.body)
			}
			if err != nil && inst.Err() == nil {
				t.Fatal("instance still alive after a bad response")
			}
		})
	}
}

// FuzzLoad feeds arbitrary bytes to module validation: it must never
// panic, and must answer a module or an error wrapping ErrInvalidModule.
func FuzzLoad(f *testing.F) {
	f.Add(wasmtest.Plugin().Bytes())
	f.Add(driverModule())
	f.Add(initLoopsAfter2030())
	f.Add([]byte("\x00asm\x01\x00\x00\x00"))
	f.Add([]byte("\x00asm\x02\x00\x00\x00"))
	f.Add([]byte{})
	bad := wasmtest.Plugin()
	bad.Memory = &wasmtest.Limits{Min: 1 << 15, Max: -1}
	f.Add(bad.Bytes())
	// An in-memory compilation cache: fuzzed modules must not fill the
	// shared on-disk one. A short start timeout keeps looping inputs cheap.
	eng := newTestEngine(f, Config{StartTimeout: 100 * time.Millisecond, MemoryLimitMiB: 16})
	f.Fuzz(func(t *testing.T, bin []byte) {
		m, err := eng.Load(context.Background(), bin, abi.AllGroups)
		if err != nil {
			if !errors.Is(err, ErrInvalidModule) {
				t.Fatalf("Load = %v: not ErrInvalidModule", err)
			}
			return
		}
		if m.ABIVersion != abi.Version {
			t.Fatalf("loaded a module of ABI version %d", m.ABIVersion)
		}
		m.Close(context.Background())
	})
}

// TestTableGrowIsCapped: table.grow allocates host memory outside the
// memory cap; a table without a declared maximum cannot grow at all, and
// none past wasmbin.MaxTableElems.
func TestTableGrowIsCapped(t *testing.T) {
	eng := newTestEngine(t, Config{})
	for _, tc := range []struct {
		name   string
		table  wasmtest.Limits
		delta  int32
		result int32
	}{
		{"no maximum, 2^30 more", wasmtest.Limits{Min: 1, Max: -1}, 1 << 30, -1},
		{"no maximum, one more", wasmtest.Limits{Min: 1, Max: -1}, 1, -1},
		{"maximum 2^31, 2^30 more", wasmtest.Limits{Min: 1, Max: 1 << 31}, 1 << 30, -1},
		{"maximum 2^31, to the cap", wasmtest.Limits{Min: 1, Max: 1 << 31}, wasmbin.MaxTableElems - 1, 1},
		{"maximum 10, 9 more", wasmtest.Limits{Min: 1, Max: 10}, 9, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := wasmtest.Plugin()
			m.Tables = []wasmtest.Limits{tc.table}
			m.Data = append(m.Data, wasmtest.Data{Offset: 0x8000, Bytes: wasmtest.EncodeResponse(200, 0, make([]byte, 4))})
			m.SetExport(abi.ExportFetch, wasmtest.Func{Params: []wasmtest.ValType{wasmtest.I32, wasmtest.I32}, Results: []wasmtest.ValType{wasmtest.I64}, Body: wasmtest.Code(
				wasmtest.I32Const(0x8000+12),
				wasmtest.RefNullFunc(), wasmtest.I32Const(tc.delta), wasmtest.TableGrow(),
				wasmtest.Mem(wasmtest.OpI32Store, 0),
				wasmtest.I64Const(wasmtest.Packed(0x8000, 16)))})
			_, inst := startInstance(t, eng, m.Bytes())
			resp, err := inst.Fetch(context.Background(), newFakeEnv(t), &abi.Request{})
			if err != nil {
				t.Fatal(err)
			}
			if got := int32(binary.LittleEndian.Uint32(resp.Body)); got != tc.result {
				t.Fatalf("table.grow(%d) = %d, want %d", tc.delta, got, tc.result)
			}
		})
	}
	m := wasmtest.Plugin()
	m.Tables = []wasmtest.Limits{{Min: wasmbin.MaxTableElems + 1, Max: -1}}
	if _, err := eng.Load(context.Background(), m.Bytes(), nil); !errors.Is(err, ErrInvalidModule) || !strings.Contains(err.Error(), "table of 1048577 entries exceeds the limit") {
		t.Fatalf("Load of a huge table = %v", err)
	}
}

// TestAllocationBombsAreRefused: a few bytes claiming billions of
// elements are refused before wazero's decoder allocates for them (each of
// these killed the process with a fatal out-of-memory, or allocated 4 GiB).
func TestAllocationBombsAreRefused(t *testing.T) {
	eng := newTestEngine(t, Config{})
	for name, bin := range wasmtest.AllocationBombs() {
		t.Run(name, func(t *testing.T) {
			var err error
			n := wasmtest.AllocBytes(func() { _, err = eng.Load(context.Background(), bin, nil) })
			if !errors.Is(err, ErrInvalidModule) || !strings.Contains(err.Error(), "malformed binary") {
				t.Fatalf("Load = %v, want a malformed binary", err)
			}
			if n > 1<<20 {
				t.Fatalf("refusing %d bytes allocated %d bytes", len(bin), n)
			}
			t.Log(err)
		})
	}
}
