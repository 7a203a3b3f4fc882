package host

import (
	"encoding/binary"
	"fmt"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host/internal/wasm"
	"github.com/edgeshard/edgeshard/storage"
)

// The storage quota. How much a shard stores — the bytes of its keys and
// values — is recorded in the shard's own storage under storedKey, and a
// write that changes it rewrites that record in the same event, so it
// commits (or is lost, or rolled back) atomically with the writes it
// counts: no crash, failed commit or discarded event makes it drift, and
// nothing is recounted when a shard starts.
//
// Knowing exactly what a put adds needs the size of the value it replaces.
// When the event has read or written that key, the size is known; when not,
// finding it is a Badger lookup (~7 µs for a key the shard has not read
// lately, doubling the cost of a put of a new key). So the record is exact
// only where it matters, near the quota:
//
//   - Below half the quota, it is an upper bound: a put of a key whose
//     size the event does not know adds its full size, as if the key were
//     new (no read); a delete subtracts what it frees (the storage reads
//     the old value for a delete anyway: this read comes first and leaves
//     it in the read cache for that one). It stays an upper bound.
//   - When a put would take the bound past half the quota, the shard is
//     counted (one listing) and the record becomes exact: from then on each
//     put learns the size it replaces, and a put that would pass the quota
//     is refused. Once under a quarter of the quota it is a bound again.
//
// So a shard far from its quota pays no read per write, a read-then-write
// of the same size (a counter, a rate-limit window) does not even rewrite
// the record, and a listing of at most half the quota happens at most once
// per quarter of the quota written: under 2 bytes read per byte written. A
// shard without a record (written before accounting, or with the quota
// off) is counted on its next write.
//
// Guests never see storedKey: reading or writing it answers -ErrnoInvalid,
// listings skip it, and so does the inspector (inspect.go).

// storedKey holds a shard's stored bytes: 8 bytes little-endian, then a
// byte whose bit 0 says the count is exact (else an upper bound). It is
// documented as reserved (abi/ABI.md, section 7).
const storedKey = "\xff\xffedgeshard.stored-bytes"

// quotaListPage is how many entries one listing of a count reads.
const quotaListPage = 1024

// quotaStore is a shard's storage as its guest reaches it: the
// storage.Shard with the quota enforced and storedKey hidden. With a quota
// ≤ 0 nothing is counted, and each event that writes deletes storedKey, so
// a count can never be stale when the quota is turned on again.
type quotaStore struct {
	a     *actor
	s     *storage.Shard
	quota int64

	// Per event.
	known   map[string]int64 // current size of the entries the event read or wrote (0: absent)
	allGone bool             // the event deleted every key: unknown keys are absent
	dropped bool             // quota off: this event has deleted storedKey
	warned  bool             // this event's refusal is logged

	one    [1]abi.KV // Put's argument to PutMulti
	oneKey [1]string // Delete's to DeleteMulti
}

// beginEvent resets the per-event state.
func (q *quotaStore) beginEvent() {
	if len(q.known) > 1024 {
		q.known = nil // do not keep a huge event's map
	}
	clear(q.known)
	q.allGone, q.dropped, q.warned = false, false, false
}

func errReserved() error {
	return &wasm.CallError{Errno: abi.ErrnoInvalid, Err: fmt.Errorf("key %q is reserved by the host (abi/ABI.md, section 7)", storedKey)}
}

// size is what one entry costs the quota.
func size(key string, val []byte) int64 { return int64(len(key) + len(val)) }

// learn records the current size of key's entry (0: absent).
func (q *quotaStore) learn(key string, n int64) {
	if q.quota <= 0 {
		return
	}
	if q.known == nil {
		q.known = map[string]int64{}
	}
	q.known[key] = n
}

// sizeOf returns the current size of key's entry: known to the event, or
// read when mustRead (else it reports it unknown).
func (q *quotaStore) sizeOf(key string, mustRead bool) (n int64, known bool, err error) {
	if n, ok := q.known[key]; ok {
		return n, true, nil
	}
	if q.allGone {
		return 0, true, nil
	}
	if !mustRead {
		return 0, false, nil
	}
	v, found, err := q.s.Get(key)
	if err != nil || !found {
		return 0, err == nil, err
	}
	return size(key, v), true, nil
}

// stored is the record under storedKey.
type stored struct {
	bytes int64
	exact bool // else an upper bound
	dirty bool // to be written back (not persisted)
}

// load returns the shard's record, counting the shard when it has none.
func (q *quotaStore) load() (stored, error) {
	v, ok, err := q.s.Get(storedKey)
	if err != nil {
		return stored{}, err
	}
	if ok && len(v) == 9 {
		return stored{bytes: int64(binary.LittleEndian.Uint64(v)), exact: v[8]&1 != 0}, nil
	}
	return q.count()
}

