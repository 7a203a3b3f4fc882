package host

import (
	"encoding/binary"
	"fmt"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host/internal/wasm"
	"github.com/edgeshard/edgeshard/storage"
)

// The storage quota. How much a shard stores — the bytes of its keys and
// values — is kept in the shard's own storage under storedKey, and every
// write that changes it rewrites that key in the same event, so the count
// commits (or is lost, or rolled back) atomically with the writes it
// counts: no crash, failed commit or discarded event can make it drift,
// and nothing is recounted when a shard starts. The price is one extra
// read per write (the old value's size, usually from the event, the
// overlay or the read cache) and, when the size changes, one extra write
// of 8 bytes into the same batch. A shard that has no count yet (it was
// written before accounting, or with the quota off) is counted once, by a
// listing, on its next write.
//
// Guests never see storedKey: reading or writing it answers -ErrnoInvalid,
// listings skip it, and so does the inspector (inspect.go).

// storedKey holds a shard's stored bytes, 8 bytes little-endian. It is
// longer than any key a guest is likely to choose and is documented as
// reserved (abi/ABI.md, section 7).
const storedKey = "\xff\xffedgeshard.stored-bytes"

// quotaListPage is how many entries one listing of the first count reads.
const quotaListPage = 1024

// quotaStore is a shard's storage as its guest reaches it: the
// storage.Shard with the quota enforced and storedKey hidden. With a quota
// ≤ 0 nothing is counted, and each event that writes deletes storedKey, so
// a count can never be stale when the quota is turned on again.
type quotaStore struct {
	a       *actor
	s       *storage.Shard
	quota   int64
	dropped bool // quota off: this event has deleted storedKey
	warned  bool // this event's refusal is logged
}

// beginEvent resets the per-event state.
func (q *quotaStore) beginEvent() { q.dropped, q.warned = false, false }

func errReserved() error {
	return &wasm.CallError{Errno: abi.ErrnoInvalid, Err: fmt.Errorf("key %q is reserved by the host (abi/ABI.md, section 7)", storedKey)}
}

// size is what one entry costs the quota.
func size(key string, val []byte) int64 { return int64(len(key) + len(val)) }

// stored returns the shard's stored bytes; fresh reports a count made now
// by listing (it must then be written even if the size does not change).
func (q *quotaStore) stored() (n int64, fresh bool, err error) {
	v, ok, err := q.s.Get(storedKey)
	if err != nil {
		return 0, false, err
	}
	if ok && len(v) == 8 {
		return int64(binary.LittleEndian.Uint64(v)), false, nil
	}
	opts := abi.ListOptions{Limit: quotaListPage}
	for {
		kvs, err := q.s.List(opts)
		if err != nil {
			return 0, false, err
		}
		for _, kv := range kvs {
			if kv.Key != storedKey {
				n += size(kv.Key, kv.Value)
			}
		}
		if len(kvs) < quotaListPage {
			return n, true, nil
		}
		opts.StartAfter, opts.HasStartAfter = kvs[len(kvs)-1].Key, true
	}
}

// setStored writes the count into the current event; unconfirmed as the
// write that changed it, so an event of unconfirmed writes stays one.
func (q *quotaStore) setStored(n int64, unconfirmed bool) error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(max(n, 0)))
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

// admit refuses growth by delta past the quota.
func (q *quotaStore) admit(cur, delta int64) error {
	if delta <= 0 || cur+delta <= q.quota {
		return nil
	}
	err := fmt.Errorf("the shard stores %d bytes; %d more would exceed %s = %d", cur, delta, limitQuota, q.quota)
	if !q.warned {
		q.warned = true
		q.a.limitReached(limitQuota, err.Error())
	}
	return &wasm.CallError{Errno: abi.ErrnoQuota, Err: fmt.Errorf("storage quota: %w", err)}
}

// oldSize returns the current size of key's entry (0 when absent).
func (q *quotaStore) oldSize(key string) (int64, error) {
	v, found, err := q.s.Get(key)
	if err != nil || !found {
		return 0, err
	}
	return size(key, v), nil
}

