package storage_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/storage"
	"github.com/edgeshard/edgeshard/storage/snapshot"
)

// backends opens each Backend that snapshots run over, as a fresh store.
var snapshotBackends = map[string]func(t *testing.T) storage.Backend{
	"memory": func(*testing.T) storage.Backend { return storage.NewMemory() },
	"badger": func(t *testing.T) storage.Backend {
		return openBadger(t, storage.BadgerOptions{Dir: t.TempDir(), SyncWrites: false})
	},
}

func forEachBackend(t *testing.T, fn func(t *testing.T, open func(t *testing.T) *storage.Engine)) {
	for name, open := range snapshotBackends {
		t.Run(name, func(t *testing.T) {
			fn(t, func(t *testing.T) *storage.Engine {
				e := storage.NewEngine(open(t), storage.EngineOptions{})
				t.Cleanup(func() { e.Close() })
				return e
			})
		})
	}
}

// fill writes n entries (one large) and an alarm to shard id through the
// engine, in several events, one of them a DeleteAll of earlier keys.
func fill(t *testing.T, e *storage.Engine, id storage.ShardID, n int, alarm int64) map[string]string {
	t.Helper()
	s := e.Shard(id)
	defer s.Close()
	check(t, s.Put("gone", []byte("deleted by DeleteAll"), false))
	s.Commit()
	check(t, s.DeleteAll())
	s.Commit()
	want := map[string]string{}
	for i := 0; i < n; i++ {
		k := fmt.Sprintf("key-%05d", i)
		v := strings.Repeat(string(rune('a'+i%26)), i%50)
		if i == 7 {
			v = strings.Repeat("L", abi.MaxValueSize)
		}
		check(t, s.Put(k, []byte(v), false))
		want[k] = v
		if i%100 == 99 {
			s.Commit()
		}
	}
	if alarm > 0 {
		check(t, s.SetAlarm(alarm))
	}
	check(t, s.Commit().Wait(t.Context()))
	return want
}

func dump(t *testing.T, e *storage.Engine, id storage.ShardID) (map[string]string, int64) {
	t.Helper()
	s := e.Shard(id)
	defer s.Close()
	kvs, err := s.List(abi.ListOptions{})
	check(t, err)
	got := map[string]string{}
	for _, kv := range kvs {
		got[kv.Key] = string(kv.Value)
	}
	at, _, err := s.GetAlarm()
	check(t, err)
	return got, at
}

func sameMap(t *testing.T, got, want map[string]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d entries; want %d", len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("entry %q: %d bytes; want %d", k, len(got[k]), len(v))
		}
	}
}

func importInto(e *storage.Engine, id storage.ShardID, r io.Reader) (storage.ShardSnapshotStats, error) {
	s := e.Shard(id)
	defer s.Close()
	return s.Import(r, nil)
}

// TestExportImportShard: a shard's entries (past a DeleteAll, across
// several chunks, a maximal value included) and alarm come back in
// another shard of another engine, whose reads see them at once.
func TestExportImportShard(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(t *testing.T) *storage.Engine) {
		src, dst := open(t), open(t)
		from := storage.ShardID{Namespace: "OLD", Name: "7"}
		want := fill(t, src, from, 1500, 1_700_000_000_000)
		fill(t, src, storage.ShardID{Namespace: "OLD", Name: "8"}, 10, 0) // a neighbour, not exported
		var buf bytes.Buffer
		st, err := src.ExportShard(&buf, from)
		check(t, err)
		if st.Entries != len(want) || st.Alarm != 1_700_000_000_000 {
			t.Fatalf("export stats %+v", st)
		}
		to := storage.ShardID{Namespace: "NEW", Name: "x"}
		s := dst.Shard(to)
		_, _, err = s.Get("key-00001") // cache an absent key before the import
		check(t, err)
		ist, err := s.Import(&buf, nil)
		check(t, err)
		if ist.Shard != from || ist.Entries != len(want) || ist.Alarm != st.Alarm {
			t.Fatalf("import stats %+v", ist)
		}
		v, ok, err := s.Get("key-00001")
		if err != nil || !ok || string(v) != want["key-00001"] {
			t.Fatalf("after import Get = %q %v %v", v, ok, err)
		}
		s.Close()
		got, at := dump(t, dst, to)
		sameMap(t, got, want)
		if at != st.Alarm {
			t.Fatalf("alarm %d; want %d", at, st.Alarm)
		}
	})
}