// count lists the shard and returns an exact record of it.
func (q *quotaStore) count() (stored, error) {
	var n int64
	opts := abi.ListOptions{Limit: quotaListPage}
	for {
		kvs, err := q.s.List(opts)
		if err != nil {
			return stored{}, err
		}
		for _, kv := range kvs {
			if kv.Key != storedKey {
				n += size(kv.Key, kv.Value)
			}
		}
		if len(kvs) < quotaListPage {
			return stored{bytes: n, exact: true, dirty: true}, nil
		}
		opts.StartAfter, opts.HasStartAfter = kvs[len(kvs)-1].Key, true
	}
}

// grow readies r for puts adding at most n bytes: a bound that would pass
// half the quota is replaced by an exact count.
func (q *quotaStore) grow(r *stored, n int64) error {
	if r.exact || r.bytes+n <= q.quota/2 {
		return nil
	}
	c, err := q.count()
	if err != nil {
		return err
	}
	*r = c
	return nil
}

// add applies a change of delta bytes to r; an exact count well under the
// quota becomes a bound again.
func (q *quotaStore) add(r *stored, delta int64) {
	r.bytes = max(r.bytes+delta, 0)
	r.dirty = r.dirty || delta != 0
	if r.exact && r.bytes < q.quota/4 {
		r.exact, r.dirty = false, true
	}
}

// save writes r into the current event if it changed; unconfirmed as the
// write that changed it, so an event of unconfirmed writes stays one.
func (q *quotaStore) save(r stored, unconfirmed bool) error {
	if !r.dirty {
		return nil
	}
	var b [9]byte
	binary.LittleEndian.PutUint64(b[:], uint64(r.bytes))
	if r.exact {
		b[8] = 1
	}
	return q.s.Put(storedKey, b[:], unconfirmed)
}

// drop deletes storedKey once per event while the quota is off.
func (q *quotaStore) drop() error {
	if q.dropped {
		return nil
	}
	q.dropped = true
	_, err := q.s.Delete(storedKey)
	return err
}

// admit refuses growth by delta past the quota (r is exact).
func (q *quotaStore) admit(r stored, delta int64) error {
	if delta <= 0 || r.bytes+delta <= q.quota {
		return nil
	}
	err := fmt.Errorf("the shard stores %d bytes; %d more would exceed %s = %d", r.bytes, delta, limitQuota, q.quota)
	if !q.warned {
		q.warned = true
		q.a.limitReached(limitQuota, err.Error())
	}
	return &wasm.CallError{Errno: abi.ErrnoQuota, Err: fmt.Errorf("storage quota: %w", err)}
}

func (q *quotaStore) Get(key string) ([]byte, bool, error) {
	if key == storedKey {
		return nil, false, errReserved()
	}
	v, found, err := q.s.Get(key)
	if err == nil && q.quota > 0 {
		n := int64(0)
		if found {
			n = size(key, v)
		}
		q.learn(key, n)
	}
	return v, found, err
}

func (q *quotaStore) GetMulti(keys []string) ([]abi.KV, error) {
	for _, k := range keys {
		if k == storedKey {
			return nil, errReserved()
		}
	}
	kvs, err := q.s.GetMulti(keys)
	if err == nil && q.quota > 0 {
		for _, k := range keys {
			q.learn(k, 0)
		}
		for _, kv := range kvs {
			q.learn(kv.Key, size(kv.Key, kv.Value))
		}
	}
	return kvs, err
}

func (q *quotaStore) List(opts abi.ListOptions) ([]abi.KV, error) {
	return listHiding(q.s, opts)
}

// listHiding lists like s.List, without storedKey.
func listHiding(s *storage.Shard, opts abi.ListOptions) ([]abi.KV, error) {
	limit := opts.Limit
	if limit > 0 && limit < 1<<32-1 {
		opts.Limit++ // room for storedKey, should it be among them
	}
	kvs, err := s.List(opts)
	if err != nil {
		return nil, err
	}
	for i := range kvs {
		if kvs[i].Key == storedKey {
			kvs = append(kvs[:i], kvs[i+1:]...)
			break
		}
	}
	if limit > 0 && uint32(len(kvs)) > limit {
		kvs = kvs[:limit]
	}
	return kvs, nil
}

func (q *quotaStore) Put(key string, val []byte, unconfirmed bool) error {
	if q.quota <= 0 && key != storedKey {
		if err := q.drop(); err != nil {
			return err
		}
		return q.s.Put(key, val, unconfirmed)
	}
	q.one[0] = abi.KV{Key: key, Value: val}
	err := q.PutMulti(q.one[:], unconfirmed)
	q.one[0] = abi.KV{}
	return err
}

