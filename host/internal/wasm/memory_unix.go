//go:build unix

package wasm

import (
	"syscall"

	"github.com/tetratelabs/wazero/experimental"
)

// mmapAllocator backs each instance's linear memory with its own anonymous
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
// The mapping is released when wazero closes the module (Free).
var mmapAllocator experimental.MemoryAllocator = experimental.MemoryAllocatorFunc(newMmapMemory)

type mmapMemory struct {
	mem       []byte // the whole reservation
	committed uint64 // bytes made read-write so far
}

func newMmapMemory(_, max uint64) experimental.LinearMemory {
	if max == 0 {
		return &sliceMemory{}
	}
	size := (max + pageSize - 1) &^ (pageSize - 1)
	b, err := syscall.Mmap(-1, 0, int(size), syscall.PROT_NONE, syscall.MAP_PRIVATE|syscall.MAP_ANON|syscall.MAP_NORESERVE)
	if err != nil {
		// No address space: fall back to the Go heap rather than fail.
		return &sliceMemory{max: max}
	}
	return &mmapMemory{mem: b}
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

// Free unmaps the memory. wazero calls it once, when the module closes, on
// the goroutine that owns the instance (never while guest code runs).
func (m *mmapMemory) Free() {
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
