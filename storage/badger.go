package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/rs/zerolog"

	"github.com/edgeshard/edgeshard/abi"
)

// Badger key layout. Every key starts with a tag byte, then the shard as
// uvarint(len(namespace)) namespace uvarint(len(name)) name, so namespaces,
// names and keys may hold any bytes and no shard's keys prefix another's.
//
//	'd' shard epoch(8, big endian) key   a data entry
//	'e' shard                            the shard's current epoch (absent = 0)
//	'g' shard epoch(8)                   an abandoned epoch still to be erased
//	'a' shard                            the shard's alarm (8 bytes, big endian unix ms)
//
// DeleteAll moves a shard to a new epoch in O(1) and records the old epoch
// with a 'g' marker in the same transaction; a background goroutine erases
// the old epoch's entries later (and resumes after a restart). So DeleteAll
// is atomic whatever the size of the shard, and never makes a batch too
// large for one Badger transaction.
const (
	tagData  = 'd'
	tagEpoch = 'e'
	tagGC    = 'g'
	tagAlarm = 'a'
)

// BadgerOptions configure OpenBadger. Zero values pick defaults suited to
// small machines.
type BadgerOptions struct {
	// Dir holds the database; ignored when InMemory.
	Dir string
	// SyncWrites makes every Apply fsync before it returns. The documented
	// configuration default is on; without it a crash may lose acknowledged
	// writes.
	SyncWrites bool
	// InMemory keeps everything in memory (tests, ephemeral hosts).
	InMemory bool
	// Logger receives Badger's warnings and errors; nil silences Badger.
	Logger *zerolog.Logger
	// MemTableSize is the size of one memtable (default 32 MiB). One Badger
	// transaction holds at most 15% of it, which bounds a single event's
	// writes (values over ValueThreshold count only as a 12-byte pointer).
	MemTableSize int64
	// BlockCacheSize is Badger's block cache (default 32 MiB).
	BlockCacheSize int64
	// ValueThreshold: values of at least this many bytes go to the value
	// log, smaller ones stay in the LSM tree (default 1 KiB). InMemory has
	// no value log and Badger refuses values over the threshold, so there
	// it is raised above abi.MaxValueSize; every value then counts in
	// full against the transaction bound (MemTableSize must be at least
	// about 900 KiB).
	ValueThreshold int64
	// ValueLogFileSize is the size of one value log file (default 128 MiB).
	ValueLogFileSize int64
	// ValueLogGCInterval is how often value log garbage collection runs
	// (default 10 minutes; negative disables it).
	ValueLogGCInterval time.Duration
}

func (o BadgerOptions) withDefaults() BadgerOptions {
	if o.MemTableSize <= 0 {
		o.MemTableSize = 32 << 20
	}
	if o.BlockCacheSize <= 0 {
		o.BlockCacheSize = 32 << 20
	}
	if o.ValueThreshold <= 0 {
		o.ValueThreshold = 1 << 10
	}
	if o.InMemory && o.ValueThreshold <= abi.MaxValueSize {
		// No value log: every value must stay under the threshold (a value
		// of exactly the threshold passes Badger's check, then panics).
		o.ValueThreshold = abi.MaxValueSize + 1
	}
	if o.ValueLogFileSize <= 0 {
		o.ValueLogFileSize = 128 << 20
	}
	if o.ValueLogGCInterval == 0 {
		o.ValueLogGCInterval = 10 * time.Minute
	}
	return o
}

// badgerBackend is the Badger Backend. Apply calls are serialised; reads run
// concurrently with them on Badger snapshots.
type badgerBackend struct {
	db   *badger.DB
	opts BadgerOptions

	mu     sync.RWMutex // read-held by every call, write-held by Close
	closed bool

	wmu    sync.Mutex // serialises Apply
	arena  keyArena   // under wmu
	epochs map[ShardID]uint64

	gcWake chan struct{}
	stop   chan struct{}
	wg     sync.WaitGroup
}