// TestImportRefusesNonEmpty: an entry or an alarm alone makes a shard not
// empty; the import changes nothing.
func TestImportRefusesNonEmpty(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(t *testing.T) *storage.Engine) {
		e := open(t)
		id := storage.ShardID{Namespace: "N", Name: "a"}
		fill(t, e, id, 3, 0)
		buf := exportShard(t, e, id)
		alarmOnly := storage.ShardID{Namespace: "N", Name: "b"}
		s := e.Shard(alarmOnly)
		check(t, s.SetAlarm(5))
		check(t, s.Commit().Wait(t.Context()))
		s.Close()
		for _, target := range []storage.ShardID{id, alarmOnly} {
			_, err := importInto(e, target, bytes.NewReader(buf.Bytes()))
			if !errors.Is(err, storage.ErrNotEmpty) {
				t.Fatalf("import into %s: %v; want ErrNotEmpty", target, err)
			}
		}
		got, _ := dump(t, e, alarmOnly)
		if len(got) != 0 {
			t.Fatalf("refused import wrote %d entries", len(got))
		}
	})
}

// TestImportCorruptLeavesShardEmpty: a stream cut short, or with a byte
// changed late in it (after entries were applied), is refused and the
// shard stays empty, alarm included.
func TestImportCorruptLeavesShardEmpty(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(t *testing.T) *storage.Engine) {
		e := open(t)
		id := storage.ShardID{Namespace: "N", Name: "src"}
		fill(t, e, id, 1200, 99)
		buf := exportShard(t, e, id)
		data := buf.Bytes()
		flipped := bytes.Clone(data)
		flipped[len(flipped)-40] ^= 1
		cases := map[string][]byte{
			"truncated":     data[:len(data)-10],
			"flipped":       flipped,
			"half":          data[:len(data)/2],
			"not-snapshot":  []byte("hello"),
			"two-shards-of": twoShards(t, e, id),
		}
		for name, bad := range cases {
			to := storage.ShardID{Namespace: "N", Name: "dst-" + name}
			_, err := importInto(e, to, bytes.NewReader(bad))
			if !errors.Is(err, snapshot.ErrCorrupt) {
				t.Fatalf("%s: err = %v; want ErrCorrupt", name, err)
			}
			got, at := dump(t, e, to)
			if len(got) != 0 || at != 0 {
				t.Fatalf("%s: refused import left %d entries, alarm %d", name, len(got), at)
			}
			// and the shard takes a good import afterwards
			if _, err := importInto(e, to, bytes.NewReader(data)); err != nil {
				t.Fatalf("%s: good import after a refused one: %v", name, err)
			}
		}
	})
}

// twoShards is a backup of the engine: a stream of more than one shard,
// which a one-shard import refuses.
func twoShards(t *testing.T, e *storage.Engine, id storage.ShardID) []byte {
	fill(t, e, storage.ShardID{Namespace: "N", Name: "other"}, 2, 0)
	buf := backup(t, e)
	return buf.Bytes()
}

// TestImportUnknownSection: a section the importer has no Importer for
// is refused by name, and rolled back; with one, it is handed the bytes.
func TestImportUnknownSection(t *testing.T) {
	e := storage.NewEngine(storage.NewMemory(), storage.EngineOptions{})
	defer e.Close()
	id := storage.ShardID{Namespace: "N", Name: "s"}
	fill(t, e, id, 5, 0)
	var buf bytes.Buffer
	_, err := e.ExportShard(&buf, id, storage.Section{Name: "sql", Write: func(w io.Writer) error {
		_, err := io.WriteString(w, "CREATE TABLE t(x);")
		return err
	}})
	check(t, err)
	to := storage.ShardID{Namespace: "N", Name: "t"}
	_, err = importInto(e, to, bytes.NewReader(buf.Bytes()))
	if !errors.Is(err, snapshot.ErrUnknownSection) || !strings.Contains(err.Error(), `"sql"`) {
		t.Fatalf("err = %v; want ErrUnknownSection naming sql", err)
	}
	if got, _ := dump(t, e, to); len(got) != 0 {
		t.Fatalf("left %d entries", len(got))
	}
	var sql string
	s := e.Shard(to)
	_, err = s.Import(bytes.NewReader(buf.Bytes()), storage.Importers{"sql": func(id storage.ShardID, r io.Reader) error {
		b, err := io.ReadAll(r)
		sql = id.String() + ": " + string(b)
		return err
	}})
	s.Close()
	check(t, err)
	if sql != "N/t: CREATE TABLE t(x);" {
		t.Fatalf("sql importer got %q", sql)
	}
}

