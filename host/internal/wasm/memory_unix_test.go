//go:build unix

package wasm

import (
	"bytes"
	"testing"
)

// TestMmapMemoryGrowsInPlace checks the mapping behind linear memory: it
// grows without moving (no copy), keeps what was written, starts zeroed,
// refuses to grow past its reservation and can be freed.
func TestMmapMemoryGrowsInPlace(t *testing.T) {
	const max = 8 * pageSize
	lm := newMmapMemory(pageSize, max)
	m, ok := lm.(*mmapMemory)
	if !ok {
		t.Fatalf("newMmapMemory returned %T, want *mmapMemory", lm)
	}
	b := m.Reallocate(pageSize)
	if len(b) != pageSize || !bytes.Equal(b, make([]byte, pageSize)) {
		t.Fatalf("first page: len %d, zeroed %v", len(b), bytes.Equal(b, make([]byte, pageSize)))
	}
	copy(b[pageSize-5:], "hello")
	g := m.Reallocate(3 * pageSize)
	if len(g) != 3*pageSize || &g[0] != &b[0] {
		t.Fatalf("grow moved the memory or has length %d", len(g))
	}
	if string(g[pageSize-5:pageSize]) != "hello" || g[3*pageSize-1] != 0 {
		t.Fatal("grow lost data or returned dirty pages")
	}
	g[3*pageSize-1] = 7 // the new pages are writable
	if m.Reallocate(max+1) != nil {
		t.Fatal("grow past the reservation succeeded")
	}
	if s := m.Reallocate(2 * pageSize); len(s) != 2*pageSize || s[pageSize-1] != 'o' {
		t.Fatal("a smaller size must still return the memory's start")
	}
	m.Free()
	m.Free() // idempotent
	if m.Reallocate(pageSize) != nil {
		t.Fatal("a freed memory grew")
	}
}

// TestSliceMemoryFallback checks the heap fallback used for a memory that
// declares no maximum pages (or when mmap fails).
func TestSliceMemoryFallback(t *testing.T) {
	s := &sliceMemory{max: 4 * pageSize}
	b := s.Reallocate(pageSize)
	b[10] = 1
	b = s.Reallocate(2 * pageSize)
	if len(b) != 2*pageSize || b[10] != 1 {
		t.Fatal("fallback lost data on grow")
	}
	if s.Reallocate(5*pageSize) != nil {
		t.Fatal("fallback grew past its maximum")
	}
	if _, ok := newMmapMemory(0, 0).(*sliceMemory); !ok {
		t.Fatal("a memory with no pages must not be mapped")
	}
}
