package storage

import (
	"fmt"
	"strings"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
)

func TestCacheBoundedLRU(t *testing.T) {
	c := newCache(10*cost("k0", []byte("v")), nil)
	for i := range 10 {
		c.put(fmt.Sprint("k", i), []byte("v"), true)
	}
	if c.len() != 10 {
		t.Fatalf("len = %d; want 10", c.len())
	}
	c.get("k0") // k0 becomes the most recent; k1 is now the oldest
	c.put("k10", []byte("v"), true)
	if _, _, ok := c.get("k1"); ok {
		t.Fatal("the least recently used entry survived")
	}
	if _, _, ok := c.get("k0"); !ok {
		t.Fatal("a recently used entry was evicted")
	}
	if c.bytes > c.max {
		t.Fatalf("cache holds %d bytes over its %d budget", c.bytes, c.max)
	}
	c.put("k0", []byte(strings.Repeat("x", 5*c.max)), true) // too big: dropped, not kept stale
	if _, _, ok := c.get("k0"); ok {
		t.Fatal("an entry over the whole budget was cached")
	}
	c.put("absent", nil, false)
	if v, found, ok := c.get("absent"); !ok || found || v != nil {
		t.Fatal("negative entry not cached")
	}
	c.clear()
	if _, _, ok := c.get("k2"); ok || c.bytes != 0 {
		t.Fatal("clear left entries")
	}
	off := newCache(-1, nil)
	off.put("k", nil, true)
	if _, _, ok := off.get("k"); ok {
		t.Fatal("a disabled cache cached")
	}
}

// TestCacheSharedBudget: the engine's caches together stay within its
// budget — each keeps at most its share, a cache above its share (more
// shards opened since) goes back under it at its next use, and a closed
// shard gives its bytes back.
func TestCacheSharedBudget(t *testing.T) {
	e := NewEngine(NewMemory(), EngineOptions{CacheBytes: 1 << 20, CacheTotalBytes: 64 << 10})
	defer e.Close()
	val := []byte(strings.Repeat("v", 400))
	fill := func(s *Shard) {
		for i := range 1000 {
			s.cache.put(fmt.Sprint("k", i), val, true)
		}
	}
	a := e.Shard(ShardID{Namespace: "n", Name: "a"})
	fill(a)
	if a.cache.bytes > 64<<10 || a.cache.bytes < 60<<10 {
		t.Fatalf("one shard caches %d bytes; want its whole share, at most %d", a.cache.bytes, 64<<10)
	}
	var more []*Shard
	for i := range 7 {
		s := e.Shard(ShardID{Namespace: "n", Name: fmt.Sprint("s", i)})
		fill(s)
		more = append(more, s)
	}
	for _, s := range append(more, a) {
		s.cache.get("k999") // a cache goes back under its share at its next use
		if s.cache.bytes > 8<<10 {
			t.Fatalf("a cache holds %d bytes; its share is %d", s.cache.bytes, 8<<10)
		}
	}
	if used := e.caches.used.Load(); used > 64<<10 {
		t.Fatalf("the caches hold %d bytes together; the budget is %d", used, 64<<10)
	}
	for _, s := range more {
		s.Close()
	}
	if used, own := e.caches.used.Load(), int64(a.cache.bytes); used != own {
		t.Fatalf("after closing 7 shards the caches hold %d bytes; the open one %d", used, own)
	}
	fill(a)
	if a.cache.bytes < 60<<10 {
		t.Fatalf("alone again, the shard caches only %d bytes", a.cache.bytes)
	}
}

func TestSpan(t *testing.T) {
	cases := []struct {
		o      abi.ListOptions
		lo, hi string
		hasHi  bool
	}{
		{abi.ListOptions{}, "", "", false},
		{abi.ListOptions{Prefix: "ab"}, "ab", "ac", true},
		{abi.ListOptions{Prefix: "a\xff"}, "a\xff", "b", true},
		{abi.ListOptions{Prefix: "\xff\xff"}, "\xff\xff", "", false},
		{abi.ListOptions{Prefix: "ab", HasStart: true, Start: "a"}, "ab", "ac", true},
		{abi.ListOptions{Prefix: "ab", HasStartAfter: true, StartAfter: "abc"}, "abc\x00", "ac", true},
		{abi.ListOptions{Prefix: "ab", HasEnd: true, End: "abz"}, "ab", "abz", true},
		{abi.ListOptions{Prefix: "ab", HasEnd: true, End: "b"}, "ab", "ac", true},
	}
	for _, c := range cases {
		sp, err := makeSpan(&c.o)
		if err != nil || sp.lo != c.lo || sp.hi != c.hi || sp.hasHi != c.hasHi {
			t.Errorf("makeSpan(%+v) = %+v, %v; want [%q, %q) %v", c.o, sp, err, c.lo, c.hi, c.hasHi)
		}
	}
}
