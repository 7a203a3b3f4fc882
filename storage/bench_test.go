package storage

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
)

func benchEngine(b *testing.B, sync bool) *Engine {
	b.Helper()
	be, err := OpenBadger(BadgerOptions{Dir: b.TempDir(), SyncWrites: sync})
	if err != nil {
		b.Fatal(err)
	}
	e := NewEngine(be, EngineOptions{})
	b.Cleanup(func() {
		if err := e.Close(); err != nil {
			b.Error(err)
		}
	})
	return e
}

// reportEvents stops the timer and reports events per second and per
// fsync (Backend.Apply) since the engine had done groups.
func reportEvents(b *testing.B, e *Engine, groups uint64) {
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(b.N)/float64(max(e.Stats().Groups-groups, 1)), "events/fsync")
}

// BenchmarkShardCommitSync measures one shard running events back to back,
// each a small confirmed Put and a Commit, on Badger with SyncWrites: the
// actor never waits for the disk, except on every 4096th event and the
// last, the way a stream of responses would be released by the output gate.
func BenchmarkShardCommitSync(b *testing.B) {
	e := benchEngine(b, true)
	s := e.Shard(ShardID{"bench", "commit"})
	val := []byte("0123456789abcdef")
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = "counter/" + strconv.Itoa(i)
	}
	groups := e.Stats().Groups
	b.ReportAllocs()
	b.ResetTimer()
	var p *Pending
	for i := 0; i < b.N; i++ {
		if err := s.Put(keys[i%len(keys)], val, false); err != nil {
			b.Fatal(err)
		}
		p = s.Commit()
		if i%4096 == 4095 {
			if err := p.Wait(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := p.Wait(context.Background()); err != nil {
		b.Fatal(err)
	}
	reportEvents(b, e, groups)
}

// BenchmarkShardsCommitSyncParallel runs many shards at once, each waiting
// for every event's durability (request/response without pipelining): group
// commit shares each fsync between the shards.
func BenchmarkShardsCommitSyncParallel(b *testing.B) {
	e := benchEngine(b, true)
	val := []byte("0123456789abcdef")
	var mu sync.Mutex
	n := 0
	groups := e.Stats().Groups
	b.ReportAllocs()
	b.SetParallelism(32) // 32 shard actors per CPU
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		mu.Lock()
		s := e.Shard(ShardID{"bench", fmt.Sprint(n)})
		n++
		mu.Unlock()
		for pb.Next() {
			if err := s.Put("k", val, false); err != nil {
				b.Error(err)
				return
			}
			if err := s.Commit().Wait(context.Background()); err != nil {
				b.Error(err)
				return
			}
		}
	})
	reportEvents(b, e, groups)
}

// BenchmarkShardGetHit reads a shard's own durable keys: served by the read
// cache, not Badger.
func BenchmarkShardGetHit(b *testing.B) {
	e := benchEngine(b, true)
	s := e.Shard(ShardID{"bench", "get"})
	keys := make([]string, 256)
	for i := range keys {
		keys[i] = "key/" + strconv.Itoa(i)
		if err := s.Put(keys[i], []byte("value"), false); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Commit().Wait(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, ok, err := s.Get(keys[i%len(keys)]); !ok || err != nil {
			b.Fatal("miss", err)
		}
	}
}

// BenchmarkBackendGetBadger is the cost the cache saves: a Badger read.
func BenchmarkBackendGetBadger(b *testing.B) {
	be, err := OpenBadger(BadgerOptions{Dir: b.TempDir(), SyncWrites: true})
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	id := ShardID{"bench", "get"}
	if err := be.Apply([]*Batch{{Shard: id, Puts: puts("key/", 256, 5)}}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, ok, err := be.Get(id, fmt.Sprintf("key/%06d", i%256)); !ok || err != nil {
			b.Fatal("miss", err)
		}
	}
}

// BenchmarkBackendApplyNoSync is one small batch per Apply without fsync:
// what the space guard's checks (an fstat per Apply, a statfs and a stat
// every 50 ms) and the stall watchdog (a goroutine per commit) cost a group
// commit, at its cheapest; "unguarded" turns both off.
func BenchmarkBackendApplyNoSync(b *testing.B) {
	for _, bc := range []struct {
		name string
		opts BadgerOptions
	}{{"default", BadgerOptions{}}, {"unguarded", BadgerOptions{MinFreeBytes: -1, StallTimeout: -1}}} {
		b.Run(bc.name, func(b *testing.B) {
			opts := bc.opts
			opts.Dir = b.TempDir()
			be, err := OpenBadger(opts)
			if err != nil {
				b.Fatal(err)
			}
			defer be.Close()
			if bc.opts.MinFreeBytes < 0 {
				be.(*badgerBackend).space = nil
			}
			id := ShardID{"bench", "apply"}
			val := []byte("0123456789abcdef")
			keys := make([]string, 1024)
			for i := range keys {
				keys[i] = "counter/" + strconv.Itoa(i)
			}
			batch := &Batch{Shard: id, Puts: make([]abi.KV, 1)}
			bs := []*Batch{batch}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				batch.Puts[0] = abi.KV{Key: keys[i%len(keys)], Value: val}
				if err := be.Apply(bs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSpaceGuardAdmit is the space guard's cost per Apply: an fstat of
// the directory, plus a statfs and a stat of the path once per interval.
func BenchmarkSpaceGuardAdmit(b *testing.B) {
	for _, bc := range []struct {
		name     string
		interval time.Duration
	}{{"cached", 50 * time.Millisecond}, {"every-time", 0}} {
		b.Run(bc.name, func(b *testing.B) {
			g, err := newSpaceGuard(b.TempDir(), 1<<20, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer g.close()
			g.interval = bc.interval
			b.ReportAllocs()
			for b.Loop() {
				if err := g.admit(100); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
