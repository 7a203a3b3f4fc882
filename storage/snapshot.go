package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/storage/snapshot"
)

// Shard snapshots: the whole state of a shard as a stream in the format of
// package storage/snapshot, the one definition behind a shard's export and
// import (a planned move between hosts), a backup of every shard and its
// restore.
//
// A shard's snapshot holds, in this order, the sections
//
//	"kv"     its entries, in key order, in chunks of whole records
//	         (uvarint len(key) key uvarint len(value) value); the host's
//	         own records in the shard (its stored-bytes count) included
//	"alarm"  its alarm, 8 bytes big-endian unix ms; absent without one
//	others   Sections the caller adds (e.g. "sql", a per-shard database)
//
// Entries and alarm are read from one View: as of one commit, never part
// of an event's writes. An import refuses a section it has no Importer
// for, so no state is dropped silently.
//
// The API, all of it:
//
//	(*Engine).ExportShard(w, id, extra...)            one shard's stream
//	(*Shard).Import(r, importers)                     a one-shard stream into an empty shard
//	(*Engine).Backup(w, note, extra, progress)        every shard, one stream, one view
//	Restore(b, r, importers, progress)                a stream into an empty Backend
//	VerifySnapshot(r, progress)                       check a whole stream, write nothing
//	ClearInterruptedImports(b)                        at start: delete what a cut-short Import left
//	SnapshotShard, ImportSnapshotShard                the per-shard steps over a Writer/Reader
//	MoveShard, DeleteShard, NamespaceShards (move.go) whole shards inside one Backend

// Section names of a shard snapshot.
const (
	SectionKV    = "kv"
	SectionAlarm = "alarm"
)

// Section is an extra section of a shard's snapshot, written after its
// entries and alarm: Write streams the section's bytes (for example a
// per-shard database's export).
type Section struct {
	Name  string
	Write func(w io.Writer) error
}

// Importer restores an extra section of a shard: it reads the section's
// bytes from r, into the shard named by id. If the import fails
// afterwards the shard's entries and alarm are rolled back; an Importer
// that wrote must be able to be run again over its own leftovers.
type Importer func(id ShardID, r io.Reader) error

// Importers maps section names to their Importer.
type Importers map[string]Importer

// ErrNotEmpty reports an import into a shard, or a restore into a
// backend, that already holds data.
var ErrNotEmpty = errors.New("storage: not empty")

// ShardSnapshotStats describe one shard's snapshot.
type ShardSnapshotStats struct {
	Shard   ShardID // as the stream names it
	Entries int
	Bytes   int64 // of keys and values
	Alarm   int64 // unix ms; 0: none
}

// kvChunkBytes and kvChunkEntries bound one chunk of the "kv" section,
// which an import applies as one Batch: well inside one Badger transaction
// with the default memtable.
const (
	kvChunkBytes   = 256 << 10
	kvChunkEntries = 512
)

var listAll abi.ListOptions

