package host

import (
	"context"
	"errors"
	"fmt"
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
	v, err := ns.load(ctx, bin, source)
	if err != nil {
		ns.metrics.swap("refused")
		return nil, fmt.Errorf("binding %q: new module refused, the current version keeps serving: %w", ns.name, err)
	}
	old := ns.cur.Load()
	if v.mod == old.mod {
		v.mod.Close(ctx) // same bytes: drop the extra reference, nothing to swap
		return old, nil
	}
	ns.cur.Store(v)
	ns.retire(ctx, ns.prev)
	ns.prev = old
	ns.metrics.swap("swapped")
	ns.h.log.Info().Str("binding", ns.name).Str("from", old.mod.Short()).Str("to", v.mod.Short()).Str("source", source).Msg("module swapped")
	return v, nil
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
	ns.h.log.Info().Str("binding", ns.name).Str("from", cur.mod.Short()).Str("to", ns.cur.Load().mod.Short()).Msg("module rolled back")
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
			v.mod.Close(ctx)
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
