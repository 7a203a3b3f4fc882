//go:build unix

package wasm

import (
	"sync"
	"syscall"

	"github.com/tetratelabs/wazero/experimental"
)

// memoryPool backs each instance's linear memory with its own anonymous
// mapping instead of a Go []byte. The whole maximum (the memory cap) is
// reserved up front as inaccessible address space and made read-write as
// the guest grows, so:
//
//   - memory.grow never copies: wazero's default grows a Go slice by
//     append, copying and zeroing the whole memory each time (that was ~30%
//     of the CPU of the rate-limit benchmark while its Go guests warmed up);
//   - pages the guest never touched cost no RSS, and the kernel zeroes
//     pages lazily;
//   - guest memory lives outside the Go heap, so the host's garbage
//     collector neither scans it nor counts it towards its heap goal.
//
// A released memory is zeroed and kept for the next instance, up to
// maxBytes of them in all; the rest are unmapped. An instance that starts
// on a kept memory writes its data and its Go runtime's heap to pages that
// are already there, instead of taking a page fault (and the kernel's
// zeroing) for each: for examples/counter that is ~0.9 ms of CPU per
// instantiation instead of ~2.2 ms (docs/OPERATIONS.md, "Instance memory
// budget"). Zeroing happens on release, on the goroutine that owned the
// instance, so nothing of one shard's memory ever reaches another's.
type memoryPool struct {
	maxBytes uint64 // committed bytes the kept memories may hold in all

	mu    sync.Mutex
	free  []*mmapMemory
	bytes uint64 // committed bytes of free
}

func newMemoryPool(maxBytes uint64) *memoryPool { return &memoryPool{maxBytes: maxBytes} }

// allocator is the pool as wazero's experimental.MemoryAllocator.
func (p *memoryPool) allocator() experimental.MemoryAllocator {
	return experimental.MemoryAllocatorFunc(p.allocate)
}

func (p *memoryPool) allocate(_, max uint64) experimental.LinearMemory {
	if max == 0 {
		return &sliceMemory{}
	}
	size := (max + pageSize - 1) &^ (pageSize - 1)
	if m := p.take(size); m != nil {
		return m
	}
	b, err := syscall.Mmap(-1, 0, int(size), syscall.PROT_NONE, syscall.MAP_PRIVATE|syscall.MAP_ANON|syscall.MAP_NORESERVE)
	if err != nil {
		// No address space: fall back to the Go heap rather than fail.
		return &sliceMemory{max: max}
	}
	return &mmapMemory{mem: b, pool: p}
}

// take returns a kept memory whose reservation is size bytes, or nil.
func (p *memoryPool) take(size uint64) *mmapMemory {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.free) - 1; i >= 0; i-- {
		if m := p.free[i]; uint64(len(m.mem)) == size {
			p.free = append(p.free[:i], p.free[i+1:]...)
			p.bytes -= m.committed
			return m
		}
	}
	return nil
}

// room reports whether a memory of committed bytes would be kept now.
func (p *memoryPool) room(committed uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.bytes+committed <= p.maxBytes
}

// keep takes a zeroed memory back; false if the pool is full.
func (p *memoryPool) keep(m *mmapMemory) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bytes+m.committed > p.maxBytes {
		return false
	}
	p.free = append(p.free, m)
	p.bytes += m.committed
	return true
}

// heldBytes returns the committed bytes of the memories kept.
func (p *memoryPool) heldBytes() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.bytes
}

// close unmaps every kept memory; later releases are unmapped at once.
func (p *memoryPool) close() {
	p.mu.Lock()
	free := p.free
	p.free, p.bytes, p.maxBytes = nil, 0, 0
	p.mu.Unlock()
	for _, m := range free {
		m.unmap()
	}
}

// mmapMemory is one linear memory: a reservation of the memory cap, of
// which the first committed bytes are read-write.
type mmapMemory struct {
	mem       []byte // the whole reservation
	committed uint64 // bytes made read-write so far
	pool      *memoryPool
}

const pageSize = 1 << 16 // a wasm page; a multiple of every OS page size

// Reallocate makes the first size bytes read-write and returns them; nil
// when size exceeds the reservation or the kernel refuses.
func (m *mmapMemory) Reallocate(size uint64) []byte {
	if m.mem == nil || size > uint64(len(m.mem)) {
		return nil
	}
	if size > m.committed {
		end := (size + pageSize - 1) &^ (pageSize - 1)
		if err := syscall.Mprotect(m.mem[m.committed:end], syscall.PROT_READ|syscall.PROT_WRITE); err != nil {
			return nil
		}
		m.committed = end
	}
	return m.mem[:size:size]
}

// Free releases the memory: zeroed and handed to the pool, or unmapped.
// wazero calls it once, when the module closes, on the goroutine that
// owns the instance (never while guest code runs). The mapping moves to a
// new mmapMemory, so this one, which wazero may still reference, is empty.
func (m *mmapMemory) Free() {
	if m.mem == nil {
		return
	}
	if m.pool != nil && m.pool.room(m.committed) {
		clear(m.mem[:m.committed])
		if m.pool.keep(&mmapMemory{mem: m.mem, committed: m.committed, pool: m.pool}) {
			m.mem, m.committed = nil, 0
			return
		}
	}
	m.unmap()
}

func (m *mmapMemory) unmap() {
	if m.mem != nil {
		_ = syscall.Munmap(m.mem)
		m.mem, m.committed = nil, 0
	}
}

// sliceMemory is the fallback: a Go slice grown by copying, as wazero's
// default.
type sliceMemory struct {
	buf []byte
	max uint64
}

func (s *sliceMemory) Reallocate(size uint64) []byte {
	if size > s.max {
		return nil
	}
	if uint64(cap(s.buf)) < size {
		nb := make([]byte, size, min(s.max, size+size/2))
		copy(nb, s.buf)
		s.buf = nb
	}
	s.buf = s.buf[:size]
	return s.buf
}

func (s *sliceMemory) Free() { s.buf = nil }
