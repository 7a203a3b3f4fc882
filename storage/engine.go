package storage

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeshard/edgeshard/abi"
)

// EngineOptions configure NewEngine. Zero values pick the defaults.
type EngineOptions struct {
	// CacheBytes is each shard's read cache budget (default 4 MiB; negative
	// disables the cache).
	CacheBytes int
	// CacheTotalBytes bounds the read caches of all open shards together
	// (default 32 MiB; negative: no bound beyond CacheBytes each): each
	// shard's cache keeps at most CacheTotalBytes / open shards, so the
	// caches of 10,000 live shards cost what those of 8 do.
	CacheTotalBytes int
	// MaxGroup is the most batches one Backend.Apply receives (default 4096).
	MaxGroup int
	// MaxPendingBytes bounds the writes submitted but not yet durable, over
	// all shards (default 64 MiB). Commit waits while the bound is exceeded,
	// which happens only when the disk is far behind; it bounds memory.
	MaxPendingBytes int
	// UnconfirmedLinger is how long the committer waits for more batches
	// when every queued batch holds only unconfirmed writes (nobody waits
	// for their durability): fewer, larger groups, so fewer fsyncs. 0
	// disables it; a confirmed write ends the wait at once.
	UnconfirmedLinger time.Duration
}

func (o EngineOptions) withDefaults() EngineOptions {
	if o.CacheBytes == 0 {
		o.CacheBytes = 4 << 20
	}
	if o.CacheTotalBytes == 0 {
		o.CacheTotalBytes = 32 << 20
	}
	if o.MaxGroup <= 0 {
		o.MaxGroup = 4096
	}
	if o.MaxPendingBytes <= 0 {
		o.MaxPendingBytes = 64 << 20
	}
	return o
}

// EngineStats are cumulative counters of an Engine's committer.
type EngineStats struct {
	Groups  uint64 // Backend.Apply calls
	Batches uint64 // batches submitted to Apply
	Failed  uint64 // batches that failed or were dropped after a failure
}

// Engine gives shards their storage with Durable Objects semantics on top
// of a Backend, and group-commits the events of all shards: one committer
// goroutine takes every batch submitted so far and applies them with one
// Backend.Apply, while the shards go on with their next events.
type Engine struct {
	b    Backend
	opts EngineOptions

	mu           sync.Mutex
	work         sync.Cond // signalled when the queue grows or closing starts
	space        sync.Cond // broadcast when pendingBytes drops
	queue        []*inflight
	pendingBytes int
	closing      bool
	shards       map[ShardID]*Shard
	// caches is the memory of the open shards' read caches together.
	caches cacheBudget

	closed    atomic.Bool // the backend is closed
	lingering bool        // the committer waits for more batches; guarded by mu
	wake      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error

	groups, batches, failed atomic.Uint64

	// Owned by the committer goroutine.
	group    uint64
	spare    []*inflight
	applyBuf []*Batch
	live     []*inflight
	touched  []*Shard
}

// inflight is one committed event on its way to the backend. One
// allocation holds the batch, its Pending and room for a single put.
type inflight struct {
	Batch
	shard   *Shard
	seq     uint64
	gen     *generation
	size    int
	pending Pending
	// confirmed: the event's response waits for this batch's durability.
	confirmed bool
	onePut    [1]abi.KV
	oneDel    [1]string
}

// generation is a shard's life between two Resets. Once a batch of a
// generation fails, every later batch of the generation fails unapplied.
type generation struct {
	failure atomic.Pointer[failure]
}

type failure struct {
	seq uint64 // first failed batch
	err error
}

func (g *generation) fail(seq uint64, err error) {
	g.failure.CompareAndSwap(nil, &failure{seq: seq, err: err})
}

// failedAt returns the failure that covers the batch seq, if any.
func (g *generation) failedAt(seq uint64) error {
	if f := g.failure.Load(); f != nil && seq >= f.seq {
		return f.err
	}
	return nil
}

// NewEngine returns an Engine over b and starts its committer goroutine.
// The Engine owns b: Engine.Close closes it.
func NewEngine(b Backend, opts EngineOptions) *Engine {
	e := &Engine{
		b:      b,
		opts:   opts.withDefaults(),
		shards: make(map[ShardID]*Shard),
		done:   make(chan struct{}),
		wake:   make(chan struct{}, 1),
	}
	e.caches.max = int64(e.opts.CacheTotalBytes)
	e.work.L = &e.mu
	e.space.L = &e.mu
	go e.run()
	return e
}

// Shard returns the storage handle of shard id. A shard has one state per
// Engine: calling Shard again before the handle is closed returns the same
// handle, which stays owned by one goroutine (the shard's actor). A handle
// returned after Close starts from storage and still sees any write of the
// previous handle (Close waits for them).
func (e *Engine) Shard(id ShardID) *Shard {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.shards[id]
	if s == nil {
		s = newShard(e, id)
		e.shards[id] = s
		e.caches.shards.Add(1)
	}
	s.refs++
	return s
}

// Alarms returns every persisted (durable) alarm of every shard.
func (e *Engine) Alarms() ([]Alarm, error) {
	if e.closed.Load() {
		return nil, ErrClosed
	}
	a, err := e.b.Alarms()
	if err != nil {
		return nil, fmt.Errorf("list alarms: %w", err)
	}
	return a, nil
}

// Stats returns the committer's counters.
func (e *Engine) Stats() EngineStats {
	return EngineStats{Groups: e.groups.Load(), Batches: e.batches.Load(), Failed: e.failed.Load()}
}

