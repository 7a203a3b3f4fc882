//go:build !linux

package wasm

import "runtime"

// LowerPriority locks the calling goroutine to its own OS thread, which
// ends with the goroutine; there is no per-thread priority to lower on
// this platform (see priority_linux.go).
func LowerPriority() { runtime.LockOSThread() }
