package storage

import "slices"

// View runs fn under the memory backend's read lock: no Apply lands
// meanwhile.
func (m *memory) View(fn func(View) error) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return ErrClosed
	}
	return fn(memView{m})
}

type memView struct{ m *memory }

func (v memView) Shards() ([]ShardID, error) {
	out := make([]ShardID, 0, len(v.m.shards)+len(v.m.alarms))
	for id := range v.m.shards {
		out = append(out, id)
	}
	for id := range v.m.alarms {
		if v.m.shards[id] == nil {
			out = append(out, id)
		}
	}
	slices.SortFunc(out, compareID)
	return out, nil
}

func (v memView) Scan(id ShardID, fn func(key string, val []byte) error) error {
	sh := v.m.shards[id]
	if sh == nil {
		return nil
	}
	for _, k := range sh.keys {
		if err := fn(k, sh.vals[k]); err != nil {
			return err
		}
	}
	return nil
}

func (v memView) Alarm(id ShardID) (int64, bool, error) {
	at, ok := v.m.alarms[id]
	return at, ok, nil
}

var _ Viewer = (*memory)(nil)
