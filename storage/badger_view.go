package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/dgraph-io/badger/v4"
)

// View runs fn in one Badger read transaction: every shard as of one
// commit. Badger keeps the versions the transaction reads until it ends,
// so a long view (a backup) holds back the compaction of what it reads.
func (b *badgerBackend) View(fn func(View) error) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return ErrClosed
	}
	if err := b.stuckErr(); err != nil {
		return err
	}
	return b.db.View(func(txn *badger.Txn) error {
		return fn(&badgerView{txn: txn, epochs: map[ShardID]uint64{}})
	})
}

type badgerView struct {
	txn    *badger.Txn
	epochs map[ShardID]uint64
}

func (v *badgerView) epoch(id ShardID) (uint64, error) {
	if ep, ok := v.epochs[id]; ok {
		return ep, nil
	}
	ep, err := readEpoch(v.txn, id)
	if err != nil {
		return 0, fmt.Errorf("read epoch of %s: %w", id, err)
	}
	v.epochs[id] = ep
	return ep, nil
}

// Shards walks the data keys shard by shard, seeking past each shard (or
// to its current epoch) instead of reading every key, then adds the
// shards that have only an alarm.
func (v *badgerView) Shards() ([]ShardID, error) {
	seen := map[ShardID]bool{}
	var out []ShardID
	it := v.txn.NewIterator(badger.IteratorOptions{Prefix: []byte{tagData}})
	for it.Rewind(); it.Valid(); {
		k := it.Item().Key()
		id, rest, ok := decodeShardKey(k)
		if !ok || len(rest) < 8 {
			it.Close()
			return nil, fmt.Errorf("malformed data key %q", k)
		}
		cur, err := v.epoch(id)
		if err != nil {
			it.Close()
			return nil, err
		}
		ep := binary.BigEndian.Uint64(rest)
		if ep < cur {
			it.Seek(appendDataPrefix(nil, id, cur))
			continue
		}
		if ep == cur && !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
		next, ok := successor(string(appendShardKey(nil, tagData, id)))
		if !ok {
			break
		}
		it.Seek([]byte(next))
	}
	it.Close()
	it = v.txn.NewIterator(badger.IteratorOptions{Prefix: []byte{tagAlarm}, PrefetchValues: false})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		id, rest, ok := decodeShardKey(it.Item().Key())
		if !ok || len(rest) != 0 {
			return nil, fmt.Errorf("malformed alarm key %q", it.Item().Key())
		}
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	slices.SortFunc(out, compareID)
	return out, nil
}

func (v *badgerView) Scan(id ShardID, fn func(key string, val []byte) error) error {
	ep, err := v.epoch(id)
	if err != nil {
		return err
	}
	pre := appendDataPrefix(nil, id, ep)
	it := v.txn.NewIterator(badger.IteratorOptions{Prefix: pre})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		k := bytes.TrimPrefix(item.Key(), pre)
		if err := item.Value(func(val []byte) error { return fn(string(k), val) }); err != nil {
			return err
		}
	}
	return nil
}

func (v *badgerView) Alarm(id ShardID) (int64, bool, error) {
	item, err := v.txn.Get(appendShardKey(nil, tagAlarm, id))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("get alarm %s: %w", id, err)
	}
	var at int64
	err = item.Value(func(val []byte) error {
		if len(val) != 8 {
			return fmt.Errorf("alarm of %s: value of %d bytes", id, len(val))
		}
		at = int64(binary.BigEndian.Uint64(val))
		return nil
	})
	return at, err == nil, err
}

var _ Viewer = (*badgerBackend)(nil)

// Sync makes everything applied so far durable (Badger's write-ahead and
// value logs): a writer that applies with SyncWrites off — a restore —
// syncs once at its end instead of at every Apply.
func (b *badgerBackend) Sync() error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return ErrClosed
	}
	if err := b.db.Sync(); err != nil {
		return fmt.Errorf("sync badger: %w", err)
	}
	return nil
}
