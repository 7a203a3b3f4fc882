//go:build !unix

package wasm

import "github.com/tetratelabs/wazero/experimental"

// mmapAllocator is nil where there is no mmap: wazero's default (a Go
// slice grown by copying) backs linear memory.
var mmapAllocator experimental.MemoryAllocator
