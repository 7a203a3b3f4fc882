package wasmbin

import (
	"bytes"
	"context"
	"testing"

	"github.com/edgeshard/edgeshard/host/internal/wasm/leb128"
	"github.com/edgeshard/edgeshard/host/internal/wasm/wasmtest"
	"github.com/tetratelabs/wazero"
)

// withDataSection returns wasmtest.Plugin without its data and with raw as
// its data section (the last section, where a data section goes), and
// extra sections before it.
func withDataSection(raw []byte, extra ...byte) []byte {
	m := wasmtest.Plugin()
	m.Data = nil
	bin := append(m.Bytes(), extra...)
	bin = append(bin, 11)
	bin = leb128.AppendUint(bin, uint64(len(raw)))
	return append(bin, raw...)
}

// activeSegment encodes a data segment (flags 0, i32.const offset).
func activeSegment(b []byte, offset int32, data string) []byte {
	b = append(b, 0x00, 0x41)
	b = leb128.AppendInt(b, int64(offset))
	b = append(b, 0x0b)
	b = leb128.AppendUint(b, uint64(len(data)))
	return append(b, data...)
}

func dataSection(segs ...[]byte) []byte {
	b := leb128.AppendUint(nil, uint64(len(segs)))
	for _, s := range segs {
		b = append(b, s...)
	}
	return b
}

// segmentsOf returns the data segments of a merged binary.
func segmentsOf(t *testing.T, bin []byte) []dataSegment {
	t.Helper()
	r := &reader{b: bin, off: 8}
	for r.off < len(r.b) {
		id := r.byte()
		size := r.u32()
		if id == 11 {
			segs, ok := readActiveSegments(bin[r.off : r.off+int(size)])
			if !ok {
				t.Fatal("merged data section does not decode")
			}
			return segs
		}
		r.off += int(size)
	}
	t.Fatal("no data section")
	return nil
}

// TestMergeDataJoinsNeighbours: segments at most maxDataGap bytes apart
// in memory, and next to each other, become one with the gap written as
// zeros; farther ones stay apart.
func TestMergeDataJoinsNeighbours(t *testing.T) {
	bin := withDataSection(dataSection(
		activeSegment(nil, 0x100, "ab"),
		activeSegment(nil, 0x108, "cd"), // 6 zeros after "ab"
		activeSegment(nil, 0x10a, "ef"), // right after "cd"
		activeSegment(nil, 0x10a+2+maxDataGap+1, "far"),
		activeSegment(nil, 0x10a+2+maxDataGap+1+3+maxDataGap, "gh"), // exactly maxDataGap after "far"
	))
	got := segmentsOf(t, MergeData(bin))
	want := []dataSegment{
		{0x100, []byte("ab\x00\x00\x00\x00\x00\x00cdef")},
		{0x10a + 2 + maxDataGap + 1, append(append([]byte("far"), make([]byte, maxDataGap)...), "gh"...)},
	}
	if len(got) != len(want) {
		t.Fatalf("%d segments, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].offset != want[i].offset || !bytes.Equal(got[i].data, want[i].data) {
			t.Errorf("segment %d: %#x %q, want %#x %q", i, got[i].offset, got[i].data, want[i].offset, want[i].data)
		}
	}
}

// TestMergeDataLeavesOthersAlone: a data section MergeData cannot rewrite
// without changing what an instance sees comes back unchanged.
func TestMergeDataLeavesOthersAlone(t *testing.T) {
	twoSegments := activeSegment(activeSegment(nil, 0, "a"), 4, "b")
	noData := wasmtest.Plugin()
	noData.Data = nil
	cases := map[string][]byte{
		"one segment": withDataSection(dataSection(activeSegment(nil, 0, "a"))),
		"far apart":   withDataSection(dataSection(activeSegment(nil, 0, "a"), activeSegment(nil, 2*maxDataGap, "b"))),
		"overlapping": withDataSection(dataSection(activeSegment(nil, 0, "abcd"), activeSegment(nil, 2, "XY"))),
		// "a" and "b" follow each other in the module, but "c" lies
		// between them in memory: joining them would write zeros over it.
		"another segment between": withDataSection(dataSection(activeSegment(nil, 0x10, "c"), activeSegment(nil, 0, "a"), activeSegment(nil, 0x20, "b"))),
		"passive segment":         withDataSection(append(append(leb128.AppendUint(nil, 3), twoSegments...), 0x01, 0x02, 'x', 'y')),
		"data count section":      withDataSection(append(leb128.AppendUint(nil, 2), twoSegments...), 12, 1, 2),
		"global.get offset":       withDataSection(append(append(leb128.AppendUint(nil, 2), activeSegment(nil, 0, "a")...), 0x00, 0x23, 0x00, 0x0b, 1, 'b')),
		"no data section":         noData.Bytes(),
	}
	for name, bin := range cases {
		if out := MergeData(bin); !bytes.Equal(out, bin) {
			t.Errorf("%s: changed", name)
		}
	}
}

// TestMergeDataSameMemory: instances of a module before and after the
// merge start with the same memory, byte for byte, for a module with
// segments in and out of memory order, an empty one and one too far to
// join.
func TestMergeDataSameMemory(t *testing.T) {
	var segs [][]byte
	for _, s := range []struct {
		off  int32
		data string
	}{{0x400, "x"}, {0x100, "hello"}, {0x10c, "world"}, {0x200, ""}, {0x204, "!"}, {0x1000 + 0x20, "tail"}, {0x300, "mid"}} {
		segs = append(segs, activeSegment(nil, s.off, s.data))
	}
	bin := withDataSection(dataSection(segs...))
	merged := MergeData(bin)
	if bytes.Equal(merged, bin) {
		t.Fatal("nothing merged")
	}
	if n := len(segmentsOf(t, merged)); n >= len(segs) {
		t.Fatalf("%d segments after the merge, %d before", n, len(segs))
	}
	if a, b := initialMemory(t, bin), initialMemory(t, merged); !bytes.Equal(a, b) {
		t.Fatal("the merged module starts with another memory")
	}
}

// initialMemory instantiates bin (without running any function) and
// returns its memory.
func initialMemory(t *testing.T, bin []byte) []byte {
	t.Helper()
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	mod, err := rt.InstantiateWithConfig(ctx, bin, wazero.NewModuleConfig().WithStartFunctions())
	if err != nil {
		t.Fatal(err)
	}
	b, ok := mod.Memory().Read(0, mod.Memory().Size())
	if !ok {
		t.Fatal("read memory")
	}
	return bytes.Clone(b)
}