func (q *quotaStore) Get(key string) ([]byte, bool, error) {
	if key == storedKey {
		return nil, false, errReserved()
	}
	return q.s.Get(key)
}

func (q *quotaStore) GetMulti(keys []string) ([]abi.KV, error) {
	for _, k := range keys {
		if k == storedKey {
			return nil, errReserved()
		}
	}
	return q.s.GetMulti(keys)
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
	if key == storedKey {
		return errReserved()
	}
	if q.quota <= 0 {
		if err := q.drop(); err != nil {
			return err
		}
		return q.s.Put(key, val, unconfirmed)
	}
	cur, fresh, err := q.stored()
	if err != nil {
		return err
	}
	old, err := q.oldSize(key)
	if err != nil {
		return err
	}
	delta := size(key, val) - old
	if err := q.admit(cur, delta); err != nil {
		return err
	}
	if err := q.s.Put(key, val, unconfirmed); err != nil {
		return err
	}
	if delta != 0 || fresh {
		return q.setStored(cur+delta, unconfirmed)
	}
	return nil
}

// earlier returns, for a multi-key call of n keys, a function telling the
// index of the previous occurrence of key i (or -1): a linear scan for a
// few keys, a map for more.
func earlier(n int, key func(int) string) func(i int) int {
	if n <= 16 {
		return func(i int) int {
			k := key(i)
			for j := i - 1; j >= 0; j-- {
				if key(j) == k {
					return j
				}
			}
			return -1
		}
	}
	last := make(map[string]int, n)
	prev := make([]int, n)
	for i := 0; i < n; i++ {
		prev[i] = -1
		if j, ok := last[key(i)]; ok {
			prev[i] = j
		}
		last[key(i)] = i
	}
	return func(i int) int { return prev[i] }
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
	cur, fresh, err := q.stored()
	if err != nil {
		return err
	}
	prev := earlier(len(kvs), func(i int) string { return kvs[i].Key })
	var delta int64
	for i := range kvs {
		old := int64(0)
		if j := prev(i); j >= 0 {
			old = size(kvs[j].Key, kvs[j].Value)
		} else if old, err = q.oldSize(kvs[i].Key); err != nil {
			return err
		}
		delta += size(kvs[i].Key, kvs[i].Value) - old
	}
	if err := q.admit(cur, delta); err != nil {
		return err
	}
	if err := q.s.PutMulti(kvs, unconfirmed); err != nil {
		return err
	}
	if delta != 0 || fresh {
		return q.setStored(cur+delta, unconfirmed)
	}
	return nil
}

func (q *quotaStore) Delete(key string) (bool, error) {
	if key == storedKey {
		return false, errReserved()
	}
	if q.quota <= 0 {
		if err := q.drop(); err != nil {
			return false, err
		}
		return q.s.Delete(key)
	}
	cur, fresh, err := q.stored()
	if err != nil {
		return false, err
	}
	old, err := q.oldSize(key)
	if err != nil {
		return false, err
	}
	existed, err := q.s.Delete(key)
	if err != nil {
		return false, err
	}
	if existed || fresh {
		// A delete makes its event confirmed anyway: so is the count.
		return existed, q.setStored(cur-old, true)
	}
	return false, nil
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
	cur, fresh, err := q.stored()
	if err != nil {
		return 0, err
	}
	prev := earlier(len(keys), func(i int) string { return keys[i] })
	var freed int64
	for i, k := range keys {
		if prev(i) >= 0 {
			continue // deleted by its first occurrence
		}
		old, err := q.oldSize(k)
		if err != nil {
			return 0, err
		}
		freed += old
	}
	n, err := q.s.DeleteMulti(keys)
	if err != nil {
		return n, err
	}
	if freed != 0 || fresh {
		return n, q.setStored(cur-freed, true)
	}
	return n, nil
}

func (q *quotaStore) DeleteAll() error {
	if err := q.s.DeleteAll(); err != nil {
		return err
	}
	if q.quota <= 0 {
		return nil // storedKey went with everything else
	}
	return q.setStored(0, true)
}

var _ wasm.Store = (*quotaStore)(nil)
