package storage

import (
	"fmt"
	"os"
	"slices"

	"github.com/edgeshard/edgeshard/storage/snapshot"
)

// Whole-shard moves and deletions inside one Backend, for renaming and
// deleting a binding's data (host/migrations.go). They run while no
// Engine serves the shards involved.

// NamespaceShards returns the shards of namespace ns that hold an entry or
// an alarm, in name order. b must be a Viewer.
func NamespaceShards(b Backend, ns string) ([]ShardID, error) {
	vw, ok := b.(Viewer)
	if !ok {
		return nil, fmt.Errorf("%w (%T)", ErrNoView, b)
	}
	var out []ShardID
	err := vw.View(func(v View) error {
		all, err := v.Shards()
		out = slices.DeleteFunc(all, func(id ShardID) bool { return id.Namespace != ns })
		return err
	})
	return out, err
}

// DeleteShard deletes every entry and the alarm of shard id, atomically.
func DeleteShard(b Backend, id ShardID) error {
	if err := b.Apply([]*Batch{{Shard: id, DeleteAll: true, DelAlarm: true}}); err != nil {
		return fmt.Errorf("delete shard %s: %w", id, err)
	}
	return nil
}

// MoveShard moves shard from's entries and alarm to shard to, through a
// snapshot spooled to a temporary file: to is cleared, filled, then from
// is deleted. Interrupted, it leaves from whole (and to partly filled)
// until from's deletion; run again, it starts over. Each step is one or
// more Apply calls, so a move of any size fits Badger's transactions.
func MoveShard(b Backend, from, to ShardID) (ShardSnapshotStats, error) {
	f, err := os.CreateTemp("", "edgeshard-move-*.snapshot")
	if err != nil {
		return ShardSnapshotStats{}, fmt.Errorf("move shard %s: spool: %w", from, err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	w := snapshot.NewWriter(f, snapshot.Header{Note: "move " + from.String() + " to " + to.String()})
	err = viewOf(b, func(v View) error {
		_, err := SnapshotShard(w, v, from)
		return err
	})
	if err == nil {
		err = w.Close()
	}
	if err == nil {
		_, err = f.Seek(0, 0)
	}
	if err != nil {
		return ShardSnapshotStats{}, fmt.Errorf("move shard %s: %w", from, err)
	}
	if err := DeleteShard(b, to); err != nil {
		return ShardSnapshotStats{}, err
	}
	st, err := importOne(b, f, to, nil)
	if err != nil {
		return st, fmt.Errorf("move shard %s to %s: %w", from, to, err)
	}
	return st, DeleteShard(b, from)
}
