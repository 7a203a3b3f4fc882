package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/edgeshard/edgeshard/abi"
)

// Shard is one shard's storage as its actor sees it. Reads see, newest
// first: the current event's own writes, then the events committed but not
// yet durable (the overlay), then the durable state (read cache, backend).
// Values returned by Get, GetMulti and List may be shared with those layers
// and must not be modified.
//
// A Shard is not safe for concurrent use by several goroutines; the engine's
// committer touches only its progress counters, under their own lock.
type Shard struct {
	e    *Engine
	id   ShardID
	refs int // under e.mu

	// Owned by the actor.
	ev            event
	ov            map[string]ovEntry // latest write of each key in flight
	ovPeak        int
	ovClear       uint64  // a DeleteAll in flight (batch seq), or 0
	ovAlarm       ovAlarm // latest alarm change in flight
	cache         cache
	alarm         cachedAlarm
	infl          []*inflight // in flight, in seq order, from infl[head]
	head          int
	seq           uint64 // last batch submitted
	pruned        uint64 // batches up to this one are folded into the cache
	lastConfirmed uint64 // last batch of this generation with confirmed writes
	gen           *generation

	// Shared with the committer.
	done   atomic.Uint64 // every batch up to this one is resolved
	wmu    sync.Mutex
	waitCh chan struct{} // closed on progress, under wmu

	// Owned by the committer.
	cgroup uint64
	cdone  uint64
}

type ovEntry struct {
	val []byte
	seq uint64
	del bool
}

type ovAlarm struct {
	seq uint64 // 0: no alarm change in flight
	at  int64  // 0: deleted
}

type cachedAlarm struct {
	known bool
	at    int64 // 0: none
}

func newShard(e *Engine, id ShardID) *Shard {
	return &Shard{
		e:     e,
		id:    id,
		ov:    make(map[string]ovEntry),
		cache: newCache(e.opts.CacheBytes, &e.caches),
		gen:   &generation{},
	}
}

// ID returns the shard's id.
func (s *Shard) ID() ShardID { return s.id }

// Get returns the value of key.
func (s *Shard) Get(key string) ([]byte, bool, error) {
	if err := checkKey(key); err != nil {
		return nil, false, err
	}
	if err := s.begin(); err != nil {
		return nil, false, err
	}
	return s.get(key)
}

// GetMulti returns the entries of the keys that exist, in request order,
// each key once.
func (s *Shard) GetMulti(keys []string) ([]abi.KV, error) {
	if err := checkCount(len(keys)); err != nil {
		return nil, err
	}
	for _, k := range keys {
		if err := checkKey(k); err != nil {
			return nil, err
		}
	}
	if err := s.begin(); err != nil {
		return nil, err
	}
	out := make([]abi.KV, 0, len(keys))
	for i, k := range keys {
		if slices.Contains(keys[:i], k) {
			continue
		}
		v, found, err := s.get(k)
		if err != nil {
			return nil, err
		}
		if found {
			out = append(out, abi.KV{Key: k, Value: v})
		}
	}
	return out, nil
}

// Put sets key to a copy of val in the current event. An unconfirmed write
// does not hold the event's response (allowUnconfirmed).
func (s *Shard) Put(key string, val []byte, unconfirmed bool) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if err := checkValue(val); err != nil {
		return err
	}
	if err := s.begin(); err != nil {
		return err
	}
	s.ev.set(key, cloneValue(val), false)
	s.ev.confirmed = s.ev.confirmed || !unconfirmed
	return nil
}

// PutMulti sets every entry, in order, or none if one breaks a limit.
func (s *Shard) PutMulti(kvs []abi.KV, unconfirmed bool) error {
	if err := checkCount(len(kvs)); err != nil {
		return err
	}
	for i := range kvs {
		if err := checkKey(kvs[i].Key); err != nil {
			return err
		}
		if err := checkValue(kvs[i].Value); err != nil {
			return err
		}
	}
	if err := s.begin(); err != nil {
		return err
	}
	for i := range kvs {
		s.ev.set(kvs[i].Key, cloneValue(kvs[i].Value), false)
	}
	s.ev.confirmed = s.ev.confirmed || (!unconfirmed && len(kvs) > 0)
	return nil
}

