package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
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
	// Logger receives Badger's warnings and errors, and its informational
	// and debug messages at debug level; nil silences Badger.
	Logger *zerolog.Logger
	// MemTableSize is the size of one memtable (default 8 MiB). Badger
	// keeps up to NumMemtables (3) of them in the Go heap at once — the one
	// being written and those waiting for their flush to disk — each an
	// arena of ~1.3× this size, plus a memory-mapped write-ahead file of
	// twice this size. One Badger transaction holds at most 15% of it,
	// which bounds a single event's writes (values over ValueThreshold
	// count only as a 12-byte pointer): ~1.2 MiB of small entries by
	// default. The free-space reserve grows with it.
	MemTableSize int64
	// BlockCacheSize is Badger's cache of decompressed table blocks
	// (default 8 MiB). Reads that miss a shard's own read cache
	// (EngineOptions) find their blocks here. Negative: no block cache,
	// and tables written from then on are not compressed (Badger needs the
	// cache to decompress; each table records its own compression).
	BlockCacheSize int64
	// IndexCacheSize bounds the memory of the tables' indexes and bloom
	// filters (default 8 MiB); negative keeps every table's index in
	// memory, unbounded (Badger's default: ~1–2% of the data on disk).
	IndexCacheSize int64
	// ValueThreshold: values of at least this many bytes go to the value
	// log, smaller ones stay in the LSM tree (default 1 KiB). InMemory has
	// no value log and Badger refuses values over the threshold, so there
	// it is raised above abi.MaxValueSize; every value then counts in
	// full against the transaction bound (MemTableSize must be at least
	// about 900 KiB).
	ValueThreshold int64
	// ValueLogFileSize is the size of one value log file (default 64 MiB,
	// Badger accepts 1 MiB to 2 GiB). The free-space reserve grows with it.
	ValueLogFileSize int64
	// ValueLogGCInterval is how often value log garbage collection runs
	// (default 10 minutes; negative disables it). While writes are refused
	// for want of space it also runs, at most once a minute.
	ValueLogGCInterval time.Duration
	// MinFreeBytes is the free-space reserve: Apply refuses writes with
	// ErrStorageFull while the filesystem under Dir has less available, and
	// accepts them again once it has the reserve plus a sixteenth. Badger
	// writes through memory-mapped files, where running out of space kills
	// the process (SIGBUS) instead of failing a write, and it writes on its
	// own after our writes stop — memtable flushes, compactions, value log
	// GC — so the reserve must cover those. Default (0): the larger of
	// 256 MiB and 2×ValueLogFileSize + 4×MemTableSize (256 MiB with the
	// default sizes: 2×64 + 4×8 = 160 MiB). Negative disables the reserve;
	// the directory checks (ErrStorageUnavailable) stay.
	MinFreeBytes int64
	// StallTimeout bounds how long one Apply waits for Badger (default
	// 30 s; negative: forever). Badger blocks writes while it cannot flush
	// a memtable, and retries the flush forever; past the bound Apply fails
	// with ErrStorageUnavailable, and so does every Apply until the stuck
	// commit returns. Its writes may still land: their outcome is unknown,
	// like that of a write whose acknowledgement was lost.
	StallTimeout time.Duration
	// CloseTimeout bounds Close (default 30 s; 2 s once the directory is
	// gone, when Badger's final flush cannot succeed). Past it Close
	// returns an error naming what was stuck and leaves Badger's goroutines
	// behind; the next open replays Badger's log.
	CloseTimeout time.Duration
}

// compression is Badger's default (Snappy) unless there is no block cache,
// which Badger requires to read compressed tables.
func compression(blockCache int64) options.CompressionType {
	if blockCache < 0 {
		return options.None
	}
	return options.Snappy
}

// DefaultMemTableSize is the size of one Badger memtable unless
// BadgerOptions.MemTableSize says otherwise.
const DefaultMemTableSize = 8 << 20

// numMemtables is how many memtables Badger keeps at most: the one being
// written and up to two waiting for their flush.
const numMemtables = 3

