package storage

// cache is a shard's LRU read cache of durable values, absent keys
// included, bounded in bytes. Only the shard's actor touches it.
type cache struct {
	max   int // budget in bytes; <= 0 disables the cache
	bytes int
	m     map[string]*centry
	root  centry // sentinel of the LRU ring: root.next is the most recent
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

func newCache(max int) cache { return cache{max: max} }

func cost(key string, val []byte) int { return len(key) + len(val) + centryOverhead }

// get returns the cached value of key; ok reports a hit.
func (c *cache) get(key string) (val []byte, found, ok bool) {
	e := c.m[key]
	if e == nil {
		return nil, false, false
	}
	c.moveFront(e)
	return e.val, e.found, true
}

// put records the durable state of key.
func (c *cache) put(key string, val []byte, found bool) {
	if c.max <= 0 {
		return
	}
	n := cost(key, val)
	if e := c.m[key]; e != nil {
		if n > c.max {
			c.remove(e)
			return
		}
		c.bytes += n - cost(e.key, e.val)
		e.val, e.found = val, found
		c.moveFront(e)
	} else {
		if n > c.max {
			return
		}
		if c.m == nil {
			c.m = make(map[string]*centry)
			c.root.next, c.root.prev = &c.root, &c.root
		}
		e := &centry{key: key, val: val, found: found}
		c.m[key] = e
		c.bytes += n
		c.pushFront(e)
	}
	for c.bytes > c.max {
		c.remove(c.root.prev)
	}
}

// clear empties the cache and releases its memory.
func (c *cache) clear() {
	c.m = nil
	c.bytes = 0
	c.root = centry{}
}

func (c *cache) len() int { return len(c.m) }

func (c *cache) remove(e *centry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
	delete(c.m, e.key)
	c.bytes -= cost(e.key, e.val)
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