// Delete deletes key in the current event and reports whether it existed.
func (s *Shard) Delete(key string) (bool, error) {
	if err := checkKey(key); err != nil {
		return false, err
	}
	if err := s.begin(); err != nil {
		return false, err
	}
	return s.delete(key)
}

// DeleteMulti deletes the keys and returns how many existed.
func (s *Shard) DeleteMulti(keys []string) (int, error) {
	if err := checkCount(len(keys)); err != nil {
		return 0, err
	}
	for _, k := range keys {
		if err := checkKey(k); err != nil {
			return 0, err
		}
	}
	if err := s.begin(); err != nil {
		return 0, err
	}
	n := 0
	for _, k := range keys {
		found, err := s.delete(k)
		if err != nil {
			return n, err
		}
		if found {
			n++
		}
	}
	return n, nil
}

func (s *Shard) delete(key string) (bool, error) {
	_, found, err := s.get(key)
	if err != nil || !found {
		return false, err // deleting an absent key writes nothing
	}
	s.ev.set(key, nil, true)
	s.ev.confirmed = true
	return true, nil
}

// DeleteAll deletes every key of the shard in the current event; the alarm
// stays.
func (s *Shard) DeleteAll() error {
	if err := s.begin(); err != nil {
		return err
	}
	s.ev.clearWrites()
	s.ev.deleteAll = true
	s.ev.confirmed = true
	return nil
}

// SetAlarm sets the shard's alarm to unixMs (> 0) in the current event.
func (s *Shard) SetAlarm(unixMs int64) error {
	if unixMs <= 0 {
		return fmt.Errorf("alarm time %d: %w", unixMs, ErrInvalid)
	}
	if err := s.begin(); err != nil {
		return err
	}
	s.ev.alarmSet, s.ev.alarmAt = true, unixMs
	s.ev.confirmed = true
	return nil
}

// DeleteAlarm deletes the shard's alarm in the current event.
func (s *Shard) DeleteAlarm() error {
	if err := s.begin(); err != nil {
		return err
	}
	s.ev.alarmSet, s.ev.alarmAt = true, 0
	s.ev.confirmed = true
	return nil
}

// GetAlarm returns the shard's alarm, as the current event left it.
func (s *Shard) GetAlarm() (int64, bool, error) {
	if err := s.begin(); err != nil {
		return 0, false, err
	}
	switch {
	case s.ev.alarmSet:
		return s.ev.alarmAt, s.ev.alarmAt > 0, nil
	case s.ovAlarm.seq != 0:
		return s.ovAlarm.at, s.ovAlarm.at > 0, nil
	case s.alarm.known:
		return s.alarm.at, s.alarm.at > 0, nil
	}
	at, found, err := s.e.b.GetAlarm(s.id)
	if err != nil {
		return 0, false, fmt.Errorf("get alarm of shard %s: %w", s.id, err)
	}
	if !found {
		at = 0
	}
	s.alarm = cachedAlarm{known: true, at: at}
	return at, found, nil
}

// List returns the entries opts selects, merging the current event, the
// writes in flight and the durable state, in bytewise key order (or
// reversed).
func (s *Shard) List(opts abi.ListOptions) ([]abi.KV, error) {
	sp, err := makeSpan(&opts)
	if err != nil {
		return nil, err
	}
	if err := s.begin(); err != nil {
		return nil, err
	}
	if sp.empty() {
		return nil, nil
	}
	// The upper layers: the event over the overlay, deletions included.
	var upper []evEntry
	if !s.ev.deleteAll {
		for k, o := range s.ov {
			if sp.contains(k) && s.ev.find(k) < 0 {
				upper = append(upper, evEntry{key: k, val: o.val, del: o.del})
			}
		}
	}
	for _, e := range s.ev.ents {
		if sp.contains(e.key) {
			upper = append(upper, e)
		}
	}
	slices.SortFunc(upper, func(a, b evEntry) int { return strings.Compare(a.key, b.key) })
	if opts.Reverse {
		slices.Reverse(upper)
	}

	var base []abi.KV
	if !s.ev.deleteAll && s.ovClear == 0 {
		bo := opts
		if bo.Limit > 0 {
			// Each upper entry hides at most one backend entry.
			if n := uint64(bo.Limit) + uint64(len(upper)); n <= math.MaxUint32 {
				bo.Limit = uint32(n)
			} else {
				bo.Limit = 0
			}
		}
		if base, err = s.e.b.List(s.id, bo); err != nil {
			return nil, fmt.Errorf("list shard %s: %w", s.id, err)
		}
	}

	before := func(a, b string) bool {
		if opts.Reverse {
			return a > b
		}
		return a < b
	}
	limit := int(opts.Limit)
	n := len(upper) + len(base)
	if limit > 0 && limit < n {
		n = limit
	}
	out := make([]abi.KV, 0, n)
	i, j := 0, 0
	for (i < len(upper) || j < len(base)) && (limit == 0 || len(out) < limit) {
		switch {
		case j == len(base) || (i < len(upper) && before(upper[i].key, base[j].Key)):
			if !upper[i].del {
				out = append(out, abi.KV{Key: upper[i].key, Value: upper[i].val})
			}
			i++
		case i == len(upper) || before(base[j].Key, upper[i].key):
			out = append(out, base[j])
			j++
		default: // same key: the upper layer wins
			if !upper[i].del {
				out = append(out, abi.KV{Key: upper[i].key, Value: upper[i].val})
			}
			i++
			j++
		}
	}
	return out, nil
}