// writesAfterStop is what Badger may still write on its own once writes
// stop: the current value log file filling up and one more for a GC
// rewrite, every memtable being flushed and one memtable's worth of
// compaction output. The free-space reserve must cover it.
func (o BadgerOptions) writesAfterStop() int64 {
	return 2*o.ValueLogFileSize + (numMemtables+1)*o.MemTableSize
}

func (o BadgerOptions) withDefaults() BadgerOptions {
	if o.MemTableSize <= 0 {
		o.MemTableSize = DefaultMemTableSize
	}
	if o.BlockCacheSize == 0 {
		o.BlockCacheSize = 8 << 20
	}
	if o.IndexCacheSize == 0 {
		o.IndexCacheSize = 8 << 20
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
		o.ValueLogFileSize = 64 << 20
	}
	if o.ValueLogGCInterval == 0 {
		o.ValueLogGCInterval = 10 * time.Minute
	}
	if o.MinFreeBytes == 0 {
		o.MinFreeBytes = max(256<<20, o.writesAfterStop())
	}
	if o.StallTimeout == 0 {
		o.StallTimeout = 30 * time.Second
	}
	if o.CloseTimeout <= 0 {
		o.CloseTimeout = 30 * time.Second
	}
	return o
}

// badgerBackend is the Badger Backend. Apply calls are serialised; reads run
// concurrently with them on Badger snapshots.
type badgerBackend struct {
	db    *badger.DB
	opts  BadgerOptions
	log   *badgerLogger
	space *spaceGuard // nil when InMemory

	mu     sync.RWMutex // read-held by every call, write-held by Close
	closed bool

	wmu    sync.Mutex // serialises Apply
	arena  keyArena   // under wmu
	epochs map[ShardID]uint64
	// stuck is set while a commit that outlived StallTimeout is still
	// inside Badger: every call is refused until it returns.
	stuck      atomic.Pointer[stuckCommit]
	commitReq  chan *badger.Txn // to the committer goroutine
	commitRes  chan error       // from it; one result per request
	stallTimer *time.Timer      // under wmu

	gcWake   chan struct{}
	vlogWake chan struct{} // run value log GC now (writes refused for space)
	lastVGC  time.Time     // under wmu: when a value log GC was last requested
	stop     chan struct{}
	wg       sync.WaitGroup
	phase    atomic.Pointer[string] // what the maintenance goroutine is doing
	dbClosed chan struct{}          // closed when Badger's Close has returned
}

type stuckCommit struct {
	since time.Time
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
	bl := &badgerLogger{l: opts.Logger}
	bo := badger.DefaultOptions(dir).
		WithInMemory(opts.InMemory).
		WithSyncWrites(opts.SyncWrites).
		WithLogger(bl).
		WithMemTableSize(opts.MemTableSize).
		WithNumMemtables(numMemtables).
		WithBlockCacheSize(max(opts.BlockCacheSize, 0)).
		WithIndexCacheSize(max(opts.IndexCacheSize, 0)).
		WithCompression(compression(opts.BlockCacheSize)).
		WithValueThreshold(opts.ValueThreshold).
		WithValueLogFileSize(opts.ValueLogFileSize).
		WithNumCompactors(2).
		WithMetricsEnabled(false).
		// Apply is serialised and the epoch collector never writes what
		// Apply reads, so Badger's conflict tracking would be pure cost.
		WithDetectConflicts(false)
	var space *spaceGuard
	if !opts.InMemory {
		// Look at the directory before Badger maps its first files: a
		// read-only one fails the open; on a full disk the host opens and
		// serves reads, and writes wait for space.
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("open badger: %w", err)
		}
		reserve := max(opts.MinFreeBytes, 0)
		var err error
		if space, err = newSpaceGuard(dir, reserve, opts.Logger); err != nil {
			return nil, fmt.Errorf("open badger: %w", err)
		}
		if err := space.check(); err != nil && !errors.Is(err, ErrStorageFull) {
			return nil, fmt.Errorf("open badger: %w", err)
		}
		if l := opts.Logger; l != nil && opts.MinFreeBytes >= 0 {
			if need := opts.writesAfterStop(); opts.MinFreeBytes < need {
				l.Warn().Str("component", "storage").Str("reserve", mib(opts.MinFreeBytes)).Str("recommended", mib(need)).
					Msg("the free-space reserve is smaller than what Badger may write after writes stop (2 value log files + 4 memtables); a full disk may still crash the host")
			}
		}
	}
	db, err := badger.Open(bo)
	if err != nil {
		if space != nil {
			space.close()
		}
		return nil, fmt.Errorf("open badger %q: %w", opts.Dir, err)
	}
	b := &badgerBackend{
		db:       db,
		opts:     opts,
		log:      bl,
		space:    space,
		epochs:   make(map[ShardID]uint64),
		gcWake:   make(chan struct{}, 1),
		vlogWake: make(chan struct{}, 1),
		stop:     make(chan struct{}),
		dbClosed: make(chan struct{}),
	}
	if opts.StallTimeout >= 0 {
		b.commitReq, b.commitRes = make(chan *badger.Txn), make(chan error, 1)
		go b.committer()
	}
	if space != nil {
		space.onRoom = b.wakeGC // resume erasing epochs paused for want of space
	}
	b.wg.Add(1)
	go b.maintain()
	b.wakeGC() // resume erasing epochs abandoned before a restart
	return b, nil
}