// OpenBadger opens (or creates) a Badger database as a Backend.
func OpenBadger(opts BadgerOptions) (Backend, error) {
	opts = opts.withDefaults()
	dir := opts.Dir
	if opts.InMemory {
		dir = ""
	} else if dir == "" {
		return nil, fmt.Errorf("open badger: no directory: %w", ErrInvalid)
	}
	bo := badger.DefaultOptions(dir).
		WithInMemory(opts.InMemory).
		WithSyncWrites(opts.SyncWrites).
		WithLogger(badgerLogger{opts.Logger}).
		WithMemTableSize(opts.MemTableSize).
		WithNumMemtables(3).
		WithBlockCacheSize(opts.BlockCacheSize).
		WithValueThreshold(opts.ValueThreshold).
		WithValueLogFileSize(opts.ValueLogFileSize).
		WithNumCompactors(2).
		WithMetricsEnabled(false).
		// Apply is serialised and the epoch collector never writes what
		// Apply reads, so Badger's conflict tracking would be pure cost.
		WithDetectConflicts(false)
	db, err := badger.Open(bo)
	if err != nil {
		return nil, fmt.Errorf("open badger %q: %w", opts.Dir, err)
	}
	b := &badgerBackend{
		db:     db,
		opts:   opts,
		epochs: make(map[ShardID]uint64),
		gcWake: make(chan struct{}, 1),
		stop:   make(chan struct{}),
	}
	b.wg.Add(1)
	go b.maintain()
	b.wakeGC() // resume erasing epochs abandoned before a restart
	return b, nil
}

func (b *badgerBackend) Get(id ShardID, key string) (val []byte, found bool, err error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return nil, false, ErrClosed
	}
	err = b.db.View(func(txn *badger.Txn) error {
		ep, err := readEpoch(txn, id)
		if err != nil {
			return err
		}
		k := append(appendDataPrefix(make([]byte, 0, 32+len(key)), id, ep), key...)
		item, err := txn.Get(k)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		found = true
		val, err = item.ValueCopy(nil)
		return err
	})
	if err != nil {
		return nil, false, fmt.Errorf("get %s: %w", id, err)
	}
	return val, found, nil
}

func (b *badgerBackend) List(id ShardID, opts abi.ListOptions) ([]abi.KV, error) {
	sp, err := makeSpan(&opts)
	if err != nil {
		return nil, err
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return nil, ErrClosed
	}
	if sp.empty() {
		return nil, nil
	}
	var out []abi.KV
	err = b.db.View(func(txn *badger.Txn) error {
		ep, err := readEpoch(txn, id)
		if err != nil {
			return err
		}
		pre := appendDataPrefix(nil, id, ep)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: pre, Reverse: opts.Reverse})
		defer it.Close()
		var seek []byte
		switch {
		case !opts.Reverse:
			seek = append(pre[:len(pre):len(pre)], sp.lo...)
		case sp.hasHi:
			seek = append(pre[:len(pre):len(pre)], sp.hi...)
		default:
			s, _ := successor(string(pre)) // pre starts with 'd': always has one
			seek = []byte(s)
		}
		for it.Seek(seek); it.Valid(); it.Next() {
			item := it.Item()
			k := item.Key()[len(pre):]
			if sp.hasHi && string(k) >= sp.hi {
				if opts.Reverse {
					continue
				}
				break
			}
			if string(k) < sp.lo {
				if opts.Reverse {
					break
				}
				continue
			}
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			out = append(out, abi.KV{Key: string(k), Value: v})
			if opts.Limit > 0 && len(out) >= int(opts.Limit) {
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", id, err)
	}
	return out, nil
}

func (b *badgerBackend) GetAlarm(id ShardID) (at int64, found bool, err error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return 0, false, ErrClosed
	}
	err = b.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(appendShardKey(nil, tagAlarm, id))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			if len(v) != 8 {
				return fmt.Errorf("alarm value of %d bytes", len(v))
			}
			at, found = int64(binary.BigEndian.Uint64(v)), true
			return nil
		})
	})
	if err != nil {
		return 0, false, fmt.Errorf("get alarm %s: %w", id, err)
	}
	return at, found, nil
}

