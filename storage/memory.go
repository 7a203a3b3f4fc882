package storage

import (
	"bytes"
	"slices"
	"sort"
	"sync"

	"github.com/edgeshard/edgeshard/abi"
)

// memory is the in-memory Backend: per shard a sorted key slice and a map.
// Apply is all-or-nothing for the whole group.
type memory struct {
	mu     sync.RWMutex
	closed bool
	shards map[ShardID]*memShard
	alarms map[ShardID]int64
}

type memShard struct {
	keys []string // sorted
	vals map[string][]byte
}

// NewMemory returns an in-memory Backend with the same contract as Badger's,
// for tests and the conformance kit. Nothing survives the process.
func NewMemory() Backend {
	return &memory{shards: make(map[ShardID]*memShard), alarms: make(map[ShardID]int64)}
}

func (m *memory) Get(id ShardID, key string) ([]byte, bool, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return nil, false, ErrClosed
	}
	sh := m.shards[id]
	if sh == nil {
		return nil, false, nil
	}
	v, ok := sh.vals[key]
	if !ok {
		return nil, false, nil
	}
	return bytes.Clone(v), true, nil
}

func (m *memory) List(id ShardID, opts abi.ListOptions) ([]abi.KV, error) {
	sp, err := makeSpan(&opts)
	if err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return nil, ErrClosed
	}
	sh := m.shards[id]
	if sh == nil || sp.empty() {
		return nil, nil
	}
	lo := sort.SearchStrings(sh.keys, sp.lo)
	hi := len(sh.keys)
	if sp.hasHi {
		hi = sort.SearchStrings(sh.keys, sp.hi)
	}
	if lo >= hi {
		return nil, nil
	}
	n := hi - lo
	if opts.Limit > 0 && int(opts.Limit) < n {
		n = int(opts.Limit)
	}
	out := make([]abi.KV, 0, n)
	for i := 0; i < n; i++ {
		j := lo + i
		if opts.Reverse {
			j = hi - 1 - i
		}
		k := sh.keys[j]
		out = append(out, abi.KV{Key: k, Value: bytes.Clone(sh.vals[k])})
	}
	return out, nil
}

func (m *memory) GetAlarm(id ShardID) (int64, bool, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return 0, false, ErrClosed
	}
	at, ok := m.alarms[id]
	return at, ok, nil
}

func (m *memory) Alarms() ([]Alarm, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return nil, ErrClosed
	}
	out := make([]Alarm, 0, len(m.alarms))
	for id, at := range m.alarms {
		out = append(out, Alarm{Shard: id, At: at})
	}
	slices.SortFunc(out, func(a, b Alarm) int { return compareID(a.Shard, b.Shard) })
	return out, nil
}

func compareID(a, b ShardID) int {
	if a.Namespace != b.Namespace {
		if a.Namespace < b.Namespace {
			return -1
		}
		return 1
	}
	switch {
	case a.Name < b.Name:
		return -1
	case a.Name > b.Name:
		return 1
	}
	return 0
}

func (m *memory) Apply(batches []*Batch) error {
	for _, b := range batches {
		if err := checkBatch(b); err != nil {
			return err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	for _, b := range batches {
		m.apply(b)
	}
	return nil
}

func (m *memory) apply(b *Batch) {
	sh := m.shards[b.Shard]
	if b.DeleteAll && sh != nil {
		delete(m.shards, b.Shard)
		sh = nil
	}
	for _, kv := range b.Puts {
		if sh == nil {
			sh = &memShard{vals: make(map[string][]byte)}
			m.shards[b.Shard] = sh
		}
		if _, ok := sh.vals[kv.Key]; !ok {
			i := sort.SearchStrings(sh.keys, kv.Key)
			sh.keys = slices.Insert(sh.keys, i, kv.Key)
		}
		sh.vals[kv.Key] = bytes.Clone(kv.Value)
	}
	for _, k := range b.Deletes {
		if sh == nil {
			break
		}
		if _, ok := sh.vals[k]; !ok {
			continue
		}
		delete(sh.vals, k)
		i := sort.SearchStrings(sh.keys, k)
		sh.keys = slices.Delete(sh.keys, i, i+1)
	}
	if sh != nil && len(sh.keys) == 0 {
		delete(m.shards, b.Shard)
	}
	if b.DelAlarm {
		delete(m.alarms, b.Shard)
	}
	if b.SetAlarm > 0 {
		m.alarms[b.Shard] = b.SetAlarm
	}
}

func (m *memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	m.shards, m.alarms = nil, nil
	return nil
}

var _ Backend = (*memory)(nil)
