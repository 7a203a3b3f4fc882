//go:build !unix

package wasm

import "github.com/tetratelabs/wazero/experimental"

// memoryPool is empty where there is no mmap: wazero's default (a Go
// slice grown by copying) backs linear memory, and nothing is kept.
type memoryPool struct{}

func newMemoryPool(uint64) *memoryPool { return &memoryPool{} }

func (*memoryPool) allocator() experimental.MemoryAllocator { return nil }
func (*memoryPool) heldBytes() uint64                       { return 0 }
func (*memoryPool) close()                                  {}
