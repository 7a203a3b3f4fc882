package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/internal/logbuf"
)

// fakeDisk reports the real directory with a free space the test sets.
type fakeDisk struct {
	mu    sync.Mutex
	free  int64
	calls int
}

func (d *fakeDisk) set(free int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.free = free
}

func (d *fakeDisk) stat(dir string) (dirState, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls++
	info, err := os.Stat(dir)
	if err != nil {
		return dirState{}, err
	}
	return dirState{info: info, free: d.free}, nil
}

func (d *fakeDisk) statCalls() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.calls
}

// openOnFakeDisk opens Badger in a temporary directory whose free space is
// disk's, with the given reserve and check interval, logging to logs.
func openOnFakeDisk(t *testing.T, disk *fakeDisk, reserve int64, interval time.Duration, logs *logbuf.Buffer) *badgerBackend {
	t.Helper()
	l := zerolog.New(logs)
	be, err := OpenBadger(BadgerOptions{Dir: t.TempDir(), MinFreeBytes: reserve, Logger: &l, ValueLogGCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	b := be.(*badgerBackend)
	t.Cleanup(func() { _ = b.Close() })
	g := b.space
	g.mu.Lock()
	g.stat, g.interval, g.checked, g.err = disk.stat, interval, time.Time{}, nil
	g.mu.Unlock()
	return b
}

const testMiB = 1 << 20

// TestBadgerReserveRefusesWritesKeepsReadsAndRecovers: below the reserve
// every write is refused with ErrStorageFull — also through the Engine,
// where the held response fails with ErrCommitFailed too — reads go on,
// and writes are accepted again once space returns (with a sixteenth of
// the reserve to spare), each change logged once.
func TestBadgerReserveRefusesWritesKeepsReadsAndRecovers(t *testing.T) {
	disk := &fakeDisk{free: 1 << 30}
	logs := &logbuf.Buffer{}
	b := openOnFakeDisk(t, disk, 100*testMiB, 0, logs)
	id := ShardID{"ns", "s"}
	put := func(v string) error {
		return b.Apply([]*Batch{{Shard: id, Puts: []abi.KV{{Key: "k", Value: []byte(v)}}}})
	}
	must(t, put("v1"))

	disk.set(99 * testMiB)
	err := put("v2")
	if !errors.Is(err, ErrStorageFull) || !strings.Contains(err.Error(), "below the reserve of 100.0 MiB") {
		t.Fatalf("Apply below the reserve = %v; want ErrStorageFull naming the reserve", err)
	}
	if v, ok, err := b.Get(id, "k"); err != nil || !ok || string(v) != "v1" {
		t.Fatalf("Get while full = %q, %v, %v; want v1", v, ok, err)
	}
	if kvs, err := b.List(id, abi.ListOptions{}); err != nil || len(kvs) != 1 {
		t.Fatalf("List while full = %v, %v", kvs, err)
	}

	e := NewEngine(b, EngineOptions{})
	defer e.Close()
	s := e.Shard(id)
	defer s.Close()
	must(t, s.Put("k", []byte("v3"), false))
	err = s.Commit().Wait(context.Background())
	if !errors.Is(err, ErrStorageFull) || !errors.Is(err, ErrCommitFailed) {
		t.Fatalf("engine commit while full = %v; want ErrStorageFull and ErrCommitFailed", err)
	}
	s.Reset()

	disk.set(101 * testMiB) // above the reserve, not by a sixteenth
	if err := put("v4"); !errors.Is(err, ErrStorageFull) {
		t.Fatalf("Apply just above the reserve = %v; want still refused", err)
	}
	disk.set(107 * testMiB)
	must(t, put("v5"))
	must(t, s.Put("k", []byte("v6"), false))
	must(t, s.Commit().Wait(context.Background()))
	if v, _, _ := b.Get(id, "k"); string(v) != "v6" {
		t.Fatalf("Get after recovery = %q; want v6", v)
	}
	out := logs.String()
	if n := strings.Count(out, `"message":"refusing writes"`); n != 1 {
		t.Errorf("logged 'refusing writes' %d times; want once:\n%s", n, out)
	}
	if n := strings.Count(out, "storage accepts writes again"); n != 1 {
		t.Errorf("logged the recovery %d times; want once:\n%s", n, out)
	}
}

// TestSpaceGuardCachesTheCheck: far from the reserve the filesystem is
// looked at once per interval, not per write; writes that could eat the
// margin make the next write look again at once.
func TestSpaceGuardCachesTheCheck(t *testing.T) {
	disk := &fakeDisk{free: 110 * testMiB}
	b := openOnFakeDisk(t, disk, 100*testMiB, time.Hour, &logbuf.Buffer{})
	id := ShardID{"ns", "s"}
	small := []*Batch{{Shard: id, Puts: puts("k", 10, 100)}}
	for range 100 {
		must(t, b.Apply(small))
	}
	if n := disk.statCalls(); n != 1 {
		t.Fatalf("100 small writes looked at the filesystem %d times; want once", n)
	}
	// 8 MiB fit in the 10 MiB margin; 8 MiB more might not, so that write
	// looks again, and finds the disk full.
	big := []*Batch{{Shard: id, Puts: puts("big", 64, 128<<10)}}
	must(t, b.Apply(big))
	disk.set(99 * testMiB)
	if err := b.Apply(big); !errors.Is(err, ErrStorageFull) {
		t.Fatalf("Apply once the margin may be gone = %v; want ErrStorageFull", err)
	}
	if n := disk.statCalls(); n != 2 {
		t.Fatalf("looked at the filesystem %d times; want 2", n)
	}
}

// TestBadgerDataDirRemoved: with its directory removed under it, Badger
// would retry its memtable flush forever (Close hangs) or die creating a
// memtable file (log.Fatal). Writes are refused at once with
// ErrStorageUnavailable, reads go on, Close returns within its short bound
// with an error naming the directory and Badger's own error, which is also
// in the log.
func TestBadgerDataDirRemoved(t *testing.T) {
	dir := t.TempDir()
	logs := &logbuf.Buffer{}
	l := zerolog.New(logs)
	be, err := OpenBadger(BadgerOptions{Dir: dir, SyncWrites: true, Logger: &l})
	if err != nil {
		t.Fatal(err)
	}
	b := be.(*badgerBackend)
	id := ShardID{"ns", "s"}
	must(t, b.Apply([]*Batch{{Shard: id, Puts: puts("k", 10, 10)}}))

	must(t, os.RemoveAll(dir))
	err = b.Apply([]*Batch{{Shard: id, Puts: puts("after", 1, 10)}})
	if !errors.Is(err, ErrStorageUnavailable) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("Apply after the directory was removed = %v; want ErrStorageUnavailable naming %s", err, dir)
	}
	if v, ok, err := b.Get(id, "k000003"); err != nil || !ok || len(v) != 10 {
		t.Fatalf("Get after the directory was removed = %q, %v, %v", v, ok, err)
	}
	t0 := time.Now()
	err = b.Close()
	took := time.Since(t0)
	t.Logf("Close took %s: %v", took.Round(time.Millisecond), err)
	if err == nil || took > 5*time.Second {
		t.Fatalf("Close = %v after %s; want an error within 5s", err, took)
	}
	for _, want := range []string{"gave up after 2s", "no such file or directory", "error flushing memtable"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Close error lacks %q: %v", want, err)
		}
	}
	if !strings.Contains(logs.String(), `"component":"badger"`) || !strings.Contains(logs.String(), "error flushing memtable") {
		t.Errorf("Badger's error is not in the log:\n%s", logs.String())
	}
	// Let Badger finish in the background (for the leak check): its flush
	// succeeds once the directory is back.
	must(t, os.MkdirAll(dir, 0o755))
	select {
	case <-b.dbClosed:
	case <-time.After(20 * time.Second):
		t.Fatal("Badger did not finish closing once the directory was back")
	}
}