func (b *badgerBackend) Alarms() ([]Alarm, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return nil, ErrClosed
	}
	var out []Alarm
	err := b.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{tagAlarm}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			id, rest, ok := decodeShardKey(item.Key())
			if !ok || len(rest) != 0 {
				return fmt.Errorf("malformed alarm key %q", item.Key())
			}
			err := item.Value(func(v []byte) error {
				if len(v) != 8 {
					return fmt.Errorf("alarm value of %d bytes", len(v))
				}
				out = append(out, Alarm{Shard: id, At: int64(binary.BigEndian.Uint64(v))})
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list alarms: %w", err)
	}
	return out, nil
}

func (b *badgerBackend) Apply(batches []*Batch) error {
	for _, bt := range batches {
		if err := checkBatch(bt); err != nil {
			return err
		}
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return ErrClosed
	}
	b.wmu.Lock()
	defer b.wmu.Unlock()
	for done := 0; done < len(batches); {
		n, err := b.commitChunk(batches[done:])
		done += n
		if err != nil {
			if done == 0 {
				return err
			}
			return &ApplyError{Applied: done, Err: err}
		}
	}
	return nil
}

// commitChunk commits as many leading batches as fit in one transaction
// (at least one) and reports how many it committed.
func (b *badgerBackend) commitChunk(batches []*Batch) (int, error) {
	n, err := b.tryCommit(batches, len(batches))
	switch {
	case err == nil:
		return n, nil
	case !errors.Is(err, badger.ErrTxnTooBig):
		return 0, err
	case n == 0:
		return 0, fmt.Errorf("shard %s: %w: %w", batches[0].Shard, ErrBatchTooLarge, err)
	}
	// Split between batches, never inside one: commit those that fitted.
	if _, err := b.tryCommit(batches, n); err != nil {
		return 0, err
	}
	return n, nil
}

// tryCommit adds batches[:max] to one transaction and commits it. When
// Badger refuses the transaction as too big it returns ErrTxnTooBig and the
// number of batches that fitted whole, having committed nothing.
func (b *badgerBackend) tryCommit(batches []*Batch, max int) (int, error) {
	txn := b.db.NewTransaction(true)
	defer txn.Discard()
	b.arena.reset()
	clear(b.epochs)
	gc := false
	for i, bt := range batches[:max] {
		if err := b.addBatch(txn, bt); err != nil {
			if errors.Is(err, badger.ErrTxnTooBig) {
				return i, err
			}
			return 0, fmt.Errorf("shard %s: %w", bt.Shard, err)
		}
		gc = gc || bt.DeleteAll
	}
	if err := txn.Commit(); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	if gc {
		b.wakeGC()
	}
	return max, nil
}

