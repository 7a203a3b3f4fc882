package storage

import "sync/atomic"

// cache is a shard's LRU read cache of durable values, absent keys
// included, bounded in bytes: by its own budget and by its share of the
// engine's (cacheBudget). Only the shard's actor touches it.
type cache struct {
	max    int // budget in bytes; <= 0 disables the cache
	bytes  int
	budget *cacheBudget // shared by the engine's shards; nil: none
	m      map[string]*centry
	root   centry // sentinel of the LRU ring: root.next is the most recent
}

// cacheBudget is the read cache memory of all an engine's open shards.
// Each shard keeps at most max / shards; a shard above its share (because
// more shards opened since it last used its cache) goes back under it at
// its next read or put, and gives everything back when it closes (an idle
// shard's actor closes it after idle_timeout).
type cacheBudget struct {
	max    int64        // <= 0: no bound beyond each cache's own
	used   atomic.Int64 // bytes held by all caches
	shards atomic.Int64 // open shards
}

// limit returns what one cache of own budget max may hold now.
func (c *cache) limit() int {
	b := c.budget
	if b == nil || b.max <= 0 {
		return c.max
	}
	return int(min(int64(c.max), b.max/max(b.shards.Load(), 1)))
}

// grow records n more bytes (negative: fewer) in the cache and the budget.
func (c *cache) grow(n int) {
	c.bytes += n
	if c.budget != nil {
		c.budget.used.Add(int64(n))
	}
}

type centry struct {
	key        string
	val        []byte
	found      bool
	prev, next *centry
}

// centryOverhead approximates the bytes an entry costs beyond its key and
// value (the entry, its map slot, the string and slice headers).
const centryOverhead = 112

func newCache(max int, budget *cacheBudget) cache { return cache{max: max, budget: budget} }

func cost(key string, val []byte) int { return len(key) + len(val) + centryOverhead }

// get returns the cached value of key; ok reports a hit.
func (c *cache) get(key string) (val []byte, found, ok bool) {
	e := c.m[key]
	if e == nil {
		return nil, false, false
	}
	c.moveFront(e)
	val, found = e.val, e.found
	c.trim(c.limit())
	return val, found, true
}

// trim evicts the least recently used entries until the cache holds at
// most limit bytes.
func (c *cache) trim(limit int) {
	for c.bytes > limit {
		c.remove(c.root.prev)
	}
}

// put records the durable state of key.
func (c *cache) put(key string, val []byte, found bool) {
	if c.max <= 0 {
		return
	}
	n, limit := cost(key, val), c.limit()
	if e := c.m[key]; e != nil {
		if n > limit {
			c.remove(e)
			return
		}
		c.grow(n - cost(e.key, e.val))
		e.val, e.found = val, found
		c.moveFront(e)
	} else {
		if n > limit {
			return
		}
		if c.m == nil {
			c.m = make(map[string]*centry)
			c.root.next, c.root.prev = &c.root, &c.root
		}
		e := &centry{key: key, val: val, found: found}
		c.m[key] = e
		c.grow(n)
		c.pushFront(e)
	}
	c.trim(limit)
}

// clear empties the cache and releases its memory.
func (c *cache) clear() {
	c.grow(-c.bytes)
	c.m = nil
	c.root = centry{}
}

func (c *cache) len() int { return len(c.m) }

func (c *cache) remove(e *centry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
	delete(c.m, e.key)
	c.grow(-cost(e.key, e.val))
}

func (c *cache) pushFront(e *centry) {
	e.prev, e.next = &c.root, c.root.next
	c.root.next.prev = e
	c.root.next = e
}

func (c *cache) moveFront(e *centry) {
	if c.root.next == e {
		return
	}
	e.prev.next, e.next.prev = e.next, e.prev
	c.pushFront(e)
}
