// Package storage is the durable key/value storage under edgeshard's shards.
//
// Two layers:
//
//   - A Backend is the durable store shared by all shards of a host: Badger
//     (OpenBadger) in production, maps (NewMemory) in tests and the
//     conformance kit. It applies groups of per-event batches, each batch
//     atomically, and returns once they are durable.
//   - The Engine sits on a Backend and gives each shard's actor a Shard
//     handle with Durable Objects semantics.
//
// How a Shard serves its actor:
//
//   - The current event's writes are buffered in the handle; reads see them.
//     Commit turns them into one Batch, hands it to the committer and returns
//     at once; Abort drops them.
//   - Committed batches not yet durable form the overlay: the latest write of
//     each key (and a pending DeleteAll, which hides the backend). The next
//     event reads through it, so the actor pipelines events without waiting
//     for the disk. When a batch becomes durable the actor folds its writes
//     from the overlay into the read cache, a per-shard LRU of durable values
//     (absent keys included) bounded in bytes, so reading a shard's own data
//     does not go back to Badger.
//   - A single committer goroutine takes every batch submitted so far, over
//     all shards, and applies them with one Backend.Apply — one Badger
//     transaction and one fsync — then resolves their Pendings (the output
//     gate); batches arriving meanwhile form the next group.
//   - If Apply fails, every batch of the group fails, the shards involved
//     report Err, and their later batches, built on the lost state, fail
//     without being applied (they belong to a failed generation). Reset
//     starts a new generation from the backend's durable state.
package storage

import (
	"errors"
	"fmt"

	"github.com/edgeshard/edgeshard/abi"
)

// Sentinel errors callers branch on (errors.Is).
var (
	// ErrKeyTooLarge reports a key longer than abi.MaxKeySize bytes.
	ErrKeyTooLarge = errors.New("storage: key too large")
	// ErrValueTooLarge reports a value longer than abi.MaxValueSize bytes.
	ErrValueTooLarge = errors.New("storage: value too large")
	// ErrTooManyKeys reports a multi-key call with more than abi.MaxMultiKeys keys.
	ErrTooManyKeys = errors.New("storage: too many keys")
	// ErrInvalid reports malformed arguments (both Start and StartAfter in a
	// list, a non-positive alarm time).
	ErrInvalid = errors.New("storage: invalid argument")
	// ErrCommitFailed reports that the writes of an event (or of an earlier
	// event of the same shard it depended on) were not made durable.
	ErrCommitFailed = errors.New("storage: commit failed")
	// ErrBatchTooLarge reports a single event whose writes do not fit in one
	// backend transaction.
	ErrBatchTooLarge = errors.New("storage: batch too large for one transaction")
	// ErrClosed reports use of a closed Engine or Backend.
	ErrClosed = errors.New("storage: closed")
	// ErrStorageFull reports writes refused because the filesystem under
	// the storage has less free space than its reserve
	// (BadgerOptions.MinFreeBytes), or failed with ENOSPC. Nothing of them
	// was applied; reads still work, and writes are accepted again as soon
	// as space is freed. Commit failures wrap it with ErrCommitFailed.
	ErrStorageFull = errors.New("storage: full")
	// ErrStorageUnavailable reports writes refused because the storage
	// cannot take them: its directory was removed or replaced while open
	// (until a restart), its filesystem is read-only, or a commit has been
	// stuck in the backend past BadgerOptions.StallTimeout (until it
	// returns). Commit failures wrap it with ErrCommitFailed.
	ErrStorageUnavailable = errors.New("storage: unavailable")
	// ErrFenced reports a write refused because its writer no longer owns
	// the shard it writes for: a newer owner (a larger epoch) has written
	// (sqldb.DB.BatchFenced). Nothing of it was applied.
	ErrFenced = errors.New("storage: fenced: a newer owner of the shard has written")
)

// ShardID names one shard: its namespace and its name within the namespace.
// Both may hold any bytes.
type ShardID struct{ Namespace, Name string }

// String returns "namespace/name".
func (id ShardID) String() string { return id.Namespace + "/" + id.Name }

// Alarm is a persisted shard alarm.
type Alarm struct {
	Shard ShardID
	At    int64 // unix ms
}

// Batch is the writes of one event of one shard, applied atomically.
//
// Order of application: DeleteAll, then Puts, then Deletes, then DelAlarm,
// then SetAlarm. The Engine builds batches in which a key appears at most
// once across Puts and Deletes and at most one of DelAlarm and SetAlarm is
// set, so that order never decides a result. A Backend must not modify a
// batch and must not keep its slices after Apply returns.
type Batch struct {
	Shard     ShardID
	DeleteAll bool     // applied first: delete every key of the shard (not its alarm)
	Puts      []abi.KV // then puts and deletes
	Deletes   []string
	SetAlarm  int64 // >0: set alarm to this unix ms
	DelAlarm  bool  // delete the alarm
}