// TestBackupRestore: every shard — with entries, with only an alarm, past
// a DeleteAll — comes back in an empty backend; a non-empty one refuses.
func TestBackupRestore(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(t *testing.T) *storage.Engine) {
		src := open(t)
		ids := []storage.ShardID{{Namespace: "A", Name: "0"}, {Namespace: "A", Name: "1"}, {Namespace: "B", Name: "x\x00y"}}
		want := map[storage.ShardID]map[string]string{}
		for i, id := range ids {
			want[id] = fill(t, src, id, 50*(i+1), int64(i*1000))
		}
		alarmOnly := storage.ShardID{Namespace: "C", Name: "alarm-only"}
		s := src.Shard(alarmOnly)
		check(t, s.SetAlarm(42))
		check(t, s.Commit().Wait(t.Context()))
		s.Close()
		cleared := storage.ShardID{Namespace: "C", Name: "cleared"}
		s = src.Shard(cleared)
		check(t, s.Put("k", []byte("v"), false))
		s.Commit()
		check(t, s.DeleteAll())
		check(t, s.Commit().Wait(t.Context()))
		s.Close()

		var buf bytes.Buffer
		bs, err := src.Backup(&buf, "test", nil, nil)
		check(t, err)
		if bs.Shards != 4 || bs.Alarms != 3 {
			t.Fatalf("backup stats %+v; want 4 shards (the cleared one has nothing), 3 alarms", bs)
		}
		for name, open := range snapshotBackends {
			b := open(t)
			rs, err := storage.Restore(b, bytes.NewReader(buf.Bytes()), nil, nil)
			check(t, err)
			if rs != bs {
				t.Fatalf("%s: restore stats %+v; backup's %+v", name, rs, bs)
			}
			_, err = storage.Restore(b, bytes.NewReader(buf.Bytes()), nil, nil)
			if !errors.Is(err, storage.ErrNotEmpty) {
				t.Fatalf("%s: second restore: %v; want ErrNotEmpty", name, err)
			}
			dst := storage.NewEngine(b, storage.EngineOptions{})
			for i, id := range ids {
				got, at := dump(t, dst, id)
				sameMap(t, got, want[id])
				if at != int64(i*1000) {
					t.Fatalf("%s: alarm of %s = %d", name, id, at)
				}
			}
			if _, at := dump(t, dst, alarmOnly); at != 42 {
				t.Fatalf("%s: alarm-only shard's alarm = %d", name, at)
			}
			check(t, dst.Close())
		}
	})
}

// TestRestoreCorrupt: a damaged backup is refused with ErrCorrupt.
func TestRestoreCorrupt(t *testing.T) {
	e := storage.NewEngine(storage.NewMemory(), storage.EngineOptions{})
	defer e.Close()
	fill(t, e, storage.ShardID{Namespace: "A", Name: "0"}, 10, 0)
	buf := backup(t, e)
	_, err := storage.Restore(storage.NewMemory(), bytes.NewReader(buf.Bytes()[:buf.Len()-1]), nil, nil)
	if !errors.Is(err, snapshot.ErrCorrupt) {
		t.Fatalf("err = %v; want ErrCorrupt", err)
	}
}

// exportShard is e.ExportShard of id into a buffer.
func exportShard(t *testing.T, e *storage.Engine, id storage.ShardID) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	_, err := e.ExportShard(&buf, id)
	check(t, err)
	return &buf
}

// backup is e.Backup of every shard into a buffer.
func backup(t *testing.T, e *storage.Engine) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	_, err := e.Backup(&buf, "", nil, nil)
	check(t, err)
	return &buf
}

