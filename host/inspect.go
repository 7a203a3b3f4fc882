package host

import (
	"context"
	"time"

	"github.com/edgeshard/edgeshard/host/internal/wasm"
	"github.com/edgeshard/edgeshard/storage"
)

// ErrInjectedCrash, returned (wrapped) by a SQL binding or analytics sink,
// makes the host function trap the calling guest: the instance dies
// mid-event exactly as in a crash, and the event's storage writes are
// discarded. Tests and the conformance kit use it to crash a shard between a
// SQL commit and its own storage commit.
var ErrInjectedCrash = wasm.ErrCrash

// Inspect runs fn on the shard's goroutine between two events, with the
// shard's storage as the next event would see it. It starts the shard's
// actor if needed (not its instance).
func (ns *Namespace) Inspect(ctx context.Context, shard string, fn func(st *storage.Shard)) error {
	ev := &event{kind: evInspect, inspect: fn, done: make(chan result, 1)}
	if err := ns.enqueue(shard, ev); err != nil {
		return err
	}
	select {
	case <-ev.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Restart discards the shard's instance between two events, as a crash
// or eviction would; the next event starts a fresh instance from storage.
func (ns *Namespace) Restart(ctx context.Context, shard string) error {
	ev := &event{kind: evRestart, done: make(chan result, 1)}
	if err := ns.enqueue(shard, ev); err != nil {
		return err
	}
	select {
	case <-ev.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// AlarmAt returns when the shard's alarm is scheduled to fire.
func (ns *Namespace) AlarmAt(shard string) (time.Time, bool) {
	ms, ok := ns.h.alarms.at(ns.shardID(shard))
	if !ok {
		return time.Time{}, false
	}
	return time.UnixMilli(ms), true
}

// AlarmsPending returns how many alarms of the namespace are scheduled.
func (ns *Namespace) AlarmsPending() int { return ns.h.alarms.pending()[ns.name] }
