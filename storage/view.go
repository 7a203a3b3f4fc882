package storage

import (
	"errors"
	"fmt"
)

// View is a consistent read of a Backend's durable state: every shard as
// of one instant, between two commits, so it never holds part of an
// event's writes. It is valid only inside the function given to
// Viewer.View. Snapshots and backups read through it (snapshot.go).
type View interface {
	// Shards returns every shard with an entry or an alarm, ordered by
	// namespace, then name.
	Shards() ([]ShardID, error)
	// Scan calls fn with each entry of shard id in key order. val is valid
	// only during the call. An error from fn ends the scan and is returned.
	Scan(id ShardID, fn func(key string, val []byte) error) error
	// Alarm returns the shard's alarm (unix ms).
	Alarm(id ShardID) (at int64, found bool, err error)
}

// Viewer is a Backend that gives consistent views (Badger and the memory
// backend do). Backups need it; a Backend without it can still export and
// import single shards, which read through Backend.List.
type Viewer interface {
	// View calls fn with a view of the durable state as of the call.
	View(fn func(View) error) error
}

// ErrNoView reports a Backend that is not a Viewer where one is needed.
var ErrNoView = errors.New("storage: backend gives no consistent view of all shards")

// viewOf calls fn with a view of b: its own when b is a Viewer, else one
// made of b's Backend methods (consistent for one shard only when nothing
// writes to it meanwhile, and unable to enumerate shards).
func viewOf(b Backend, fn func(View) error) error {
	if v, ok := b.(Viewer); ok {
		return v.View(fn)
	}
	return fn(backendView{b})
}

// backendView reads one shard through Backend.List and GetAlarm.
type backendView struct{ b Backend }

func (v backendView) Shards() ([]ShardID, error) {
	return nil, fmt.Errorf("%w (%T)", ErrNoView, v.b)
}

func (v backendView) Scan(id ShardID, fn func(key string, val []byte) error) error {
	kvs, err := v.b.List(id, listAll)
	if err != nil {
		return err
	}
	for _, kv := range kvs {
		if err := fn(kv.Key, kv.Value); err != nil {
			return err
		}
	}
	return nil
}

func (v backendView) Alarm(id ShardID) (int64, bool, error) { return v.b.GetAlarm(id) }