// Commit ends the current event: its writes are submitted to the group
// committer as one atomic batch and become visible to later events at once.
// It never waits for the disk (unless MaxPendingBytes is exceeded). The
// Pending is nil when nothing needs waiting for; otherwise it resolves when
// the event's confirmed writes — and those of earlier events still in
// flight, which the event may have read — are durable.
func (s *Shard) Commit() *Pending {
	if err := s.begin(); err != nil {
		s.ev.reset()
		return &Pending{err: s.commitErr(err)}
	}
	if s.ev.hasWrites() {
		w := s.build()
		if err := s.e.submit(w); err != nil {
			err = s.commitErr(err)
			s.gen.fail(w.seq, err)
			s.ev.reset()
			return &Pending{err: err}
		}
		s.seq = w.seq
		if s.ev.confirmed {
			s.lastConfirmed = w.seq
		}
		s.overlay(w)
		s.infl = append(s.infl, w)
		s.ev.reset()
		if s.lastConfirmed == w.seq {
			return &w.pending
		}
	}
	lc := s.lastConfirmed
	if lc == 0 || s.done.Load() >= lc && s.gen.failure.Load() == nil {
		return nil
	}
	return &Pending{s: s, seq: lc, gen: s.gen}
}

func (s *Shard) commitErr(err error) error {
	if s.e.closed.Load() || errors.Is(err, ErrClosed) {
		return fmt.Errorf("commit shard %s: %w: %w", s.id, ErrCommitFailed, ErrClosed)
	}
	return err // a failure of the generation already wraps ErrCommitFailed
}

// EventBatch returns the current event's writes as the Batch Commit would
// submit, without ending the event, and false when it has none. Its values
// are shared with the event and must not be modified. The host copies it
// into a shard's own SQL database (storage/shardsql) so that a crash
// between the two commits can be repaired from there.
func (s *Shard) EventBatch() (Batch, bool) {
	ev := &s.ev
	if !ev.hasWrites() {
		return Batch{}, false
	}
	b := Batch{Shard: s.id, DeleteAll: ev.deleteAll}
	if ev.alarmSet {
		if ev.alarmAt > 0 {
			b.SetAlarm = ev.alarmAt
		} else {
			b.DelAlarm = true
		}
	}
	for i := range ev.ents {
		if e := &ev.ents[i]; e.del {
			b.Deletes = append(b.Deletes, e.key)
		} else {
			b.Puts = append(b.Puts, abi.KV{Key: e.key, Value: e.val})
		}
	}
	return b, true
}

// Submitted returns a Pending that resolves once every batch the shard has
// submitted so far — unconfirmed ones included — is durable, or fails if
// one of them failed.
func (s *Shard) Submitted() *Pending {
	if s.seq == 0 {
		return nil
	}
	return &Pending{s: s, seq: s.seq, gen: s.gen}
}

// Abort discards the current event's writes.
func (s *Shard) Abort() { s.ev.reset() }

// Err returns a non-nil error (wrapping ErrCommitFailed) once a commit of
// this shard has failed; the actor then discards its instance and calls
// Reset.
func (s *Shard) Err() error {
	if f := s.gen.failure.Load(); f != nil {
		return f.err
	}
	return nil
}