func (b *badgerBackend) Get(id ShardID, key string) (val []byte, found bool, err error) {
	if err := b.rlock(); err != nil {
		return nil, false, err
	}
	defer b.mu.RUnlock()
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
	if err := b.rlock(); err != nil {
		return nil, err
	}
	defer b.mu.RUnlock()
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
	if err := b.rlock(); err != nil {
		return 0, false, err
	}
	defer b.mu.RUnlock()
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
	if err := b.rlock(); err != nil {
		return nil, err
	}
	defer b.mu.RUnlock()
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
	size := int64(0)
	for _, bt := range batches {
		if err := checkBatch(bt); err != nil {
			return err
		}
		size += batchBytes(bt)
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return ErrClosed
	}
	b.wmu.Lock()
	defer b.wmu.Unlock()
	if err := b.stuckErr(); err != nil {
		return err
	}
	if b.space != nil {
		if err := b.space.admit(size); err != nil {
			if errors.Is(err, ErrStorageFull) {
				b.requestValueLogGC()
			}
			return err
		}
	}
	for done := 0; done < len(batches); {
		n, err := b.commitChunk(batches[done:])
		done += n
		if err != nil {
			if errors.Is(err, syscall.ENOSPC) && !errors.Is(err, ErrStorageFull) {
				err = fmt.Errorf("%w: %w", ErrStorageFull, err)
			}
			if done == 0 {
				return err
			}
			return &ApplyError{Applied: done, Err: err}
		}
	}
	return nil
}

// batchBytes estimates what a batch writes to disk, for the space guard.
func batchBytes(bt *Batch) int64 {
	n := int64(64)
	for i := range bt.Puts {
		n += int64(len(bt.Puts[i].Key)+len(bt.Puts[i].Value)) + 64
	}
	for _, k := range bt.Deletes {
		n += int64(len(k)) + 64
	}
	return n
}

// requestValueLogGC asks the maintenance goroutine for a value log GC, at
// most once a minute: while writes are refused for want of space, garbage
// in the value log (values deleted or overwritten since) may be what fills
// the disk. The reserve leaves room for its rewrites. b.wmu held.
func (b *badgerBackend) requestValueLogGC() {
	if b.opts.ValueLogGCInterval < 0 || time.Since(b.lastVGC) < time.Minute {
		return
	}
	b.lastVGC = time.Now()
	select {
	case b.vlogWake <- struct{}{}:
	default:
	}
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
	b.arena.reset()
	clear(b.epochs)
	gc := false
	for i, bt := range batches[:max] {
		if err := b.addBatch(txn, bt); err != nil {
			txn.Discard()
			if errors.Is(err, badger.ErrTxnTooBig) {
				return i, err
			}
			return 0, fmt.Errorf("shard %s: %w", bt.Shard, err)
		}
		gc = gc || bt.DeleteAll
	}
	if err := b.commit(txn); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	if gc {
		b.wakeGC()
	}
	return max, nil
}