// SnapshotShard writes shard id, read from v, as one shard of w, followed
// by the extra sections.
func SnapshotShard(w *snapshot.Writer, v View, id ShardID, extra ...Section) (ShardSnapshotStats, error) {
	st := ShardSnapshotStats{Shard: id}
	if err := w.BeginShard(snapshot.ShardRef{Namespace: id.Namespace, Name: id.Name}); err != nil {
		return st, err
	}
	if err := w.BeginSection(SectionKV); err != nil {
		return st, err
	}
	var chunk []byte
	n := 0
	err := v.Scan(id, func(key string, val []byte) error {
		chunk = binary.AppendUvarint(chunk, uint64(len(key)))
		chunk = append(chunk, key...)
		chunk = binary.AppendUvarint(chunk, uint64(len(val)))
		chunk = append(chunk, val...)
		st.Entries++
		st.Bytes += int64(len(key) + len(val))
		if n++; n >= kvChunkEntries || len(chunk) >= kvChunkBytes {
			err := w.Chunk(chunk)
			chunk, n = chunk[:0], 0
			return err
		}
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("snapshot shard %s: %w", id, err)
	}
	if len(chunk) > 0 {
		if err := w.Chunk(chunk); err != nil {
			return st, err
		}
	}
	if err := w.EndSection(); err != nil {
		return st, err
	}
	at, ok, err := v.Alarm(id)
	if err != nil {
		return st, fmt.Errorf("snapshot shard %s: %w", id, err)
	}
	if ok {
		st.Alarm = at
		w.BeginSection(SectionAlarm)
		w.Chunk(binary.BigEndian.AppendUint64(nil, uint64(at)))
		if err := w.EndSection(); err != nil {
			return st, err
		}
	}
	for _, s := range extra {
		w.BeginSection(s.Name)
		if err := s.Write(w); err != nil {
			return st, fmt.Errorf("snapshot shard %s: section %q: %w", id, s.Name, err)
		}
		if err := w.EndSection(); err != nil {
			return st, err
		}
	}
	return st, w.EndShard()
}

// ExportShard writes a stream holding shard id's snapshot to w: its
// entries and alarm as of one commit, then the extra sections.
func (e *Engine) ExportShard(w io.Writer, id ShardID, extra ...Section) (ShardSnapshotStats, error) {
	if e.closed.Load() {
		return ShardSnapshotStats{}, ErrClosed
	}
	sw := snapshot.NewWriter(w, snapshot.Header{TakenAt: time.Now().UnixMilli(), Note: "shard " + id.String()})
	var st ShardSnapshotStats
	err := viewOf(e.b, func(v View) error {
		var err error
		st, err = SnapshotShard(sw, v, id, extra...)
		return err
	})
	if err != nil {
		return st, err
	}
	return st, sw.Close()
}

// BackupStats describe a backup.
type BackupStats struct {
	Shards  int
	Entries int
	Bytes   int64 // of keys and values
	Alarms  int
}

// Backup writes every shard of the backend, from one View (so as of one
// commit, across all shards), to w as one stream. extra, if not nil,
// gives each shard's extra sections. progress, if not nil, is called
// after each shard.
func (e *Engine) Backup(w io.Writer, note string, extra func(ShardID) []Section, progress func(BackupStats)) (BackupStats, error) {
	var bs BackupStats
	if e.closed.Load() {
		return bs, ErrClosed
	}
	vw, ok := e.b.(Viewer)
	if !ok {
		return bs, fmt.Errorf("backup: %w (%T)", ErrNoView, e.b)
	}
	sw := snapshot.NewWriter(w, snapshot.Header{TakenAt: time.Now().UnixMilli(), Note: note})
	err := vw.View(func(v View) error {
		ids, err := v.Shards()
		if err != nil {
			return err
		}
		for _, id := range ids {
			var secs []Section
			if extra != nil {
				secs = extra(id)
			}
			st, err := SnapshotShard(sw, v, id, secs...)
			if err != nil {
				return err
			}
			bs.add(st)
			if progress != nil {
				progress(bs)
			}
		}
		return nil
	})
	if err != nil {
		return bs, fmt.Errorf("backup: %w", err)
	}
	return bs, sw.Close()
}

func (bs *BackupStats) add(st ShardSnapshotStats) {
	bs.Shards++
	bs.Entries += st.Entries
	bs.Bytes += st.Bytes
	if st.Alarm > 0 {
		bs.Alarms++
	}
}

// ImportSnapshotShard writes the shard r is positioned on (just after
// NextShard) into shard id of b, section by section: each chunk of entries
// as one Batch, the alarm last. It does not check that the shard is
// empty, nor roll back on failure: Shard.Import and Restore do. A nil b
// only checks the shard's sections (VerifySnapshot).
func ImportSnapshotShard(b Backend, r *snapshot.Reader, id ShardID, imp Importers) (ShardSnapshotStats, error) {
	st := ShardSnapshotStats{Shard: id}
	for {
		name, err := r.NextSection()
		if err == io.EOF {
			return st, nil
		}
		if err != nil {
			return st, err
		}
		switch name {
		case SectionKV:
			if err := importKV(b, r, id, &st); err != nil {
				return st, err
			}
		case SectionAlarm:
			c, err := r.Chunk()
			if err != nil || len(c) != 8 {
				return st, fmt.Errorf("%w: alarm section of shard %s: want 8 bytes", snapshot.ErrCorrupt, id)
			}
			st.Alarm = int64(binary.BigEndian.Uint64(c))
			if st.Alarm <= 0 {
				return st, fmt.Errorf("%w: alarm section of shard %s: alarm %d", snapshot.ErrCorrupt, id, st.Alarm)
			}
			if _, err := r.Chunk(); err != io.EOF {
				return st, fmt.Errorf("%w: alarm section of shard %s: more than one chunk", snapshot.ErrCorrupt, id)
			}
			if b == nil {
				continue // VerifySnapshot
			}
			if err := b.Apply([]*Batch{{Shard: id, SetAlarm: st.Alarm}}); err != nil {
				return st, fmt.Errorf("import alarm of %s: %w", id, err)
			}
		default:
			if b == nil {
				continue // VerifySnapshot: NextSection skips it, its frames checked
			}
			fn := imp[name]
			if fn == nil {
				return st, fmt.Errorf("shard %s: %w %q (this host has nothing that restores it)", id, snapshot.ErrUnknownSection, name)
			}
			if err := fn(id, r); err != nil {
				return st, fmt.Errorf("import section %q of %s: %w", name, id, err)
			}
		}
	}
}

// importKV applies the "kv" section, one Batch per chunk.
func importKV(b Backend, r *snapshot.Reader, id ShardID, st *ShardSnapshotStats) error {
	batch := &Batch{Shard: id}
	for {
		c, err := r.Chunk()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		batch.Puts = batch.Puts[:0]
		err = kvRecords(c, id, func(k, v []byte) {
			batch.Puts = append(batch.Puts, abi.KV{Key: string(k), Value: v})
			st.Entries++
			st.Bytes += int64(len(k) + len(v))
		})
		if err != nil {
			return err
		}
		if b == nil {
			continue // VerifySnapshot
		}
		if err := b.Apply([]*Batch{batch}); err != nil {
			return fmt.Errorf("import entries of %s: %w", id, err)
		}
	}
}

// kvRecords calls fn with each record of a chunk of the "kv" section.
func kvRecords(c []byte, id ShardID, fn func(k, v []byte)) error {
	for len(c) > 0 {
		var k, v []byte
		var ok bool
		if k, c, ok = record(c); ok {
			v, c, ok = record(c)
		}
		if !ok {
			return fmt.Errorf("%w: kv section of shard %s: malformed record", snapshot.ErrCorrupt, id)
		}
		fn(k, v)
	}
	return nil
}

func record(p []byte) (rec, rest []byte, ok bool) {
	n, w := binary.Uvarint(p)
	if w <= 0 || uint64(len(p)-w) < n {
		return nil, p, false
	}
	return p[w : w+int(n)], p[w+int(n):], true
}

// shardEmpty reports whether shard id of b has no entry and no alarm.
func shardEmpty(b Backend, id ShardID) (bool, error) {
	kvs, err := b.List(id, abi.ListOptions{Limit: 1})
	if err != nil {
		return false, err
	}
	_, alarm, err := b.GetAlarm(id)
	return len(kvs) == 0 && !alarm, err
}

// Import reads a stream holding exactly one shard's snapshot from r into
// this shard, which must be empty (no entry, no alarm: ErrNotEmpty). The
// stream's shard may have another id (a rename). The caller owns the
// shard as for any event (its actor, between events); writes of earlier
// events are waited for first. The import is all or nothing: on any error,
// a corrupt or truncated stream included, what it wrote is deleted again;
// if the process dies meanwhile, a mark left in the backend makes
// ClearInterruptedImports delete it at the next start. Afterwards the
// handle reads the imported state. The returned stats name the stream's
// shard; Alarm is the imported alarm, for the caller's scheduler.
func (s *Shard) Import(r io.Reader, imp Importers) (ShardSnapshotStats, error) {
	s.settle()
	if err := s.begin(); err != nil {
		return ShardSnapshotStats{}, err
	}
	b := s.e.b
	empty, err := shardEmpty(b, s.id)
	if err != nil {
		return ShardSnapshotStats{}, fmt.Errorf("import into %s: %w", s.id, err)
	}
	if !empty {
		return ShardSnapshotStats{}, fmt.Errorf("import into %s: %w: the shard has entries or an alarm", s.id, ErrNotEmpty)
	}
	mark := string(appendShardKey(nil, 'i', s.id))
	if err := b.Apply([]*Batch{{Shard: importsShard, Puts: []abi.KV{{Key: mark, Value: []byte{}}}}}); err != nil {
		return ShardSnapshotStats{}, fmt.Errorf("import into %s: mark it: %w", s.id, err)
	}
	defer s.Reset()
	unmark := &Batch{Shard: importsShard, Deletes: []string{mark}}
	st, err := importOne(b, r, s.id, imp)
	if err != nil {
		if rerr := b.Apply([]*Batch{{Shard: s.id, DeleteAll: true, DelAlarm: true}, unmark}); rerr != nil {
			err = fmt.Errorf("%w; and rolling back the partial import failed (the next start clears it): %w", err, rerr)
		}
		return st, fmt.Errorf("import into %s: %w", s.id, err)
	}
	if err := b.Apply([]*Batch{unmark}); err != nil {
		return st, fmt.Errorf("import into %s: imported, but clearing its mark failed (the next start would delete it): %w", s.id, err)
	}
	return st, nil
}

// importsShard holds a mark per import in progress (Shard.Import): the
// shard's id, encoded as in Badger's keys (tag 'i'). It is in namespace "", which no binding has.
var importsShard = ShardID{Namespace: "", Name: "edgeshard.imports"}

// ClearInterruptedImports deletes every shard an import was writing when
// the process stopped (its mark is still there) — entries and alarm — and
// returns them. Run it at start, before any shard serves: such a shard
// holds part of a stream, and its import was never acknowledged.
func ClearInterruptedImports(b Backend) ([]ShardID, error) {
	marks, err := b.List(importsShard, listAll)
	if err != nil {
		return nil, fmt.Errorf("list interrupted imports: %w", err)
	}
	var out []ShardID
	for _, m := range marks {
		id, rest, ok := decodeShardKey([]byte(m.Key))
		if !ok || len(rest) != 0 {
			return out, fmt.Errorf("malformed import mark %q", m.Key)
		}
		err := b.Apply([]*Batch{{Shard: id, DeleteAll: true, DelAlarm: true}, {Shard: importsShard, Deletes: []string{m.Key}}})
		if err != nil {
			return out, fmt.Errorf("clear the interrupted import into %s: %w", id, err)
		}
		out = append(out, id)
	}
	return out, nil
}

// importOne imports the one shard of the stream r into id; the shard's
// stats name the stream's shard.
func importOne(b Backend, r io.Reader, id ShardID, imp Importers) (ShardSnapshotStats, error) {
	sr, err := snapshot.NewReader(r)
	if err != nil {
		return ShardSnapshotStats{}, err
	}
	ref, err := sr.NextShard()
	if err == io.EOF {
		return ShardSnapshotStats{}, fmt.Errorf("%w: the stream holds no shard", snapshot.ErrCorrupt)
	}
	if err != nil {
		return ShardSnapshotStats{}, err
	}
	st, err := ImportSnapshotShard(b, sr, id, imp)
	st.Shard = ShardID{Namespace: ref.Namespace, Name: ref.Name}
	if err != nil {
		return st, err
	}
	if _, err := sr.NextShard(); err != io.EOF {
		if err == nil {
			err = fmt.Errorf("%w: the stream holds more than one shard (a backup? use restore)", snapshot.ErrCorrupt)
		}
		return st, err
	}
	return st, nil
}

// VerifySnapshot reads a whole stream from r — every frame, every record,
// the end — without writing anything, and returns what it holds: a file
// that passes it restores (bar sections the restoring host lacks).
// progress, if not nil, is called after each shard.
func VerifySnapshot(r io.Reader, progress func(BackupStats)) (BackupStats, error) {
	return restoreStream(nil, r, nil, progress)
}

// Restore reads a stream (a backup) into b, which must hold no shard
// (ErrNotEmpty) and be a Viewer. It applies many shards per Apply, and
// syncs b once at the end when b can (Badger): what it restored is
// durable when it returns, even with SyncWrites off. Each shard goes back under the id the
// stream names. It is not atomic: on error b holds part of the stream,
// so restore into a fresh directory and keep it only on success (as
// `edgeshard restore` does). progress, if not nil, is called after each
// shard.
func Restore(b Backend, r io.Reader, imp Importers, progress func(BackupStats)) (BackupStats, error) {
	var bs BackupStats
	vw, ok := b.(Viewer)
	if !ok {
		return bs, fmt.Errorf("restore: %w (%T)", ErrNoView, b)
	}
	var n int
	err := vw.View(func(v View) error {
		ids, err := v.Shards()
		n = len(ids)
		return err
	})
	if err != nil {
		return bs, fmt.Errorf("restore: %w", err)
	}
	if n > 0 {
		return bs, fmt.Errorf("restore: %w: the storage holds %d shards", ErrNotEmpty, n)
	}
	return restoreStream(b, r, imp, progress)
}

// restoreStream imports every shard of r into b (nil: only checks them).
func restoreStream(b Backend, r io.Reader, imp Importers, progress func(BackupStats)) (BackupStats, error) {
	var bs BackupStats
	sr, err := snapshot.NewReader(r)
	if err != nil {
		return bs, fmt.Errorf("restore: %w", err)
	}
	var buf *applyBuffer
	if b != nil {
		buf = &applyBuffer{b: b}
		b = buf
	}
	for {
		ref, err := sr.NextShard()
		if err == io.EOF {
			err = nil
			if buf != nil {
				err = buf.flush()
			}
			if s, ok := b.(interface{ Sync() error }); ok && err == nil {
				err = s.Sync() // durable on return, even with SyncWrites off
			}
			if err != nil {
				return bs, fmt.Errorf("restore: %w", err)
			}
			return bs, nil
		}
		if err != nil {
			return bs, fmt.Errorf("restore: after %d shards: %w", bs.Shards, err)
		}
		id := ShardID{Namespace: ref.Namespace, Name: ref.Name}
		st, err := ImportSnapshotShard(b, sr, id, imp)
		if err != nil {
			return bs, fmt.Errorf("restore: shard %s: %w", id, err)
		}
		bs.add(st)
		if progress != nil {
			progress(bs)
		}
	}
}

// applyBuffer groups the small batches of a restore (a shard of a few
// entries is one batch) into larger Backend.Apply calls: one Badger
// transaction for many shards instead of one each. It copies what it
// keeps, since a snapshot.Reader reuses its buffers.
type applyBuffer struct {
	b       Backend
	pending []*Batch
	bytes   int
}

// applyBufferBytes is how much an applyBuffer holds before it applies.
const applyBufferBytes = 1 << 20

func (a *applyBuffer) Get(id ShardID, key string) ([]byte, bool, error) { return a.b.Get(id, key) }
func (a *applyBuffer) List(id ShardID, o abi.ListOptions) ([]abi.KV, error) {
	return a.b.List(id, o)
}
func (a *applyBuffer) GetAlarm(id ShardID) (int64, bool, error) { return a.b.GetAlarm(id) }
func (a *applyBuffer) Alarms() ([]Alarm, error)                 { return a.b.Alarms() }
func (a *applyBuffer) Close() error                             { return a.b.Close() }
func (a *applyBuffer) Sync() error {
	if s, ok := a.b.(interface{ Sync() error }); ok {
		return s.Sync()
	}
	return nil
}

func (a *applyBuffer) Apply(batches []*Batch) error {
	for _, bt := range batches {
		c := *bt
		c.Puts = make([]abi.KV, len(bt.Puts))
		for i, kv := range bt.Puts {
			c.Puts[i] = abi.KV{Key: kv.Key, Value: bytes.Clone(kv.Value)}
			a.bytes += len(kv.Key) + len(kv.Value)
		}
		c.Deletes = slices.Clone(bt.Deletes)
		a.pending = append(a.pending, &c)
		a.bytes += 64
	}
	if a.bytes >= applyBufferBytes {
		return a.flush()
	}
	return nil
}

func (a *applyBuffer) flush() error {
	if len(a.pending) == 0 {
		return nil
	}
	err := a.b.Apply(a.pending)
	a.pending, a.bytes = a.pending[:0], 0
	return err
}