// Reset waits until every batch the shard submitted is resolved, then drops
// the overlay, the cache and the current event, so that reads start again
// from the backend; later events start clean.
func (s *Shard) Reset() {
	s.settle()
	s.ev.reset()
	s.ov = make(map[string]ovEntry)
	s.ovPeak, s.ovClear, s.ovAlarm = 0, 0, ovAlarm{}
	s.cache.clear()
	s.alarm = cachedAlarm{}
	clear(s.infl)
	s.infl, s.head = s.infl[:0], 0
	s.pruned = s.done.Load()
	s.lastConfirmed = 0
	s.gen = &generation{}
}

// Close waits for the shard's writes in flight and releases the handle; the
// Engine forgets the shard when its last handle is closed. The handle must
// not be used afterwards.
func (s *Shard) Close() {
	s.settle()
	s.e.mu.Lock()
	defer s.e.mu.Unlock()
	s.refs--
	if s.refs <= 0 && s.e.shards[s.id] == s {
		delete(s.e.shards, s.id)
		s.cache.clear() // give its bytes back to the engine's budget
		s.e.caches.shards.Add(-1)
	}
}

// settle waits until every submitted batch is resolved.
func (s *Shard) settle() {
	p := Pending{s: s, seq: s.seq, gen: s.gen}
	_ = p.Wait(context.Background()) // only the progress matters here
}

// begin starts an operation: it fails on a closed engine or a failed
// shard, and folds batches that became durable into the cache.
func (s *Shard) begin() error {
	if s.e.closed.Load() {
		return ErrClosed
	}
	d := s.done.Load() // before the failure check: failures are published first
	if f := s.gen.failure.Load(); f != nil {
		return f.err
	}
	if d != s.pruned {
		s.prune(d)
	}
	return nil
}

func (s *Shard) get(key string) ([]byte, bool, error) {
	if i := s.ev.find(key); i >= 0 {
		e := &s.ev.ents[i]
		return e.val, !e.del, nil
	}
	if s.ev.deleteAll {
		return nil, false, nil
	}
	if o, ok := s.ov[key]; ok {
		return o.val, !o.del, nil
	}
	if s.ovClear != 0 {
		return nil, false, nil
	}
	if v, found, ok := s.cache.get(key); ok {
		return v, found, nil
	}
	v, found, err := s.e.b.Get(s.id, key)
	if err != nil {
		return nil, false, fmt.Errorf("get from shard %s: %w", s.id, err)
	}
	// Nothing of this shard is in flight for key (the overlay says so), so
	// the backend's value is current.
	s.cache.put(key, v, found)
	return v, found, nil
}

// build turns the current event into a batch.
func (s *Shard) build() *inflight {
	ev := &s.ev
	w := &inflight{shard: s, seq: s.seq + 1, gen: s.gen, confirmed: s.ev.confirmed}
	w.pending = Pending{s: s, seq: w.seq, gen: w.gen}
	w.Batch.Shard = s.id
	w.DeleteAll = ev.deleteAll
	if ev.alarmSet {
		if ev.alarmAt > 0 {
			w.SetAlarm = ev.alarmAt
		} else {
			w.DelAlarm = true
		}
	}
	nput := 0
	for i := range ev.ents {
		if !ev.ents[i].del {
			nput++
		}
	}
	ndel := len(ev.ents) - nput
	switch nput {
	case 0:
	case 1:
		w.Puts = w.onePut[:0:1]
	default:
		w.Puts = make([]abi.KV, 0, nput)
	}
	switch ndel {
	case 0:
	case 1:
		w.Deletes = w.oneDel[:0:1]
	default:
		w.Deletes = make([]string, 0, ndel)
	}
	size := 64
	for i := range ev.ents {
		e := &ev.ents[i]
		size += len(e.key) + len(e.val)
		if e.del {
			w.Deletes = append(w.Deletes, e.key)
		} else {
			w.Puts = append(w.Puts, abi.KV{Key: e.key, Value: e.val})
		}
	}
	w.size = size
	return w
}

