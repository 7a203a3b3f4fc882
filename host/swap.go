package host

import (
	"context"
	"errors"
	"fmt"

	"github.com/edgeshard/edgeshard/host/internal/wasm"
)

// A swap, as Caddy reloads: the new version is compiled, validated and
// initialised once before any shard sees it; then each live shard prepares
// an instance of it; only then does the namespace point at it, and each
// shard switches. Preparing and switching are events of the shard's own
// queue (evPrepare, evSwitch), handled by its actor between two others, so
// the actor stays the only goroutine that touches its instances:
//
//  1. Swap sends "prepare v" to every live shard, a few at a time, and
//     waits for each to be done. The actor instantiates v and keeps it,
//     still serving on its current instance.
//  2. Swap makes v current and sends "switch" to every shard. The actor
//     closes its old instance and installs the prepared one, so its first
//     event on v does not wait for an instantiation. An event that arrives
//     before the switch message finds v current and installs the prepared
//     instance itself.
//
// No event is failed or dropped: each runs whole on one version. If the
// swap stops before step 2, "switch" tells the shards to drop what they
// prepared and the old version keeps serving.

// prepareAhead is how many shards prepare an instance at once: a shard
// preparing holds its own queue for one instantiation, so a few at a time
// keep the rest serving and leave CPU for them.
const prepareAhead = 2

// Swap replaces the namespace's module with bin. Each shard switches
// between two events — the event in progress finishes on the old instance,
// the next starts on an instance of the new version prepared ahead — so no
// request is failed or dropped, and storage and alarms carry over untouched.
// If anything about the new module is wrong, or ctx ends before the switch,
// Swap returns the error and the old version keeps serving. The replaced
// version is kept for Rollback.
func (ns *Namespace) Swap(ctx context.Context, bin []byte, source string) (*Version, error) {
	ns.swapMu.Lock()
	defer ns.swapMu.Unlock()
	if ns.h.isClosing() {
		return nil, ErrClosed
	}
	old := ns.cur.Load()
	if old.native != nil {
		return nil, fmt.Errorf("binding %q is native: its code is compiled into the host", ns.name)
	}
	v, err := ns.loadInBackground(ctx, bin, source)
	if err != nil {
		ns.metrics.swap("refused")
		ns.recordSwap("swap", "refused", old, nil, source, err)
		return nil, fmt.Errorf("binding %q: new module refused, the current version keeps serving: %w", ns.name, err)
	}
	if v.mod == old.mod {
		v.release() // same bytes: nothing to swap
		return old, nil
	}
	if err := ns.switchTo(ctx, v); err != nil {
		ns.recordSwap("swap", "abandoned", old, v, source, err)
		v.release()
		ns.metrics.swap("abandoned")
		return nil, fmt.Errorf("binding %q: swap abandoned, the current version keeps serving: %w", ns.name, err)
	}
	// v's reference (Swap's, from the load) is now the current one; old's
	// becomes the previous one; the version kept before is dropped.
	if ns.prev != nil {
		ns.prev.release()
	}
	ns.prev = old
	ns.keep(v, old, bin, source)
	ns.metrics.swap("swapped")
	ns.recordSwap("swap", "swapped", old, v, source, nil)
	ns.h.log.Info().Str("binding", ns.name).Str("from", old.Short()).Str("to", v.Short()).Str("source", source).Msg("module swapped")
	return v, nil
}

// loadInBackground is load on a goroutine of its own at the lowest OS
// scheduling priority: compiling a new version (seconds of CPU for a Go
// guest) then takes only the CPU the serving shards leave, instead of a
// core of their two during a hot swap (docs/BENCHMARKS.md, swap_p99_ratio).
func (ns *Namespace) loadInBackground(ctx context.Context, bin []byte, source string) (*Version, error) {
	type loaded struct {
		v   *Version
		err error
	}
	done := make(chan loaded, 1)
	go func() {
		wasm.LowerPriority() // the thread ends with this goroutine
		v, err := ns.load(ctx, bin, source)
		done <- loaded{v, err}
	}()
	l := <-done
	return l.v, l.err
}

// ErrNoPrevious is returned by Rollback when no earlier version is kept.
var ErrNoPrevious = errors.New("no previous module version to roll back to")

// Rollback makes the previous version current again (and the current one
// the previous), with the same per-shard prepare and switch as Swap.
func (ns *Namespace) Rollback(ctx context.Context) (*Version, error) {
	ns.swapMu.Lock()
	defer ns.swapMu.Unlock()
	if ns.h.isClosing() {
		return nil, ErrClosed
	}
	if ns.prev == nil {
		ns.restorePrevious(ctx)
	}
	if ns.prev == nil {
		return nil, fmt.Errorf("binding %q: %w", ns.name, ErrNoPrevious)
	}
	cur, prev := ns.cur.Load(), ns.prev
	if err := ns.switchTo(ctx, prev); err != nil {
		ns.metrics.swap("abandoned")
		ns.recordSwap("rollback", "abandoned", cur, prev, "rollback", err)
		return nil, fmt.Errorf("binding %q: rollback abandoned, the current version keeps serving: %w", ns.name, err)
	}
	ns.prev = cur // the two references trade roles
	ns.keep(prev, cur, nil, "rollback")
	ns.metrics.swap("rolled_back")
	ns.recordSwap("rollback", "rolled_back", cur, prev, "rollback", nil)
	ns.h.log.Info().Str("binding", ns.name).Str("from", cur.Short()).Str("to", prev.Short()).Msg("module rolled back")
	return prev, nil
}

// Previous returns the version kept for rollback, or nil.
func (ns *Namespace) Previous() *Version {
	ns.swapMu.Lock()
	defer ns.swapMu.Unlock()
	return ns.prev
}

// switchTo makes v current: every live shard prepares an instance of v
// (prepareAhead at a time), then the namespace points at v, then every
// shard is told to switch. If ctx ends while shards prepare, v does not
// become current, the shards drop what they prepared, and ctx's error is
// returned. The caller holds swapMu and a reference to v.
func (ns *Namespace) switchTo(ctx context.Context, v *Version) error {
	var (
		inflight []chan result
		err      error
	)
	wait := func() {
		select {
		case <-inflight[0]:
		case <-ctx.Done():
			err = ctx.Err()
		}
		inflight = inflight[1:]
	}
	for _, shard := range ns.shards(true) {
		if len(inflight) == prepareAhead {
			if wait(); err != nil {
				break
			}
		}
		v.acquire() // for the event; cannot fail, the caller holds one
		ev := &event{kind: evPrepare, ver: v, done: make(chan result, 1)}
		if !ns.tell(shard, ev) {
			v.release() // evicted meanwhile, or its queue is full: it starts v when it needs it
			continue
		}
		inflight = append(inflight, ev.done)
	}
	for len(inflight) > 0 && err == nil {
		wait()
	}
	if err == nil {
		err = ctx.Err() // the last word, whatever the prepares' timing
	}
	if err == nil {
		ns.cur.Store(v)
	}
	// Every shard, prepared or not: one that started an instance since the
	// prepares were sent still runs the old version, and one whose prepare
	// was abandoned must drop it. A shard whose queue is full switches on
	// its next event instead (instance); after an abandoned swap it keeps
	// what it prepared until its next switch or its exit.
	for _, shard := range ns.shards(false) {
		ns.tell(shard, &event{kind: evSwitch})
	}
	return err
}