func check(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestBackupUnderLoadHasNoTornEvent: shards commit events that each write
// two keys with the same value, group-committed, while backups are taken;
// every backup, restored, has both keys equal in every shard — never part
// of an event — and each shard's value only grows from one backup to the
// next.
func TestBackupUnderLoadHasNoTornEvent(t *testing.T) {
	e := storage.NewEngine(openBadger(t, storage.BadgerOptions{Dir: t.TempDir()}), storage.EngineOptions{})
	defer e.Close()
	const shards = 8
	stop := make(chan struct{})
	done := make(chan error, shards)
	for w := 0; w < shards; w++ {
		go func() {
			s := e.Shard(storage.ShardID{Namespace: "LOAD", Name: fmt.Sprint(w)})
			defer s.Close()
			for i := 1; ; i++ {
				select {
				case <-stop:
					done <- s.Commit().Wait(t.Context())
					return
				default:
				}
				v := []byte(fmt.Sprintf("%09d", i))
				if err := s.PutMulti([]abi.KV{{Key: "x", Value: v}, {Key: "y", Value: v}}, false); err != nil {
					done <- err
					return
				}
				if p := s.Commit(); i%50 == 0 {
					if err := p.Wait(t.Context()); err != nil {
						done <- err
						return
					}
				}
			}
		}()
	}
	last := map[string]string{}
	for round := 0; round < 5; round++ {
		time.Sleep(40 * time.Millisecond) // let the load move on
		var buf bytes.Buffer
		if _, err := e.Backup(&buf, "", nil, nil); err != nil {
			t.Fatal(err)
		}
		m := storage.NewMemory()
		if _, err := storage.Restore(m, &buf, nil, nil); err != nil {
			t.Fatal(err)
		}
		for w := 0; w < shards; w++ {
			id := storage.ShardID{Namespace: "LOAD", Name: fmt.Sprint(w)}
			x, _, _ := m.Get(id, "x")
			y, _, _ := m.Get(id, "y")
			if string(x) != string(y) {
				t.Fatalf("backup %d, shard %d: x=%s y=%s: a torn event", round, w, x, y)
			}
			if string(x) < last[id.Name] {
				t.Fatalf("backup %d, shard %d went back from %s to %s", round, w, last[id.Name], x)
			}
			last[id.Name] = string(x)
		}
		m.Close()
	}
	close(stop)
	for w := 0; w < shards; w++ {
		check(t, <-done)
	}
	for name, v := range last {
		if v == "" {
			t.Fatalf("shard %s wrote nothing before the last backup: the load did not run alongside", name)
		}
	}
	t.Logf("last values seen: %v", last)
}

// BenchmarkBackupRestore: 2,000 shards of 20 entries of 100 bytes on
// Badger, backed up from one view and restored into an empty Badger.
// Its correctness test is TestBackupRestore.
func BenchmarkBackupRestore(b *testing.B) {
	src := storage.NewEngine(openBadger(b, storage.BadgerOptions{Dir: b.TempDir()}), storage.EngineOptions{})
	defer src.Close()
	val := bytes.Repeat([]byte("v"), 100)
	for sh := 0; sh < 2000; sh++ {
		s := src.Shard(storage.ShardID{Namespace: "B", Name: fmt.Sprint(sh)})
		for k := 0; k < 20; k++ {
			check(b, s.Put(fmt.Sprintf("key-%02d", k), val, false))
		}
		s.Commit()
		s.Close()
	}
	var size int64
	b.Run("backup", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			var cw countingDiscard
			if _, err := src.Backup(&cw, "", nil, nil); err != nil {
				b.Fatal(err)
			}
			size = int64(cw)
		}
		b.SetBytes(size)
		b.ReportMetric(float64(2000*b.N)/b.Elapsed().Seconds(), "shards/s")
	})
	var buf bytes.Buffer
	if _, err := src.Backup(&buf, "", nil, nil); err != nil {
		b.Fatal(err)
	}
	b.Run("restore", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(buf.Len()))
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			dst := openBadger(b, storage.BadgerOptions{Dir: b.TempDir()})
			b.StartTimer()
			if _, err := storage.Restore(dst, bytes.NewReader(buf.Bytes()), nil, nil); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			dst.Close()
			b.StartTimer()
		}
		b.ReportMetric(float64(2000*b.N)/b.Elapsed().Seconds(), "shards/s")
	})
}

type countingDiscard int64

func (c *countingDiscard) Write(p []byte) (int, error) {
	*c += countingDiscard(len(p))
	return len(p), nil
}

// TestVerifySnapshot: a good stream verifies with its counts, a cut one
// does not, and nothing is written anywhere.
func TestVerifySnapshot(t *testing.T) {
	e := storage.NewEngine(storage.NewMemory(), storage.EngineOptions{})
	defer e.Close()
	fill(t, e, storage.ShardID{Namespace: "A", Name: "0"}, 10, 7)
	fill(t, e, storage.ShardID{Namespace: "A", Name: "1"}, 5, 0)
	var buf bytes.Buffer
	want, err := e.Backup(&buf, "", nil, nil)
	check(t, err)
	got, err := storage.VerifySnapshot(bytes.NewReader(buf.Bytes()), nil)
	if err != nil || got != want {
		t.Fatalf("VerifySnapshot = %+v, %v; want %+v", got, err, want)
	}
	if _, err := storage.VerifySnapshot(bytes.NewReader(buf.Bytes()[:buf.Len()-1]), nil); !errors.Is(err, snapshot.ErrCorrupt) {
		t.Fatalf("cut stream: %v; want ErrCorrupt", err)
	}
}

