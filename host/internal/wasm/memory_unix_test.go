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
	lm := newMemoryPool(0).allocate(pageSize, max)
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
	if _, ok := newMemoryPool(0).allocate(0, 0).(*sliceMemory); !ok {
		t.Fatal("a memory with no pages must not be mapped")
	}
}

// TestMemoryPoolReusesZeroedMemory: a released memory is kept, zeroed,
// and handed to the next instance asking for a reservation of its size;
// one that would overflow the pool, or of another size, is not; closing
// the pool unmaps what it kept and what is released afterwards.
func TestMemoryPoolReusesZeroedMemory(t *testing.T) {
	const max = 16 * pageSize
	p := newMemoryPool(4 * pageSize)
	m := p.allocate(pageSize, max).(*mmapMemory)
	b := m.Reallocate(3 * pageSize)
	for i := range b {
		b[i] = 0xa5
	}
	first := &b[0]
	m.Free()
	if m.mem != nil || p.heldBytes() != 3*pageSize {
		t.Fatalf("released memory not kept: held %d", p.heldBytes())
	}
	m.Free() // idempotent: the mapping moved to the pool
	if p.heldBytes() != 3*pageSize {
		t.Fatal("a second Free changed the pool")
	}
	if _, ok := p.allocate(pageSize, 2*max).(*mmapMemory); !ok || p.heldBytes() != 3*pageSize {
		t.Fatal("a reservation of another size took the kept memory")
	}
	n := p.allocate(pageSize, max).(*mmapMemory)
	if p.heldBytes() != 0 {
		t.Fatal("the kept memory was not taken")
	}
	g := n.Reallocate(2 * pageSize)
	if &g[0] != first {
		t.Fatal("the kept mapping was not reused")
	}
	if !bytes.Equal(n.mem[:n.committed], make([]byte, 3*pageSize)) {
		t.Fatal("a reused memory holds the previous instance's bytes")
	}
	g = n.Reallocate(5 * pageSize) // grows past what was committed
	g[5*pageSize-1] = 1
	n.Free() // 5 pages: more than the pool holds, unmapped
	if p.heldBytes() != 0 {
		t.Fatalf("a memory larger than the pool was kept (%d)", p.heldBytes())
	}
	o := p.allocate(pageSize, max).(*mmapMemory)
	o.Reallocate(pageSize)
	o.Free()
	if p.heldBytes() != pageSize {
		t.Fatal("not kept")
	}
	p.close()
	if p.heldBytes() != 0 {
		t.Fatal("close kept memories")
	}
	q := p.allocate(pageSize, max).(*mmapMemory)
	q.Reallocate(pageSize)
	q.Free()
	if p.heldBytes() != 0 || q.mem != nil {
		t.Fatal("a memory released after close was kept")
	}
}