// Close commits every batch already submitted, stops the committer and
// closes the backend. It is idempotent; later operations return ErrClosed.
func (e *Engine) Close() error {
	e.closeOnce.Do(func() {
		e.mu.Lock()
		e.closing = true
		e.work.Signal()
		e.space.Broadcast()
		if e.lingering {
			select {
			case e.wake <- struct{}{}:
			default:
			}
		}
		e.mu.Unlock()
		<-e.done
		e.closed.Store(true)
		if err := e.b.Close(); err != nil {
			e.closeErr = fmt.Errorf("close storage engine: %w", err)
		}
	})
	return e.closeErr
}

// submit queues w for the committer. It waits while too many bytes are
// pending, and fails once Close has begun.
func (e *Engine) submit(w *inflight) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for !e.closing && e.pendingBytes > 0 && e.pendingBytes+w.size > e.opts.MaxPendingBytes {
		e.space.Wait()
	}
	if e.closing {
		return ErrClosed
	}
	e.queue = append(e.queue, w)
	e.pendingBytes += w.size
	e.work.Signal()
	if e.lingering && w.confirmed {
		select {
		case e.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

// run is the committer: it takes every queued batch (up to MaxGroup) as one
// group, applies it and resolves it, until Close has drained the queue.
func (e *Engine) run() {
	defer close(e.done)
	for {
		e.mu.Lock()
		for len(e.queue) == 0 && !e.closing {
			e.work.Wait()
		}
		if len(e.queue) == 0 {
			e.mu.Unlock()
			return
		}
		if e.opts.UnconfirmedLinger > 0 && !e.closing && len(e.queue) < e.opts.MaxGroup && !e.queueConfirmed() {
			e.lingering = true
			e.mu.Unlock()
			select {
			case <-time.After(e.opts.UnconfirmedLinger):
			case <-e.wake:
			}
			e.mu.Lock()
			e.lingering = false
		}
		var group []*inflight
		if n := len(e.queue); n <= e.opts.MaxGroup {
			group, e.queue = e.queue, e.spare[:0]
		} else {
			group = append(e.spare[:0], e.queue[:e.opts.MaxGroup]...)
			rest := copy(e.queue, e.queue[e.opts.MaxGroup:])
			clear(e.queue[rest:])
			e.queue = e.queue[:rest]
		}
		e.mu.Unlock()

		size := e.commitGroup(group)
		clear(group)
		e.spare = group[:0]

		e.mu.Lock()
		e.pendingBytes -= size
		e.space.Broadcast()
		e.mu.Unlock()
	}
}

// queueConfirmed reports whether a queued batch is confirmed. e.mu held.
func (e *Engine) queueConfirmed() bool {
	for _, w := range e.queue {
		if w.confirmed {
			return true
		}
	}
	return false
}

// commitGroup applies one group with a single Backend.Apply, records
// failures and publishes each touched shard's progress. It returns the
// group's size in bytes.
func (e *Engine) commitGroup(group []*inflight) int {
	e.group++
	batches, live := e.applyBuf[:0], e.live[:0]
	size := 0
	for _, w := range group {
		size += w.size
		if w.gen.failedAt(w.seq) != nil {
			continue // built on a failed batch of its shard: dropped
		}
		live = append(live, w)
		batches = append(batches, &w.Batch)
	}
	applied := len(live)
	if len(batches) > 0 {
		if err := e.b.Apply(batches); err != nil {
			applied = 0
			var ae *ApplyError
			if errors.As(err, &ae) {
				applied = min(max(ae.Applied, 0), len(live))
			}
			for _, w := range live[applied:] {
				if w.gen.failure.Load() == nil {
					w.gen.fail(w.seq, fmt.Errorf("commit shard %s: %w: %w", w.Shard, ErrCommitFailed, err))
				}
			}
		}
		e.groups.Add(1)
		e.batches.Add(uint64(len(batches)))
	}
	e.failed.Add(uint64(len(group) - applied))

	touched := e.touched[:0]
	for _, w := range group {
		s := w.shard
		if s.cgroup != e.group {
			s.cgroup = e.group
			touched = append(touched, s)
		}
		s.cdone = w.seq
	}
	// Failures are recorded above, before progress is published.
	for _, s := range touched {
		s.publish(s.cdone)
	}
	clear(batches)
	clear(live)
	clear(touched)
	e.applyBuf, e.live, e.touched = batches[:0], live[:0], touched[:0]
	return size
}

// Pending is the durability of one event's writes: the output gate.
type Pending struct {
	s   *Shard
	seq uint64 // the batch to wait for
	gen *generation
	err error // already failed
}

// Wait returns when every confirmed write of the event is durable, or with
// an error wrapping ErrCommitFailed if it never will be, or with the
// context's error. It also waits for confirmed writes of earlier events of
// the shard still in flight, which the event may have read: a response must
// not reveal what could still be lost. A nil Pending returns nil at once.
func (p *Pending) Wait(ctx context.Context) error {
	if p == nil {
		return nil
	}
	if p.err != nil {
		return p.err
	}
	s := p.s
	for s.done.Load() < p.seq {
		ch := s.waitChan(p.seq)
		if ch == nil {
			break
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("wait for commit of shard %s: %w", s.id, ctx.Err())
		}
	}
	return p.gen.failedAt(p.seq)
}

// FailedPending returns a Pending whose Wait returns err at once: an event
// that failed before its writes could be submitted.
func FailedPending(err error) *Pending { return &Pending{err: err} }

// Done reports, without blocking, whether Wait would return at once.
func (p *Pending) Done() bool {
	return p == nil || p.err != nil || p.s.done.Load() >= p.seq
}
