package wasm

import (
	"runtime"
	"syscall"
)

// LowerPriority moves the calling goroutine to an OS thread of its own at
// the lowest scheduling priority (nice 19), so work the host does in the
// background — compiling a pushed module, preparing its instances — yields
// the CPU to the threads serving requests. The goroutine must exit when the
// work is done and must not call UnlockOSThread: the thread then ends with
// it instead of returning, still deprioritised, to the scheduler's pool.
func LowerPriority() {
	runtime.LockOSThread()
	// Best effort: without the permission the work runs at normal priority.
	_ = syscall.Setpriority(syscall.PRIO_PROCESS, syscall.Gettid(), 19)
}