// stuckErr refuses calls while a commit is stuck in Badger: a read would
// wait for it too (a Badger read waits until every earlier commit is done).
// rlock read-locks b for a read, or answers ErrClosed or stuckErr's
// error with b unlocked.
func (b *badgerBackend) rlock() error {
	b.mu.RLock()
	err := b.stuckErr()
	if b.closed {
		err = ErrClosed
	}
	if err != nil {
		b.mu.RUnlock()
	}
	return err
}

func (b *badgerBackend) stuckErr() error {
	if sc := b.stuck.Load(); sc != nil {
		return fmt.Errorf("%w: a commit has been stuck in badger for %s (%s)", ErrStorageUnavailable,
			time.Since(sc.since).Round(time.Second), b.log.lastError())
	}
	return nil
}

// commit commits txn (Commit discards it), waiting at most StallTimeout.
// The commit runs on the committer goroutine; past the bound it is left to
// finish there and b.stuck refuses every call until it does. The arena it
// may still read is never reused: reset allocates new chunks. b.wmu held.
func (b *badgerBackend) commit(txn *badger.Txn) error {
	if b.opts.StallTimeout < 0 {
		return txn.Commit()
	}
	b.commitReq <- txn
	if b.stallTimer == nil {
		b.stallTimer = time.NewTimer(b.opts.StallTimeout)
	} else {
		b.stallTimer.Reset(b.opts.StallTimeout)
	}
	select {
	case err := <-b.commitRes:
		b.stallTimer.Stop()
		return err
	case <-b.stallTimer.C:
	}
	b.stuck.Store(&stuckCommit{since: time.Now().Add(-b.opts.StallTimeout)})
	err := fmt.Errorf("%w: badger did not finish a commit within %s (%s); writes are refused until it does",
		ErrStorageUnavailable, b.opts.StallTimeout, b.log.lastError())
	if l := b.opts.Logger; l != nil {
		l.Error().Str("component", "storage").Err(err).Msg("commit stuck")
	}
	go func() {
		cerr := <-b.commitRes
		b.stuck.Store(nil)
		if l := b.opts.Logger; l != nil {
			l.Warn().Str("component", "storage").AnErr("commit_error", cerr).Msg("the stuck badger commit returned; writes are accepted again")
		}
	}()
	return err
}