func (b *badgerBackend) addBatch(txn *badger.Txn, bt *Batch) error {
	a := &b.arena
	ep, ok := b.epochs[bt.Shard]
	if !ok {
		var err error
		if ep, err = readEpoch(txn, bt.Shard); err != nil {
			return err
		}
	}
	if bt.DeleteAll {
		if err := txn.Set(a.hold(appendGCKey(a.scratch[:0], bt.Shard, ep)), nil); err != nil {
			return err
		}
		ep++
		k := a.hold(appendShardKey(a.scratch[:0], tagEpoch, bt.Shard))
		if err := txn.Set(k, binary.BigEndian.AppendUint64(nil, ep)); err != nil {
			return err
		}
	}
	b.epochs[bt.Shard] = ep
	a.scratch = appendDataPrefix(a.scratch[:0], bt.Shard, ep)
	for i := range bt.Puts {
		kv := &bt.Puts[i]
		if err := txn.SetEntry(a.entry(a.key(kv.Key), kv.Value)); err != nil {
			return err
		}
	}
	for _, key := range bt.Deletes {
		if err := txn.Delete(a.key(key)); err != nil {
			return err
		}
	}
	if bt.DelAlarm || bt.SetAlarm > 0 {
		k := a.hold(appendShardKey(a.scratch[:0], tagAlarm, bt.Shard))
		var err error
		if bt.SetAlarm > 0 {
			err = txn.Set(k, binary.BigEndian.AppendUint64(nil, uint64(bt.SetAlarm)))
		} else {
			err = txn.Delete(k)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (b *badgerBackend) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	close(b.stop)
	b.wg.Wait()
	if err := b.db.Close(); err != nil {
		return fmt.Errorf("close badger: %w", err)
	}
	return nil
}

func (b *badgerBackend) wakeGC() {
	select {
	case b.gcWake <- struct{}{}:
	default:
	}
}

// maintain erases abandoned epochs when woken and runs value log GC
// periodically, until Close.
func (b *badgerBackend) maintain() {
	defer b.wg.Done()
	var tick <-chan time.Time
	if b.opts.ValueLogGCInterval > 0 && !b.opts.InMemory {
		t := time.NewTicker(b.opts.ValueLogGCInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-b.stop:
			return
		case <-b.gcWake:
			if err := b.collectEpochs(); err != nil {
				b.warn(err, "erase abandoned epochs")
			}
		case <-tick:
			for b.stopped() == nil {
				if err := b.db.RunValueLogGC(0.5); err != nil {
					if !errors.Is(err, badger.ErrNoRewrite) {
						b.warn(err, "value log gc")
					}
					break
				}
			}
		}
	}
}

func (b *badgerBackend) stopped() error {
	select {
	case <-b.stop:
		return ErrClosed
	default:
		return nil
	}
}

// eraseChunk is how many keys one transaction of the epoch collector deletes.
const eraseChunk = 1000

// collectEpochs erases the entries of every abandoned epoch, then its marker.
func (b *badgerBackend) collectEpochs() error {
	var markers [][]byte
	err := b.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{tagGC}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			markers = append(markers, it.Item().KeyCopy(nil))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, m := range markers {
		id, rest, ok := decodeShardKey(m)
		if !ok || len(rest) != 8 {
			return fmt.Errorf("malformed epoch marker %q", m)
		}
		pre := appendDataPrefix(nil, id, binary.BigEndian.Uint64(rest))
		for {
			if err := b.stopped(); err != nil {
				return nil // resumed at the next open
			}
			keys, err := b.keysWithPrefix(pre, eraseChunk)
			if err != nil {
				return err
			}
			err = b.db.Update(func(txn *badger.Txn) error {
				for _, k := range keys {
					if err := txn.Delete(k); err != nil {
						return err
					}
				}
				if len(keys) == 0 {
					return txn.Delete(m)
				}
				return nil
			})
			if err != nil {
				return err
			}
			if len(keys) == 0 {
				break
			}
		}
	}
	return nil
}

func (b *badgerBackend) keysWithPrefix(pre []byte, max int) ([][]byte, error) {
	var keys [][]byte
	err := b.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: pre})
		defer it.Close()
		for it.Rewind(); it.Valid() && len(keys) < max; it.Next() {
			keys = append(keys, it.Item().KeyCopy(nil))
		}
		return nil
	})
	return keys, err
}

func (b *badgerBackend) warn(err error, msg string) {
	if l := b.opts.Logger; l != nil {
		l.Warn().Str("component", "storage").Err(err).Msg(msg)
	}
}