// TestBadgerStuckCommitIsBounded: a memtable flush that keeps failing (here
// directories squat on the names of the first table files; Badger takes a
// new name at each retry, once a second) fills Badger's
// memtables and then blocks every write inside Badger. Apply gives up after
// StallTimeout with ErrStorageUnavailable, later calls (reads too, which
// Badger would make wait) are refused at once while the commit is stuck,
// and Close returns within CloseTimeout naming what was stuck.
func TestBadgerStuckCommitIsBounded(t *testing.T) {
	dir := t.TempDir()
	logs := &logbuf.Buffer{}
	l := zerolog.New(logs)
	be, err := OpenBadger(BadgerOptions{Dir: dir, Logger: &l, MemTableSize: 1 << 20, MinFreeBytes: -1,
		StallTimeout: 300 * time.Millisecond, CloseTimeout: time.Second, ValueLogGCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	b := be.(*badgerBackend)
	var squats []string
	for i := 1; i <= 100; i++ {
		squats = append(squats, filepath.Join(dir, fmt.Sprintf("%06d.sst", i)))
		must(t, os.Mkdir(squats[len(squats)-1], 0o755))
	}
	id := ShardID{"ns", "s"}
	var stuck error
	for i := 0; i < 400 && stuck == nil; i++ {
		t0 := time.Now()
		err := b.Apply([]*Batch{{Shard: id, Puts: puts(strings.Repeat("k", 20)+string(rune('a'+i%26))+string(rune('a'+i/26)), 500, 100)}})
		switch {
		case errors.Is(err, ErrStorageUnavailable):
			if took := time.Since(t0); took < 250*time.Millisecond || took > 5*time.Second {
				t.Errorf("the stuck Apply returned after %s; want about 300ms", took)
			}
			stuck = err
		case err != nil:
			t.Fatalf("Apply %d: %v", i, err)
		}
	}
	if stuck == nil {
		t.Fatal("Badger never blocked a write")
	}
	t.Logf("stuck: %v", stuck)
	if !strings.Contains(stuck.Error(), "error flushing memtable") {
		t.Errorf("the stall error does not quote Badger's error: %v", stuck)
	}
	t0 := time.Now()
	if err := b.Apply([]*Batch{{Shard: id, Puts: puts("x", 1, 1)}}); !errors.Is(err, ErrStorageUnavailable) || time.Since(t0) > 100*time.Millisecond {
		t.Fatalf("Apply during the stall = %v after %s; want ErrStorageUnavailable at once", err, time.Since(t0))
	}
	// A Badger read would wait for the stuck commit (it waits for every
	// earlier commit): refused at once instead.
	t0 = time.Now()
	if _, _, err := b.Get(id, strings.Repeat("k", 20)+"aa000001"); !errors.Is(err, ErrStorageUnavailable) || time.Since(t0) > 100*time.Millisecond {
		t.Fatalf("Get during the stall = %v after %s; want ErrStorageUnavailable at once", err, time.Since(t0))
	}
	t0 = time.Now()
	err = b.Close()
	took := time.Since(t0)
	t.Logf("Close took %s: %v", took.Round(time.Millisecond), err)
	if err == nil || took > 3*time.Second || !strings.Contains(err.Error(), "gave up after 1s closing badger") {
		t.Fatalf("Close = %v after %s; want 'gave up after 1s closing badger' within 3s", err, took)
	}
	for _, d := range squats {
		must(t, os.Remove(d))
	}
	select {
	case <-b.dbClosed:
	case <-time.After(20 * time.Second):
		t.Fatal("Badger did not finish closing once its flush could succeed")
	}
}