// committer runs Badger commits for commit until Close.
func (b *badgerBackend) committer() {
	for txn := range b.commitReq {
		b.commitRes <- txn.Commit()
	}
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

// Close closes Badger within CloseTimeout. Badger's own Close flushes the
// memtable and retries a failing flush forever (a removed directory, a
// failing disk): past the bound Close returns an error naming the step that
// was stuck and Badger's last error, and leaves the rest to the process's
// exit.
func (b *badgerBackend) Close() error {
	b.mu.Lock() // waits for an Apply, which StallTimeout bounds
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	close(b.stop)
	if b.commitReq != nil {
		close(b.commitReq) // the committer ends, or ends once its stuck commit returns
	}
	bound, why := b.opts.CloseTimeout, ""
	if b.space != nil {
		if err := b.space.gone(); err != nil {
			// Badger's final flush cannot succeed: give it a moment to say
			// so in the log, not the whole bound.
			bound, why = min(bound, 2*time.Second), err.Error()+"; "
		}
	}
	var step atomic.Pointer[string]
	set := func(s string) { step.Store(&s) }
	set("waiting for the maintenance goroutine")
	done := make(chan error, 1)
	go func() {
		b.wg.Wait()
		set("closing badger (flushing its memtable, stopping compactions)")
		done <- b.db.Close()
		close(b.dbClosed)
	}()
	t := time.NewTimer(bound)
	defer t.Stop()
	select {
	case err := <-done:
		if b.space != nil {
			b.space.close()
		}
		if err != nil {
			return fmt.Errorf("close badger: %w", err)
		}
		return nil
	case <-t.C:
	}
	if b.space != nil {
		b.space.close()
	}
	what := *step.Load()
	if p := b.phase.Load(); p != nil && strings.HasPrefix(what, "waiting") {
		what += " (" + *p + ")"
	}
	return fmt.Errorf("close badger %s: gave up after %s %s: %s%s", b.opts.Dir, bound, what, why, b.log.lastError())
}

func (b *badgerBackend) wakeGC() {
	select {
	case b.gcWake <- struct{}{}:
	default:
	}
}

// maintain erases abandoned epochs when woken and runs value log GC
// periodically (and when asked, for want of space), until Close.
func (b *badgerBackend) maintain() {
	defer b.wg.Done()
	var tick <-chan time.Time
	if b.opts.ValueLogGCInterval > 0 && !b.opts.InMemory {
		t := time.NewTicker(b.opts.ValueLogGCInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		b.setPhase("idle")
		select {
		case <-b.stop:
			return
		case <-b.gcWake:
			b.setPhase("erasing abandoned epochs")
			if err := b.collectEpochs(); err != nil {
				b.warn(err, "erase abandoned epochs")
			}
		case <-tick:
			b.valueLogGC()
		case <-b.vlogWake:
			if !b.opts.InMemory {
				b.valueLogGC()
			}
		}
	}
}

// valueLogGC runs Badger's value log GC until it finds nothing to rewrite.
// It runs while writes are refused for want of space (the reserve is for
// such work), not while the directory is unusable.
func (b *badgerBackend) valueLogGC() {
	b.setPhase("value log gc")
	for b.stopped() == nil {
		if b.space != nil {
			if err := b.space.admit(0); err != nil && !errors.Is(err, ErrStorageFull) {
				return
			}
		}
		if err := b.db.RunValueLogGC(0.5); err != nil {
			if !errors.Is(err, badger.ErrNoRewrite) {
				b.warn(err, "value log gc")
			}
			break
		}
	}
}

func (b *badgerBackend) setPhase(s string) { b.phase.Store(&s) }

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
			if b.space != nil {
				if err := b.space.admit(int64(64 * (len(keys) + 1))); err != nil {
					return nil // resumed when writes are accepted again (onRoom)
				}
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

// badgerLogger forwards Badger's log to zerolog: errors and warnings at
// their level, the rest at debug. It keeps the last error, which Close and
// a stuck Apply quote.
type badgerLogger struct {
	l    *zerolog.Logger
	last atomic.Pointer[string]
}

func (b *badgerLogger) Errorf(f string, args ...any) {
	msg := strings.TrimSpace(fmt.Sprintf(f, args...))
	b.last.Store(&msg)
	if b.l != nil {
		b.l.Error().Str("component", "badger").Msg(msg)
	}
}

func (b *badgerLogger) Warningf(f string, args ...any) {
	if b.l != nil {
		b.l.Warn().Str("component", "badger").Msg(strings.TrimSpace(fmt.Sprintf(f, args...)))
	}
}

func (b *badgerLogger) Infof(f string, args ...any) { b.debug(f, args) }

func (b *badgerLogger) Debugf(f string, args ...any) { b.debug(f, args) }

func (b *badgerLogger) debug(f string, args []any) {
	if b.l == nil {
		return
	}
	if e := b.l.Debug(); e.Enabled() {
		e.Str("component", "badger").Msg(strings.TrimSpace(fmt.Sprintf(f, args...)))
	}
}

// lastError describes Badger's last logged error, for error messages.
func (b *badgerLogger) lastError() string {
	if m := b.last.Load(); m != nil {
		return "badger's last error: " + *m
	}
	return "badger logged no error"
}

var (
	_ Backend       = (*badgerBackend)(nil)
	_ badger.Logger = (*badgerLogger)(nil)
)
