package wasm

import (
	"runtime"
	"syscall"
	"testing"
)

// TestLowerPriorityIsPerThread: the goroutine that lowers its priority
// runs at nice 19; the rest of the process keeps its priority.
func TestLowerPriorityIsPerThread(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("per-thread priorities are Linux only")
	}
	before, err := syscall.Getpriority(syscall.PRIO_PROCESS, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan int, 1)
	go func() {
		LowerPriority()
		p, _ := syscall.Getpriority(syscall.PRIO_PROCESS, syscall.Gettid())
		got <- p
	}()
	// Getpriority returns 20-nice on Linux (the raw syscall).
	if p := <-got; 20-p != 19 {
		t.Fatalf("lowered thread has nice %d, want 19", 20-p)
	}
	if after, _ := syscall.Getpriority(syscall.PRIO_PROCESS, 0); after != before {
		t.Fatalf("process priority changed from %d to %d", before, after)
	}
}
