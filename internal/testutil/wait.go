package testutil

import (
	"sync"
	"testing"
	"time"
)

// WaitFor polls cond every 10 ms until it holds, failing the test if it
// does not within timeout (alarms, evictions and reloads happen on their
// own goroutines).
func WaitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	Poll(tb, timeout, 10*time.Millisecond, what, cond)
}

// Poll is WaitFor polling every interval: for a cond that costs requests.
func Poll(tb testing.TB, timeout, interval time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(interval)
	}
}

// Concurrently runs f(0), …, f(n-1) on n goroutines at once, waits for all
// and fails the test with every error they returned.
func Concurrently(tb testing.TB, n int, f func(i int) error) {
	tb.Helper()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = f(i) })
	}
	wg.Wait()
	failed := false
	for _, err := range errs {
		if err != nil {
			tb.Error(err)
			failed = true
		}
	}
	if failed {
		tb.FailNow()
	}
}
