// Package childproc is what the tests, the crash test and the benchmark
// drivers that run `edgeshard serve` as a child process share: waiting
// until it serves (/healthz) while watching for its exit, and stopping it
// with SIGTERM. done is a channel the caller closes once the child's Wait
// returned.
package childproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"syscall"
	"time"
)

// ErrExited: the child exited before it served. ErrNotReady: it did not
// serve in time.
var (
	ErrExited   = errors.New("edgeshard exited during start")
	ErrNotReady = errors.New("edgeshard not ready")
)

// WaitReady polls base+"/healthz" with client every interval until it
// answers 200 (nil). It gives up with ErrExited once done is closed, with
// ctx's error once ctx ends, and with ErrNotReady after timeout.
func WaitReady(ctx context.Context, client *http.Client, base string, done <-chan struct{}, timeout, interval time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return ErrExited
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		resp, err := client.Get(base + "/healthz")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(interval)
	}
	return fmt.Errorf("%w after %v", ErrNotReady, timeout)
}

// TermWait sends SIGTERM to p and waits up to timeout for done; it
// reports whether the child exited in that time (if not, it still runs).
func TermWait(p *os.Process, done <-chan struct{}, timeout time.Duration) bool {
	p.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// Stop ends a child: SIGTERM, then SIGKILL if it has not exited 30 s
// later; it returns once the child exited.
func Stop(p *os.Process, done <-chan struct{}) {
	if !TermWait(p, done, 30*time.Second) {
		p.Kill()
		<-done
	}
}