// readEpoch returns the shard's current epoch as seen by txn.
func readEpoch(txn *badger.Txn, id ShardID) (uint64, error) {
	item, err := txn.Get(appendShardKey(nil, tagEpoch, id))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var ep uint64
	err = item.Value(func(v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("epoch value of %d bytes", len(v))
		}
		ep = binary.BigEndian.Uint64(v)
		return nil
	})
	return ep, err
}

func appendShardKey(b []byte, tag byte, id ShardID) []byte {
	b = append(b, tag)
	b = binary.AppendUvarint(b, uint64(len(id.Namespace)))
	b = append(b, id.Namespace...)
	b = binary.AppendUvarint(b, uint64(len(id.Name)))
	return append(b, id.Name...)
}

func appendDataPrefix(b []byte, id ShardID, epoch uint64) []byte {
	return binary.BigEndian.AppendUint64(appendShardKey(b, tagData, id), epoch)
}

func appendGCKey(b []byte, id ShardID, epoch uint64) []byte {
	return binary.BigEndian.AppendUint64(appendShardKey(b, tagGC, id), epoch)
}

// decodeShardKey splits a key made by appendShardKey (plus a suffix) into
// the shard and the suffix.
func decodeShardKey(k []byte) (id ShardID, rest []byte, ok bool) {
	if len(k) == 0 {
		return id, nil, false
	}
	k = k[1:]
	var parts [2]string
	for i := range parts {
		n, w := binary.Uvarint(k)
		if w <= 0 || uint64(len(k)-w) < n {
			return id, nil, false
		}
		parts[i] = string(k[w : w+int(n)])
		k = k[w+int(n):]
	}
	return ShardID{Namespace: parts[0], Name: parts[1]}, k, true
}

// keyArena hands out key buffers and Badger entries for one transaction in
// large chunks, instead of two allocations per write. Badger copies keys and
// values when it commits, and a new chunk never moves earlier keys.
type keyArena struct {
	scratch []byte // the current data key prefix, or a key being built
	buf     []byte
	ents    []badger.Entry
}

const arenaChunk = 64 << 10

func (a *keyArena) reset() { a.buf, a.ents = nil, nil }

func (a *keyArena) alloc(n int) []byte {
	if cap(a.buf)-len(a.buf) < n {
		a.buf = make([]byte, 0, max(arenaChunk, n))
	}
	start := len(a.buf)
	a.buf = a.buf[:start+n]
	return a.buf[start : start+n : start+n]
}

// hold copies k into the arena.
func (a *keyArena) hold(k []byte) []byte {
	out := a.alloc(len(k))
	copy(out, k)
	return out
}

// key returns scratch+key in the arena.
func (a *keyArena) key(key string) []byte {
	out := a.alloc(len(a.scratch) + len(key))
	copy(out[copy(out, a.scratch):], key)
	return out
}

func (a *keyArena) entry(k, v []byte) *badger.Entry {
	if len(a.ents) == cap(a.ents) {
		a.ents = make([]badger.Entry, 0, 256)
	}
	a.ents = append(a.ents, badger.Entry{Key: k, Value: v})
	return &a.ents[len(a.ents)-1]
}

// badgerLogger forwards Badger's warnings and errors to zerolog and drops
// its chatter.
type badgerLogger struct{ l *zerolog.Logger }

func (b badgerLogger) Errorf(f string, args ...any) {
	if b.l != nil {
		b.l.Error().Str("component", "badger").Msg(strings.TrimSpace(fmt.Sprintf(f, args...)))
	}
}

func (b badgerLogger) Warningf(f string, args ...any) {
	if b.l != nil {
		b.l.Warn().Str("component", "badger").Msg(strings.TrimSpace(fmt.Sprintf(f, args...)))
	}
}

func (badgerLogger) Infof(string, ...any)  {}
func (badgerLogger) Debugf(string, ...any) {}

var (
	_ Backend       = (*badgerBackend)(nil)
	_ badger.Logger = badgerLogger{}
)
