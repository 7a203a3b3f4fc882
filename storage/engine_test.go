package storage

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
)

func TestCacheBoundedLRU(t *testing.T) {
	c := newCache(10 * cost("k0", []byte("v")))
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
	off := newCache(-1)
	off.put("k", nil, true)
	if _, _, ok := off.get("k"); ok {
		t.Fatal("a disabled cache cached")
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

func TestEngineBackpressure(t *testing.T) {
	e, tb := newEngine(t, NewMemory(), EngineOptions{MaxPendingBytes: 1000})
	s := e.Shard(ShardID{"ns", "s"})
	tb.hold()
	must(t, s.Put("a", make([]byte, 900), false))
	p1 := s.Commit()
	tb.waitEntered(t)
	must(t, s.Put("b", make([]byte, 900), false))
	committed := make(chan *Pending)
	go func() { committed <- s.Commit() }()
	select {
	case <-committed:
		t.Fatal("Commit went past MaxPendingBytes while the disk was stuck")
	case <-time.After(20 * time.Millisecond):
	}
	tb.release()
	p2 := <-committed
	wait(t, p1)
	wait(t, p2)
}

func TestEngineUnconfirmedFailureStillResets(t *testing.T) {
	e, tb := newEngine(t, NewMemory(), EngineOptions{})
	s := e.Shard(ShardID{"ns", "s"})
	tb.failNext(1)
	must(t, s.Put("window", []byte("1"), true))
	if p := s.Commit(); p != nil {
		t.Fatal("an unconfirmed-only event was held")
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Err() == nil {
		if time.Now().After(deadline) {
			t.Fatal("the failure of an unconfirmed write did not fail the shard")
		}
		time.Sleep(time.Millisecond)
	}
	s.Reset()
	wantGet(t, s, "window", "", false)
}

func TestPendingWaitAfterReset(t *testing.T) {
	e, tb := newEngine(t, NewMemory(), EngineOptions{})
	s := e.Shard(ShardID{"ns", "s"})
	tb.hold()
	tb.failNext(1)
	mustPut(t, s, "a", "1")
	p := s.Commit()
	tb.waitEntered(t)
	go func() {
		time.Sleep(10 * time.Millisecond)
		tb.release()
	}()
	s.Reset() // waits for the failing batch to resolve
	if err := p.Wait(context.Background()); !errors.Is(err, ErrCommitFailed) {
		t.Fatalf("Wait = %v; want ErrCommitFailed", err)
	}
	mustPut(t, s, "b", "2")
	wait(t, s.Commit()) // the new generation commits
	wantGet(t, s, "a", "", false)
}

// TestEngineUnconfirmedLinger: with UnconfirmedLinger the committer
// gathers unconfirmed-only batches into fewer groups (fewer fsyncs), a
// confirmed write ends the wait at once, and Close does not wait it out.
func TestEngineUnconfirmedLinger(t *testing.T) {
	const linger = 2 * time.Second // long enough that only the ends above can cut it
	e, _ := newEngine(t, NewMemory(), EngineOptions{UnconfirmedLinger: linger})
	shards := make([]*Shard, 20)
	for i := range shards {
		shards[i] = e.Shard(ShardID{"ns", fmt.Sprint(i)})
	}
	for i, s := range shards {
		must(t, s.Put("window", []byte(fmt.Sprint(i)), true))
		if p := s.Commit(); p != nil {
			t.Fatal("an unconfirmed-only event was held")
		}
	}
	// A confirmed write arrives while the committer lingers: its response
	// must not wait for the linger.
	t0 := time.Now()
	mustPut(t, shards[0], "count", "1")
	wait(t, shards[0].Commit())
	if d := time.Since(t0); d > linger/2 {
		t.Fatalf("a confirmed commit waited %v behind the linger", d)
	}
	if st := e.Stats(); st.Batches != 21 || st.Groups > 2 {
		t.Fatalf("stats %+v: want the 21 batches in at most 2 groups", st)
	}
	for i, s := range shards {
		wantGet(t, s, "window", fmt.Sprint(i), true)
	}
	// Unconfirmed writes alone, then Close: Close commits them without
	// waiting for the linger to pass.
	must(t, shards[1].Put("window", []byte("x"), true))
	shards[1].Commit()
	t0 = time.Now()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d > linger/2 {
		t.Fatalf("Close waited %v behind the linger", d)
	}
}