// dups finds the earlier occurrence of a key in a multi-key call: by a
// scan back for a few keys, from an index built once for more.
type dups struct{ prev []int }

func findDups(n int, key func(int) string) dups {
	if n <= 16 {
		return dups{}
	}
	d := dups{prev: make([]int, n)}
	last := make(map[string]int, n)
	for i := 0; i < n; i++ {
		d.prev[i] = -1
		if j, ok := last[key(i)]; ok {
			d.prev[i] = j
		}
		last[key(i)] = i
	}
	return d
}

// of returns the index of the previous occurrence of key i, or -1.
func (d dups) of(i int, key func(int) string) int {
	if d.prev != nil {
		return d.prev[i]
	}
	for j := i - 1; j >= 0; j-- {
		if key(j) == key(i) {
			return j
		}
	}
	return -1
}

func (q *quotaStore) PutMulti(kvs []abi.KV, unconfirmed bool) error {
	for i := range kvs {
		if kvs[i].Key == storedKey {
			return errReserved()
		}
	}
	if q.quota <= 0 {
		if err := q.drop(); err != nil {
			return err
		}
		return q.s.PutMulti(kvs, unconfirmed)
	}
	r, err := q.load()
	if err != nil {
		return err
	}
	// The growth as a bound (an entry of unknown old size counts in full),
	// then, when the record is exact, exactly.
	key := func(i int) string { return kvs[i].Key }
	d := findDups(len(kvs), key)
	delta, err := q.growth(kvs, d, key, false)
	if err != nil {
		return err
	}
	if err := q.grow(&r, delta); err != nil {
		return err
	}
	if r.exact {
		if delta, err = q.growth(kvs, d, key, true); err != nil {
			return err
		}
		if err := q.admit(r, delta); err != nil {
			return err
		}
	}
	if err := q.s.PutMulti(kvs, unconfirmed); err != nil {
		return err
	}
	for i := range kvs {
		q.learn(kvs[i].Key, size(kvs[i].Key, kvs[i].Value))
	}
	q.add(&r, delta)
	return q.save(r, unconfirmed)
}

// growth returns what putting kvs adds to the shard: exactly when
// mustRead, else as a bound (an entry of unknown old size counts in full).
func (q *quotaStore) growth(kvs []abi.KV, d dups, key func(int) string, mustRead bool) (int64, error) {
	var delta int64
	for i := range kvs {
		delta += size(kvs[i].Key, kvs[i].Value)
		if j := d.of(i, key); j >= 0 {
			delta -= size(kvs[j].Key, kvs[j].Value)
			continue
		}
		old, _, err := q.sizeOf(kvs[i].Key, mustRead)
		if err != nil {
			return 0, err
		}
		delta -= old
	}
	return delta, nil
}

func (q *quotaStore) Delete(key string) (bool, error) {
	if q.quota <= 0 && key != storedKey {
		if err := q.drop(); err != nil {
			return false, err
		}
		return q.s.Delete(key)
	}
	q.oneKey[0] = key
	n, err := q.DeleteMulti(q.oneKey[:])
	q.oneKey[0] = ""
	return n > 0, err
}

func (q *quotaStore) DeleteMulti(keys []string) (int, error) {
	for _, k := range keys {
		if k == storedKey {
			return 0, errReserved()
		}
	}
	if q.quota <= 0 {
		if err := q.drop(); err != nil {
			return 0, err
		}
		return q.s.DeleteMulti(keys)
	}
	r, err := q.load()
	if err != nil {
		return 0, err
	}
	key := func(i int) string { return keys[i] }
	d := findDups(len(keys), key)
	var freed int64
	for i, k := range keys {
		if d.of(i, key) >= 0 {
			continue // deleted by its first occurrence
		}
		old, _, err := q.sizeOf(k, true)
		if err != nil {
			return 0, err
		}
		freed += old
	}
	n, err := q.s.DeleteMulti(keys)
	if err != nil {
		return n, err
	}
	for _, k := range keys {
		q.learn(k, 0)
	}
	q.add(&r, -freed)
	// A delete that deletes makes its event confirmed anyway; a record
	// alone need not be (a lost one is counted again).
	return n, q.save(r, true)
}

func (q *quotaStore) DeleteAll() error {
	if err := q.s.DeleteAll(); err != nil {
		return err
	}
	if q.quota <= 0 {
		return nil // storedKey went with everything else
	}
	clear(q.known)
	q.allGone = true
	return q.save(stored{exact: true, dirty: true}, false)
}

var _ wasm.Store = (*quotaStore)(nil)
