package wasm

import (
	"context"
	"sync"
	"time"

	"github.com/tetratelabs/wazero/api"
)

// How the host stops a guest at its deadline.
//
// Load rewrites each module before compiling it (wasmbin.Instrument): an
// interrupt flag, exported as wasmbin.InterruptExport, is checked every
// few thousand loop iterations, and the guest traps when it is raised.
// This file is the run-time half: when an event's context is done, the
// instance's interrupter raises the flag from another goroutine; the guest
// traps within a check interval (well under a millisecond) or, when it is
// inside a host function, soon after that returns (host functions honour
// the context). Straight-line code without loops or calls runs to its end
// in bounded time anyway, and recursion without loops ends at the stack
// limit, so every runaway guest stops.

// EventRoot is the parent of contexts that end only at their deadline
// (or by their cancel function, after the call returned): the context of
// an event, context.WithTimeout(EventRoot, timeout). An instance watches
// such a context with a timer it reuses from call to call; any other
// context costs a context.AfterFunc registration per call (~1 µs).
var EventRoot = context.WithValue(context.Background(), deadlineOnlyKey{}, true)

type deadlineOnlyKey struct{}

// interrupter raises an instance's interrupt flag when the context of the
// call in progress is done. One per instance; its owner's goroutine arms
// and disarms it around each call.
type interrupter struct {
	flag  api.MutableGlobal // nil: checks off (Config.UnsafeNoTerminationChecks)
	stop  func() bool       // the AfterFunc of a general context
	timer *time.Timer       // reused for deadline-only contexts
	timed bool              // timer armed for this call

	deadline time.Time // of the timed call; guarded by mu

	mu    sync.Mutex
	on    bool // a call is in progress
	fired bool // the flag was raised during it
	cause error
}

// arm watches ctx until disarm. It reports ctx's error when ctx is
// already done (the call must not start).
func (t *interrupter) arm(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if t.flag == nil || ctx.Done() == nil {
		return nil
	}
	dl, timed := ctx.Deadline()
	timed = timed && ctx.Value(deadlineOnlyKey{}) != nil
	t.mu.Lock()
	t.on, t.fired, t.cause, t.deadline = true, false, nil, dl
	t.mu.Unlock()
	t.watch(ctx, dl, timed)
	return nil
}

// watch raises the flag when ctx is done: by the reused timer at dl for a
// deadline-only context (timed), else by a context.AfterFunc.
func (t *interrupter) watch(ctx context.Context, dl time.Time, timed bool) {
	if timed {
		d := time.Until(dl)
		if t.timer == nil {
			t.timer = time.AfterFunc(d, t.raiseTimed)
		} else {
			t.timer.Reset(d)
		}
		t.timed = true
		return
	}
	t.stop = context.AfterFunc(ctx, func() { t.raise(context.Cause(ctx)) })
}

// raiseTimed is the timer's callback. A callback of an earlier call's
// timer may run late, while a later call is in progress: it raises the
// flag only once this call's deadline has passed.
func (t *interrupter) raiseTimed() {
	t.mu.Lock()
	if t.on && !t.fired {
		if wait := time.Until(t.deadline); wait > 0 {
			t.timer.Reset(wait) // a stale callback: keep this call's timer
		} else {
			t.flag.Set(1)
			t.fired, t.cause = true, context.DeadlineExceeded
		}
	}
	t.mu.Unlock()
}

func (t *interrupter) raise(cause error) {
	t.mu.Lock()
	if t.on {
		t.flag.Set(1)
		t.fired, t.cause = true, cause
	}
	t.mu.Unlock()
}

// disarm ends the watch and reports whether the flag was raised (the call
// then trapped, or finished just before its next check) and why. The flag
// is lowered again, so an instance whose call finished stays usable.
func (t *interrupter) disarm() (cause error) {
	switch {
	case t.timed:
		t.timer.Stop()
		t.timed = false
	case t.stop != nil:
		t.stop()
		t.stop = nil
	default:
		return nil
	}
	t.mu.Lock()
	t.on = false
	if t.fired {
		cause = t.cause
		t.flag.Set(0)
		t.fired, t.cause = false, nil
	}
	t.mu.Unlock()
	return cause
}

// close stops the timer of a discarded instance.
func (t *interrupter) close() {
	if t.timer != nil {
		t.timer.Stop()
	}
}
