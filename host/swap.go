package host

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"

	"github.com/edgeshard/edgeshard/host/internal/wasm"
)

// Swap replaces the namespace's module with bin, the way Caddy reloads:
// the new version is compiled, validated and initialised once before any
// shard sees it; only then does the namespace point at it. Each shard
// switches between two events — the event in progress finishes on the old
// instance, the next starts on the new one — so no request is failed or
// dropped, and storage and alarms carry over untouched. If anything about
// the new module is wrong, Swap returns the error and the old version keeps
// serving. The replaced version is kept for Rollback.
func (ns *Namespace) Swap(ctx context.Context, bin []byte, source string) (*Version, error) {
	ns.swapMu.Lock()
	defer ns.swapMu.Unlock()
	if ns.h.isClosing() {
		return nil, ErrClosed
	}
	if ns.binding.Native != nil {
		return nil, fmt.Errorf("binding %q is native: its code is compiled into the host", ns.name)
	}
	v, err := ns.loadInBackground(ctx, bin, source)
	if err != nil {
		ns.metrics.swap("refused")
		return nil, fmt.Errorf("binding %q: new module refused, the current version keeps serving: %w", ns.name, err)
	}
	old := ns.cur.Load()
	if v.mod == old.mod {
		v.close(ctx) // same bytes: drop the extra reference, nothing to swap
		return old, nil
	}
	ns.prepare(v)
	ns.cur.Store(v)
	ns.retire(ctx, ns.prev)
	ns.prev = old
	ns.metrics.swap("swapped")
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
		defer relaxGC()()
		v, err := ns.load(ctx, bin, source)
		done <- loaded{v, err}
	}()
	l := <-done
	return l.v, l.err
}

// ErrNoPrevious is returned by Rollback when no earlier version is kept.
var ErrNoPrevious = errors.New("no previous module version to roll back to")

// Rollback makes the previous version current again (and the current one
// the previous), with the same per-shard switch as Swap.
func (ns *Namespace) Rollback(ctx context.Context) (*Version, error) {
	ns.swapMu.Lock()
	defer ns.swapMu.Unlock()
	if ns.prev == nil {
		return nil, fmt.Errorf("binding %q: %w", ns.name, ErrNoPrevious)
	}
	cur := ns.cur.Load()
	ns.cur.Store(ns.prev)
	ns.prev = cur
	ns.metrics.swap("rolled_back")
	ns.h.log.Info().Str("binding", ns.name).Str("from", cur.Short()).Str("to", ns.cur.Load().Short()).Msg("module rolled back")
	return ns.cur.Load(), nil
}

// Previous returns the version kept for rollback, or nil.
func (ns *Namespace) Previous() *Version {
	ns.swapMu.Lock()
	defer ns.swapMu.Unlock()
	return ns.prev
}

// retire drops a version no longer current nor kept for rollback. Its
// compiled code is freed once no shard instance uses it. Called with swapMu.
func (ns *Namespace) retire(ctx context.Context, v *Version) {
	if v == nil || v == ns.cur.Load() {
		return
	}
	ns.retired = append(ns.retired, v)
	ns.sweepRetired(ctx)
}

// sweepRetired closes retired versions without instances. Called with swapMu.
func (ns *Namespace) sweepRetired(ctx context.Context) {
	keep := ns.retired[:0]
	for _, v := range ns.retired {
		if v.users.Load() == 0 && v != ns.prev && v != ns.cur.Load() {
			v.close(ctx)
			continue
		}
		keep = append(keep, v)
	}
	ns.retired = keep
}

// sweepLater frees retired versions from outside the actor goroutine (an
// actor must not wait on swapMu, which a Swap may hold while compiling).
func (ns *Namespace) sweepLater() {
	go func() {
		ns.swapMu.Lock()
		defer ns.swapMu.Unlock()
		if !ns.h.isClosing() {
			ns.sweepRetired(context.Background())
		}
	}()
}

// prepare instantiates v for every live shard before the switch, a few at a
// time, so a shard's first event on the new version does not pay for the
// instantiation. A shard whose preparation fails instantiates inline later.
func (ns *Namespace) prepare(v *Version) {
	ns.mu.RLock()
	var live []*actor
	for _, a := range ns.actors {
		if a.live.Load() {
			live = append(live, a)
		}
	}
	ns.mu.RUnlock()
	sem := make(chan struct{}, 2)
	var wg sync.WaitGroup
	for _, a := range live {
		wg.Add(1)
		sem <- struct{}{}
		go func(a *actor) {
			defer wg.Done()
			defer func() { <-sem }()
			wasm.LowerPriority() // yield to the shards serving meanwhile
			inst, err := a.instantiate(v)
			if err != nil {
				return
			}
			v.users.Add(1)
			if old := a.next.Swap(&prepared{ver: v, inst: inst}); old != nil {
				old.inst.Close(context.Background())
				old.ver.users.Add(-1)
			}
		}(a)
	}
	wg.Wait()
}

// relaxGC raises the garbage collector's target while a module compiles
// (wazero allocates its intermediate code on the Go heap: collections
// triggered by it would take CPU and assist time from the shards serving
// meanwhile) and returns the function that restores it. Nested or
// concurrent calls restore the setting when the last one ends.
func relaxGC() func() {
	gcMu.Lock()
	defer gcMu.Unlock()
	if gcRelaxed == 0 {
		gcSaved = debug.SetGCPercent(swapGCPercent)
		if gcSaved < 0 || gcSaved >= swapGCPercent { // GOGC=off or already higher: keep it
			debug.SetGCPercent(gcSaved)
		}
	}
	gcRelaxed++
	return func() {
		gcMu.Lock()
		defer gcMu.Unlock()
		if gcRelaxed--; gcRelaxed == 0 {
			debug.SetGCPercent(gcSaved)
		}
	}
}

// swapGCPercent is GOGC while a swap compiles.
const swapGCPercent = 800

var (
	gcMu      sync.Mutex
	gcRelaxed int
	gcSaved   int
)
