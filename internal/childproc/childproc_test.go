package childproc

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"
)

// TestWaitReady: nil once /healthz answers 200 (after 503s), ErrExited
// when done is closed, ErrNotReady past the timeout, ctx's error when it
// ends.
func TestWaitReady(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" || calls.Add(1) < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	never := make(chan struct{})
	if err := WaitReady(context.Background(), srv.Client(), srv.URL, never, 10*time.Second, time.Millisecond); err != nil || calls.Load() != 3 {
		t.Fatalf("ready after 3 calls: %v, %d calls", err, calls.Load())
	}
	down := httptest.NewServer(http.NotFoundHandler())
	defer down.Close()
	if err := WaitReady(context.Background(), down.Client(), down.URL, never, 50*time.Millisecond, time.Millisecond); !errors.Is(err, ErrNotReady) {
		t.Fatalf("never ready: %v", err)
	}
	exited := make(chan struct{})
	close(exited)
	if err := WaitReady(context.Background(), down.Client(), down.URL, exited, 10*time.Second, time.Millisecond); !errors.Is(err, ErrExited) {
		t.Fatalf("exited: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := WaitReady(ctx, down.Client(), down.URL, never, 10*time.Second, time.Millisecond); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

// TestTermWait: a child that exits on SIGTERM is done in time; one
// that ignores it is not (and is then killed).
func TestTermWait(t *testing.T) {
	start := func(script string) (*exec.Cmd, chan struct{}) {
		cmd := exec.Command("sh", "-c", script)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		return cmd, done
	}
	cmd, done := start("sleep 30")
	if !TermWait(cmd.Process, done, 10*time.Second) {
		t.Fatal("sleep did not end on SIGTERM")
	}
	cmd, done = start("trap '' TERM; while :; do sleep 0.05; done")
	time.Sleep(200 * time.Millisecond) // the trap is set
	if TermWait(cmd.Process, done, 300*time.Millisecond) {
		t.Fatal("a child ignoring SIGTERM exited")
	}
	cmd.Process.Kill()
	<-done
}