// overlay makes a submitted batch visible to later events.
func (s *Shard) overlay(w *inflight) {
	if w.DeleteAll {
		clear(s.ov)
		s.ovClear = w.seq
		s.cache.clear()
	}
	for i := range w.Puts {
		s.ov[w.Puts[i].Key] = ovEntry{val: w.Puts[i].Value, seq: w.seq}
	}
	for _, k := range w.Deletes {
		s.ov[k] = ovEntry{seq: w.seq, del: true}
	}
	s.ovPeak = max(s.ovPeak, len(s.ov))
	if w.SetAlarm > 0 || w.DelAlarm {
		s.ovAlarm = ovAlarm{seq: w.seq, at: w.SetAlarm}
	}
}

// prune folds the batches up to d, now durable, from the overlay into the
// cache.
func (s *Shard) prune(d uint64) {
	for s.head < len(s.infl) && s.infl[s.head].seq <= d {
		w := s.infl[s.head]
		s.infl[s.head] = nil
		s.head++
		if s.ovClear == w.seq {
			s.ovClear = 0
		}
		for i := range w.Puts {
			kv := &w.Puts[i]
			if o, ok := s.ov[kv.Key]; ok && o.seq == w.seq {
				delete(s.ov, kv.Key)
				s.cache.put(kv.Key, kv.Value, true)
			}
		}
		for _, k := range w.Deletes {
			if o, ok := s.ov[k]; ok && o.seq == w.seq {
				delete(s.ov, k)
				s.cache.put(k, nil, false)
			}
		}
		if s.ovAlarm.seq == w.seq {
			s.alarm = cachedAlarm{known: true, at: s.ovAlarm.at}
			s.ovAlarm = ovAlarm{}
		}
	}
	if s.head == len(s.infl) {
		s.infl, s.head = s.infl[:0], 0
		if len(s.ov) == 0 && s.ovPeak > 4096 {
			s.ov, s.ovPeak = make(map[string]ovEntry), 0 // give back a grown map
		}
	}
	s.pruned = d
}

// publish records progress up to seq and wakes the waiters (committer).
func (s *Shard) publish(seq uint64) {
	s.done.Store(seq)
	s.wmu.Lock()
	if s.waitCh != nil {
		close(s.waitCh)
		s.waitCh = nil
	}
	s.wmu.Unlock()
}

// waitChan returns a channel closed on the next progress, or nil if the
// batch seq is already resolved.
func (s *Shard) waitChan(seq uint64) chan struct{} {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.done.Load() >= seq {
		return nil
	}
	if s.waitCh == nil {
		s.waitCh = make(chan struct{})
	}
	return s.waitCh
}

// event is the current event's uncommitted writes, one entry per key.
type event struct {
	ents      []evEntry
	idx       map[string]int // key -> ents index, once ents is large
	deleteAll bool
	alarmSet  bool
	alarmAt   int64 // 0: delete
	confirmed bool
}

type evEntry struct {
	key string
	val []byte
	del bool
}

// evIndexAt is the event size from which keys are indexed by a map.
const evIndexAt = 16

func (ev *event) find(key string) int {
	if ev.idx != nil {
		if i, ok := ev.idx[key]; ok {
			return i
		}
		return -1
	}
	for i := len(ev.ents) - 1; i >= 0; i-- {
		if ev.ents[i].key == key {
			return i
		}
	}
	return -1
}

func (ev *event) set(key string, val []byte, del bool) {
	if i := ev.find(key); i >= 0 {
		ev.ents[i].val, ev.ents[i].del = val, del
		return
	}
	ev.ents = append(ev.ents, evEntry{key: key, val: val, del: del})
	switch {
	case ev.idx != nil:
		ev.idx[key] = len(ev.ents) - 1
	case len(ev.ents) > evIndexAt:
		ev.idx = make(map[string]int, 2*len(ev.ents))
		for i := range ev.ents {
			ev.idx[ev.ents[i].key] = i
		}
	}
}

func (ev *event) hasWrites() bool { return len(ev.ents) > 0 || ev.deleteAll || ev.alarmSet }

func (ev *event) clearWrites() {
	clear(ev.ents)
	ev.ents = ev.ents[:0]
	ev.idx = nil
}

func (ev *event) reset() {
	ev.clearWrites()
	if cap(ev.ents) > 1024 {
		ev.ents = nil // do not keep a huge event's buffer
	}
	ev.deleteAll, ev.alarmSet, ev.alarmAt, ev.confirmed = false, false, 0, false
}

// cloneValue copies val; a nil value is stored as an empty one.
func cloneValue(val []byte) []byte {
	if val == nil {
		return []byte{}
	}
	return bytes.Clone(val)
}