// FuzzImportShard: any stream imported into an empty shard either
// succeeds or fails leaving the shard empty — never a panic, never part
// of a stream.
func FuzzImportShard(f *testing.F) {
	e := storage.NewEngine(storage.NewMemory(), storage.EngineOptions{})
	defer e.Close()
	src := storage.ShardID{Namespace: "N", Name: "src"}
	s := e.Shard(src)
	for i := 0; i < 5; i++ {
		check(f, s.Put(fmt.Sprint("k", i), []byte{byte(i)}, false))
	}
	check(f, s.SetAlarm(99))
	check(f, s.Commit().Wait(context.Background()))
	s.Close()
	var buf bytes.Buffer
	_, err := e.ExportShard(&buf, src)
	check(f, err)
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		m := storage.NewEngine(storage.NewMemory(), storage.EngineOptions{})
		defer m.Close()
		id := storage.ShardID{Namespace: "N", Name: "dst"}
		sh := m.Shard(id)
		defer sh.Close()
		if _, err := sh.Import(bytes.NewReader(data), nil); err == nil {
			return
		}
		kvs, err := sh.List(abi.ListOptions{})
		check(t, err)
		_, alarm, err := sh.GetAlarm()
		check(t, err)
		if len(kvs) != 0 || alarm {
			t.Fatalf("a failed import left %d entries, alarm %v", len(kvs), alarm)
		}
	})
}

// dyingBackend applies the first n Apply calls, then fails every one, as
// a process that dies mid-import would stop writing.
type dyingBackend struct {
	storage.Backend
	left int
}

func (d *dyingBackend) Apply(b []*storage.Batch) error {
	if d.left--; d.left < 0 {
		return errors.New("injected: the process died")
	}
	return d.Backend.Apply(b)
}

// TestInterruptedImportClearedAtStart: an import that stops after part of
// a shard was written (its rollback never ran) leaves a mark, and
// ClearInterruptedImports deletes the partial shard and the mark.
func TestInterruptedImportClearedAtStart(t *testing.T) {
	src := storage.NewEngine(storage.NewMemory(), storage.EngineOptions{})
	defer src.Close()
	from := storage.ShardID{Namespace: "N", Name: "big"}
	fill(t, src, from, 1500, 5) // several chunks
	buf := exportShard(t, src, from)

	mem := storage.NewMemory()
	e := storage.NewEngine(&dyingBackend{Backend: mem, left: 2}, storage.EngineOptions{}) // the mark, one chunk
	defer e.Close()
	id := storage.ShardID{Namespace: "N", Name: "dst"}
	s := e.Shard(id)
	if _, err := s.Import(bytes.NewReader(buf.Bytes()), nil); err == nil || !strings.Contains(err.Error(), "next start clears it") {
		t.Fatalf("import into a dying backend: %v", err)
	}
	s.Close()
	if kvs, _ := mem.List(id, abi.ListOptions{}); len(kvs) == 0 {
		t.Fatal("the dying import wrote nothing: the test does not interrupt it mid-way")
	}
	cleared, err := storage.ClearInterruptedImports(mem)
	if err != nil || len(cleared) != 1 || cleared[0] != id {
		t.Fatalf("ClearInterruptedImports = %v, %v; want [%s]", cleared, err, id)
	}
	if kvs, _ := mem.List(id, abi.ListOptions{}); len(kvs) != 0 {
		t.Fatalf("%d entries left after clearing", len(kvs))
	}
	if again, err := storage.ClearInterruptedImports(mem); err != nil || len(again) != 0 {
		t.Fatalf("second ClearInterruptedImports = %v, %v; want nothing", again, err)
	}
	// A successful import leaves no mark.
	s2 := storage.NewEngine(mem, storage.EngineOptions{})
	defer s2.Close()
	_, err = importInto(s2, id, bytes.NewReader(buf.Bytes()))
	check(t, err)
	if left, err := storage.ClearInterruptedImports(mem); err != nil || len(left) != 0 {
		t.Fatalf("after a good import ClearInterruptedImports = %v, %v", left, err)
	}
}
