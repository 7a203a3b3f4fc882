package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgeshard/edgeshard/abi"
)

func openSmallBadger(t *testing.T, dir string) *badgerBackend {
	t.Helper()
	// A 1 MiB memtable caps one transaction at ~150 KiB / ~1600 entries.
	b, err := OpenBadger(BadgerOptions{Dir: dir, SyncWrites: true, MemTableSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b.(*badgerBackend)
}

func puts(prefix string, n, size int) []abi.KV {
	kvs := make([]abi.KV, n)
	for i := range kvs {
		kvs[i] = abi.KV{Key: fmt.Sprintf("%s%06d", prefix, i), Value: bytes.Repeat([]byte{'v'}, size)}
	}
	return kvs
}

// countPrefix counts raw Badger keys with a prefix.
func countPrefix(t *testing.T, b *badgerBackend, pre []byte) int {
	t.Helper()
	keys, err := b.keysWithPrefix(pre, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	return len(keys)
}

// waitErased waits until the background collector has erased every key of
// the shard's abandoned epoch and every epoch marker.
func waitErased(t *testing.T, b *badgerBackend, id ShardID, epoch uint64) {
	t.Helper()
	old := appendDataPrefix(nil, id, epoch)
	deadline := time.Now().Add(10 * time.Second)
	for countPrefix(t, b, old) > 0 || countPrefix(t, b, []byte{tagGC}) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d keys of the abandoned epoch %d remain", countPrefix(t, b, old), epoch)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestBadgerSplitsGroupsBetweenBatches(t *testing.T) {
	b := openSmallBadger(t, t.TempDir())
	id := ShardID{"ns", "s"}
	var batches []*Batch
	for i := range 40 {
		batches = append(batches, &Batch{Shard: id, Puts: puts(fmt.Sprintf("b%02d-", i), 100, 10)})
	}
	// 4000 entries do not fit in one transaction; every batch must land.
	if err := b.Apply(batches); err != nil {
		t.Fatalf("Apply of a group larger than one transaction: %v", err)
	}
	got, err := b.List(id, abi.ListOptions{})
	if err != nil || len(got) != 4000 {
		t.Fatalf("List = %d entries, %v; want 4000", len(got), err)
	}

	// One batch that cannot fit alone fails whole, and nothing of the group
	// before it is lost or half-applied.
	other := ShardID{"ns", "other"}
	err = b.Apply([]*Batch{{Shard: other, Puts: puts("x", 10, 1)}, {Shard: other, Puts: puts("huge", 5000, 1)}})
	var ae *ApplyError
	if !errors.Is(err, ErrBatchTooLarge) || !errors.As(err, &ae) || ae.Applied != 1 {
		t.Fatalf("Apply of an oversized batch = %v; want ErrBatchTooLarge after 1 applied batch", err)
	}
	got, _ = b.List(other, abi.ListOptions{})
	if len(got) != 10 {
		t.Fatalf("other shard has %d entries; want the 10 of the first batch", len(got))
	}
	// Large values go to the value log: they do not make a batch too big.
	if err := b.Apply([]*Batch{{Shard: other, Puts: puts("big", abi.MaxMultiKeys, abi.MaxValueSize)}}); err != nil {
		t.Fatalf("Apply of 128 values of 128 KiB: %v", err)
	}
}

func TestBadgerDeleteAllLargeShard(t *testing.T) {
	dir := t.TempDir()
	b := openSmallBadger(t, dir)
	id := ShardID{"ns", "big"}
	for i := range 5 {
		must(t, b.Apply([]*Batch{{Shard: id, Puts: puts(fmt.Sprint(i, "-"), 1000, 8)}}))
	}
	// 5000 keys: far more than one transaction could delete, yet DeleteAll
	// is one atomic batch.
	must(t, b.Apply([]*Batch{{Shard: id, DeleteAll: true, Puts: []abi.KV{{Key: "fresh", Value: []byte("1")}}}}))
	wantFresh := func(stage string) {
		t.Helper()
		got, err := b.List(id, abi.ListOptions{})
		if err != nil || len(got) != 1 || got[0].Key != "fresh" || string(got[0].Value) != "1" {
			t.Fatalf("List %s = %d entries, %v; want fresh=1", stage, len(got), err)
		}
	}
	wantFresh("after DeleteAll")
	// The abandoned epoch is erased in the background.
	waitErased(t, b, id, 0)
	wantFresh("after the erasure")
}

func TestBadgerResumesEpochCollection(t *testing.T) {
	dir := t.TempDir()
	id := ShardID{"ns", "s"}
	b := openSmallBadger(t, dir)
	// Leave an abandoned epoch and its marker behind, as a crash right after
	// a DeleteAll would.
	err := b.db.Update(func(txn *badger.Txn) error {
		for i := range 50 {
			if err := txn.Set(append(appendDataPrefix(nil, id, 3), fmt.Sprint(i)...), []byte("old")); err != nil {
				return err
			}
		}
		if err := txn.Set(appendShardKey(nil, tagEpoch, id), binary.BigEndian.AppendUint64(nil, 4)); err != nil {
			return err
		}
		return txn.Set(appendGCKey(nil, id, 3), nil)
	})
	must(t, err)
	must(t, b.Close())
	b = openSmallBadger(t, dir)
	waitErased(t, b, id, 3)
	if got, _ := b.List(id, abi.ListOptions{}); len(got) != 0 {
		t.Fatalf("abandoned epoch visible: %q", got)
	}
}

// TestBadgerInMemoryLargeValues: without a value log, Badger refuses values
// over its value threshold; InMemory must still take values up to
// abi.MaxValueSize. Found by the storagetest suite (Backend/Limits).
func TestBadgerInMemoryLargeValues(t *testing.T) {
	b, err := OpenBadger(BadgerOptions{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	id := ShardID{"ns", "s"}
	val := bytes.Repeat([]byte{'v'}, abi.MaxValueSize)
	must(t, b.Apply([]*Batch{{Shard: id, Puts: []abi.KV{{Key: "big", Value: val}, {Key: "small", Value: []byte("1")}}}}))
	got, ok, err := b.Get(id, "big")
	if err != nil || !ok || !bytes.Equal(got, val) {
		t.Fatalf("Get(big) = %d bytes, %v, %v; want %d bytes", len(got), ok, err, len(val))
	}
}

// FuzzShardKey checks that shard keys decode back and that no shard's data
// prefix is a prefix of another shard's.
func FuzzShardKey(f *testing.F) {
	f.Add("ns", "name", "ns2", "name")
	f.Add("a", "bc", "ab", "c")
	f.Add("", "\x00", "\x00", "")
	f.Fuzz(func(t *testing.T, ns1, n1, ns2, n2 string) {
		a, b := ShardID{ns1, n1}, ShardID{ns2, n2}
		k := appendShardKey(nil, tagAlarm, a)
		got, rest, ok := decodeShardKey(k)
		if !ok || got != a || len(rest) != 0 {
			t.Fatalf("decode(%q) = %v, %q, %v; want %v", k, got, rest, ok, a)
		}
		if a == b {
			return
		}
		pa, pb := appendDataPrefix(nil, a, 0), appendDataPrefix(nil, b, 0)
		if bytes.HasPrefix(pa, pb) || bytes.HasPrefix(pb, pa) {
			t.Fatalf("data prefixes of %v and %v overlap", a, b)
		}
	})
}

// TestBadgerMemoryDefaults: the defaults suit a small machine (one memtable
// of 8 MiB, 8 MiB block and index caches), and the free-space reserve
// follows the memtable and value log sizes: 2 value log files + 4
// memtables, at least 256 MiB.
func TestBadgerMemoryDefaults(t *testing.T) {
	o := BadgerOptions{}.withDefaults()
	if o.MemTableSize != 8<<20 || o.BlockCacheSize != 8<<20 || o.IndexCacheSize != 8<<20 || o.ValueLogFileSize != 64<<20 {
		t.Fatalf("defaults: memtable %d, block cache %d, index cache %d, value log file %d", o.MemTableSize, o.BlockCacheSize, o.IndexCacheSize, o.ValueLogFileSize)
	}
	if o.MinFreeBytes != 256<<20 {
		t.Fatalf("default reserve %d MiB; want 256 (2×64 + 4×8 = 160 is less)", o.MinFreeBytes>>20)
	}
	o = BadgerOptions{MemTableSize: 64 << 20, ValueLogFileSize: 256 << 20}.withDefaults()
	if want := int64(2*256+4*64) << 20; o.MinFreeBytes != want {
		t.Fatalf("reserve %d MiB with 64 MiB memtables and 256 MiB value log files; want %d", o.MinFreeBytes>>20, want>>20)
	}
	o = BadgerOptions{BlockCacheSize: -1, IndexCacheSize: -1}.withDefaults()
	if o.BlockCacheSize >= 0 || o.IndexCacheSize >= 0 {
		t.Fatalf("negative caches became %d, %d; want them kept off/unbounded", o.BlockCacheSize, o.IndexCacheSize)
	}
	// Negative caches open: no block cache, every index in memory.
	b, err := OpenBadger(BadgerOptions{Dir: t.TempDir(), BlockCacheSize: -1, IndexCacheSize: -1, MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}