// Backend is the durable store under all shards of a host. It is safe for
// concurrent use.
type Backend interface {
	// Get returns the committed value of key; the caller owns the slice.
	Get(id ShardID, key string) ([]byte, bool, error)
	// List returns committed entries selected by opts (all options honoured),
	// in bytewise key order, or reversed; the caller owns the values.
	List(id ShardID, opts abi.ListOptions) ([]abi.KV, error)
	// GetAlarm returns the shard's persisted alarm.
	GetAlarm(id ShardID) (int64, bool, error)
	// Alarms returns every persisted alarm (boot restore).
	Alarms() ([]Alarm, error)
	// Apply applies the batches in order and returns once they are durable.
	// Each batch is atomic. If Apply fails, the batches from index
	// ApplyError.Applied on (from 0 when the error is not an *ApplyError)
	// were not applied.
	Apply(batches []*Batch) error
	// Close releases the store; later calls return ErrClosed.
	Close() error
}

// ApplyError reports a Backend.Apply that made the first Applied batches
// durable and failed the rest, which happens when a group is split over
// several backend transactions.
type ApplyError struct {
	Applied int
	Err     error
}

// Error describes the failure and how far Apply got.
func (e *ApplyError) Error() string {
	return fmt.Sprintf("storage: applied %d batches, then: %v", e.Applied, e.Err)
}

// Unwrap returns the cause.
func (e *ApplyError) Unwrap() error { return e.Err }

// checkKey reports whether key is within the key size limit.
func checkKey(key string) error {
	if len(key) > abi.MaxKeySize {
		return fmt.Errorf("%w: %d bytes (max %d)", ErrKeyTooLarge, len(key), abi.MaxKeySize)
	}
	return nil
}

func checkValue(val []byte) error {
	if len(val) > abi.MaxValueSize {
		return fmt.Errorf("%w: %d bytes (max %d)", ErrValueTooLarge, len(val), abi.MaxValueSize)
	}
	return nil
}

func checkCount(n int) error {
	if n > abi.MaxMultiKeys {
		return fmt.Errorf("%w: %d keys (max %d)", ErrTooManyKeys, n, abi.MaxMultiKeys)
	}
	return nil
}

// checkBatch validates a batch handed to a Backend.
func checkBatch(b *Batch) error {
	for i := range b.Puts {
		if err := checkKey(b.Puts[i].Key); err != nil {
			return fmt.Errorf("batch of shard %s: %w", b.Shard, err)
		}
		if err := checkValue(b.Puts[i].Value); err != nil {
			return fmt.Errorf("batch of shard %s: %w", b.Shard, err)
		}
	}
	for _, k := range b.Deletes {
		if err := checkKey(k); err != nil {
			return fmt.Errorf("batch of shard %s: %w", b.Shard, err)
		}
	}
	if b.SetAlarm < 0 {
		return fmt.Errorf("batch of shard %s: alarm %d: %w", b.Shard, b.SetAlarm, ErrInvalid)
	}
	return nil
}

// span is the key range a ListOptions selects: [lo, hi), hi unbounded
// unless hasHi. A prefix P becomes [P, successor(P)).
type span struct {
	lo, hi string
	hasHi  bool
}

func makeSpan(o *abi.ListOptions) (span, error) {
	if o.HasStart && o.HasStartAfter {
		return span{}, fmt.Errorf("list with both start and startAfter: %w", ErrInvalid)
	}
	sp := span{lo: o.Prefix}
	if o.HasStart && o.Start > sp.lo {
		sp.lo = o.Start
	}
	if o.HasStartAfter {
		// The smallest key after StartAfter.
		if s := o.StartAfter + "\x00"; s > sp.lo {
			sp.lo = s
		}
	}
	if succ, ok := successor(o.Prefix); ok {
		sp.hi, sp.hasHi = succ, true
	}
	if o.HasEnd && (!sp.hasHi || o.End < sp.hi) {
		sp.hi, sp.hasHi = o.End, true
	}
	return sp, nil
}

func (sp span) empty() bool { return sp.hasHi && sp.lo >= sp.hi }

func (sp span) contains(k string) bool { return k >= sp.lo && (!sp.hasHi || k < sp.hi) }

// successor returns the smallest string greater than every string with
// prefix p, if there is one (none for "" or all 0xff bytes).
func successor(p string) (string, bool) {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] != 0xff {
			return p[:i] + string([]byte{p[i] + 1}), true
		}
	}
	return "", false
}
