package host

import (
	"bytes"
	"context"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/storage"
)

// StorageView is a read-only view of one shard's storage, as the shard's
// next event would see it (writes of earlier events included, durable or
// not yet). It is valid only during the Inspect call that hands it out.
type StorageView interface {
	// Get returns the value of key.
	Get(key string) ([]byte, bool, error)
	// List returns the entries opts selects, in key order.
	List(opts abi.ListOptions) ([]abi.KV, error)
	// GetAlarm returns the shard's alarm (unix ms).
	GetAlarm() (int64, bool, error)
}

// storageView hides the writing methods of a shard's storage handle, and
// hands out copies of values (the handle's may be its cache's).
type storageView struct{ s *storage.Shard }

func (v storageView) Get(key string) ([]byte, bool, error) {
	if key == storedKey {
		return nil, false, nil // the host's, not the shard's (quota.go)
	}
	val, ok, err := v.s.Get(key)
	return bytes.Clone(val), ok, err
}

func (v storageView) List(opts abi.ListOptions) ([]abi.KV, error) {
	kvs, err := listHiding(v.s, opts)
	for i := range kvs {
		kvs[i].Value = bytes.Clone(kvs[i].Value)
	}
	return kvs, err
}

func (v storageView) GetAlarm() (int64, bool, error) { return v.s.GetAlarm() }

var _ StorageView = storageView{}

// Inspect runs fn on the shard's goroutine between two events, with a
// read-only view of the shard's storage. It starts the shard's actor if
// needed (not its instance).
func (ns *Namespace) Inspect(ctx context.Context, shard string, fn func(StorageView)) error {
	return ns.between(ctx, shard, &event{kind: evInspect, inspect: fn, done: make(chan result, 1)})
}

// Restart discards the shard's instance between two events, as a crash
// or eviction would; the next event starts a fresh instance from storage.
func (ns *Namespace) Restart(ctx context.Context, shard string) error {
	return ns.between(ctx, shard, &event{kind: evRestart, done: make(chan result, 1)})
}

// between queues ev on the shard, to run between two events, and waits
// until it ran or ctx ends. A control event never starts a shard on a
// host with a Placement: one that does not run here is errNotHere.
func (ns *Namespace) between(ctx context.Context, shard string, ev *event) error {
	if err := ns.enqueue(shard, ev, nil); err != nil {
		return err
	}
	select {
	case r := <-ev.done:
		return r.err
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
