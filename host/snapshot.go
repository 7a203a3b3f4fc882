package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"slices"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/storage"
	"github.com/edgeshard/edgeshard/storage/shardsql"
	"github.com/rs/zerolog"
)

// Shard snapshots through the host: one shard's export and import (the
// admin API's, a planned move's) and a backup of every shard. The format
// and the storage side are storage/snapshot and storage/snapshot.go.

// ShardState is state of a shard kept outside shard storage (a per-shard
// database) that shard snapshots carry as an extra section. The host calls
// its methods on the shard's actor, between two events, so the section is
// consistent with the shard's entries and alarm.
type ShardState interface {
	// SnapshotSection names its section in a shard's snapshot ("sql").
	SnapshotSection() string
	// ExportShard writes the shard's state to w (nothing when it has none).
	ExportShard(binding, shard string, w io.Writer) error
	// ImportShard restores a section ExportShard wrote into a shard that
	// has none; it may be run again over what a failed import left.
	ImportShard(binding, shard string, r io.Reader) error
}

// ExportShard writes a snapshot of one shard to w: a stream of the
// storage/snapshot format holding its entries, its alarm and the sections
// of Config.ShardStates, and on a sql = "shard" binding the shard's own
// database (SectionSQL; none when it has no database). It runs on the
// shard's actor (started if need be, without an instance) once the writes
// of every earlier event are durable and any crash between an event's two
// commits is repaired, so entries and database are of one moment holding
// exactly what had been acknowledged when it began; the shard runs no
// event while the snapshot is written.
func (ns *Namespace) ExportShard(ctx context.Context, shard string, w io.Writer) (storage.ShardSnapshotStats, error) {
	var st storage.ShardSnapshotStats
	var err error
	if rerr := ns.runOnShard(ctx, shard, func(a *actor) {
		a.waitLast()
		if err = a.recoverShardSQL(); err != nil {
			return
		}
		st, err = ns.h.store.ExportShard(w, a.id, ns.h.sections(a.id, true)...)
	}); rerr != nil {
		return st, rerr
	}
	return st, err
}

// ImportShard reads a one-shard snapshot stream (ExportShard's, possibly
// of another host, binding or shard) from r into this shard, which must be
// empty: no entry, no alarm and, on a sql = "shard" binding, no database
// (storage.ErrNotEmpty otherwise). The stream's SectionSQL, if any, becomes
// the shard's database; without one the shard has none. It runs on
// the shard's actor, so no other event of the shard runs meanwhile (they
// wait in its queue and see the imported state); the shard's instance is
// discarded first, so it restarts from the imported state. All or nothing:
// a corrupt or truncated stream (snapshot.ErrCorrupt) leaves the shard
// empty. The imported alarm is scheduled. The stats name the stream's
// shard.
func (ns *Namespace) ImportShard(ctx context.Context, shard string, r io.Reader) (storage.ShardSnapshotStats, error) {
	var st storage.ShardSnapshotStats
	var err error
	if rerr := ns.runOnShard(ctx, shard, func(a *actor) {
		a.waitLast()
		a.closeInstance()
		if err = a.checkImportSQL(); err != nil {
			return
		}
		a.closeShardSQL()
		if err = a.dropLoneStoredRecord(); err != nil {
			return
		}
		st, err = a.store.Import(r, ns.importers())
		if err != nil && ns.shardSQL {
			// All or nothing: the entries are rolled back, so is the database.
			err = errors.Join(err, shardsql.Remove(a.shardSQLPath()))
		} else if err == nil {
			err = a.recoverShardSQL() // an imported database gets its marker
		}
		if err == nil && st.Alarm > 0 {
			ns.h.alarms.schedule(a.id, st.Alarm, 0)
		}
	}); rerr != nil {
		return st, rerr
	}
	if err == nil {
		ns.h.log.Info().Str("binding", ns.name).Str("shard", shard).Str("from", st.Shard.String()).
			Int("entries", st.Entries).Int64("bytes", st.Bytes).Msg("shard imported")
	}
	return st, err
}

// ClearShard deletes one shard's entries and alarm, and its database on a
// sql = "shard" binding, between two of its events, and discards its
// instance: what a planned move does to the
// source once the target has imported the shard (a shard holding data
// refuses an import). It returns once the deletion is durable.
func (ns *Namespace) ClearShard(ctx context.Context, shard string) error {
	var err error
	if rerr := ns.runOnShard(ctx, shard, func(a *actor) {
		a.waitLast()
		a.closeInstance()
		if err = a.store.DeleteAll(); err == nil {
			err = a.store.DeleteAlarm()
		}
		if err != nil {
			a.store.Abort()
			return
		}
		err = a.store.Commit().Wait(context.Background())
		ns.h.alarms.cancel(a.id)
		if err == nil {
			err = a.dropShardSQL()
		}
	}); rerr != nil {
		return rerr
	}
	if err == nil {
		ns.h.log.Info().Str("binding", ns.name).Str("shard", shard).Msg("shard cleared")
	}
	return err
}

// dropLoneStoredRecord deletes the host's stored-bytes record (quota.go)
// of a shard that holds nothing else — what a shard whose guest deleted
// every key keeps — so that it counts as empty for an import.
func (a *actor) dropLoneStoredRecord() error {
	kvs, err := a.store.List(abi.ListOptions{Limit: 2})
	if err != nil || len(kvs) != 1 || kvs[0].Key != storedKey {
		return err
	}
	if _, err := a.store.Delete(storedKey); err != nil {
		return err
	}
	return a.store.Commit().Wait(context.Background())
}

// runOnShard runs fn on the shard's actor between two events. If ctx ends
// while fn is queued it never runs; once it runs, runOnShard waits for it.
// Like every control event it never starts a shard on a host with a
// Placement that does not run it (errNotHere: the shard's owner serves it).
func (ns *Namespace) runOnShard(ctx context.Context, shard string, fn func(*actor)) error {
	if err := ns.checkShard(shard); err != nil {
		return err
	}
	ev := &event{kind: evRun, run: fn, done: make(chan result, 1)}
	if err := ns.enqueue(shard, ev, nil); err != nil {
		return err
	}
	select {
	case r := <-ev.done:
		return r.err // errMoved: refused by an actor leaving the host
	case <-ctx.Done():
		if ev.state.CompareAndSwap(evQueued, evAbandoned) {
			return fmt.Errorf("%w: %w", ErrNotRun, ctx.Err())
		}
		return (<-ev.done).err
	}
}

// Backup writes every shard in the host's storage — of every binding,
// configured or not — to w as one snapshot stream, read from one view of
// the storage: as of one commit across all shards, so no event is torn
// and everything acknowledged before Backup began is in it. progress, if
// not nil, follows each shard.
//
// Per-shard state outside that view is read shard by shard, after it,
// while the backup is written:
//
//   - the database of a shard of a sql = "shard" binding (SectionSQL) is
//     read on the shard's actor between two of its events, after any
//     crash repair, as of that moment: it holds every SQL write of the
//     events in the view's entries, and possibly those of events the
//     shard ran after the view was taken, whose key-value writes the
//     backup does not hold. A restore replays nothing (the copy keeps no
//     redo record), so for such a shard the restored entries may lag its
//     restored database by those events. A shard that ran no event
//     between the view and its database's copy (a quiet shard, a drained
//     host) is restored exactly. The section goes with the shard's
//     marker, which every database has from its creation, so a shard
//     that wrote only SQL is in the backup too.
//   - sections of Config.ShardStates are read outside the shard's actor:
//     consistent with the shard's entries only if it ran no event
//     meanwhile.
func (h *Host) Backup(w io.Writer, note string, progress func(storage.BackupStats)) (storage.BackupStats, error) {
	return h.store.Backup(w, note, func(id storage.ShardID) []storage.Section { return h.sections(id, false) }, progress)
}

// sections returns the extra snapshot sections of shard id, read on its
// actor (onActor) or by a backup.
func (h *Host) sections(id storage.ShardID, onActor bool) []storage.Section {
	out := make([]storage.Section, 0, len(h.cfg.ShardStates)+1)
	if s, ok := h.sqlSection(id, onActor); ok {
		out = append(out, s)
	}
	for _, s := range h.cfg.ShardStates {
		out = append(out, storage.Section{Name: s.SnapshotSection(), Write: func(w io.Writer) error {
			return s.ExportShard(id.Namespace, id.Name, w)
		}})
	}
	return out
}

// importers restores the sections of Config.ShardStates and, on a
// sql = "shard" binding, the shard's database (ImportShard closed it).
func (ns *Namespace) importers() storage.Importers {
	imp := ShardStateImporters(ns.h.cfg.ShardStates)
	if ns.shardSQL {
		maps.Copy(imp, ShardStateImporters([]ShardState{ShardSQLState(filepath.Join(ns.h.cfg.DataDir, shardsql.Dir))}))
	}
	return imp
}

// ShardStateImporters returns the importers of the given states' sections,
// for storage.Restore (an offline restore has no host).
func ShardStateImporters(states []ShardState) storage.Importers {
	imp := storage.Importers{}
	for _, s := range states {
		imp[s.SnapshotSection()] = func(id storage.ShardID, r io.Reader) error {
			return s.ImportShard(id.Namespace, id.Name, r)
		}
	}
	return imp
}

// prepareStorage readies shard storage before any shard runs: it deletes
// what imports interrupted by the process's end left (their shards hold
// part of a stream), then applies the configured migrations.
func prepareStorage(b storage.Backend, cfg Config, log zerolog.Logger) error {
	cleared, err := storage.ClearInterruptedImports(b)
	for _, id := range cleared {
		log.Warn().Str("binding", id.Namespace).Str("shard", id.Name).
			Msg("an import into this shard was interrupted when the host stopped: what it wrote is deleted; import it again")
	}
	if err != nil {
		return err
	}
	if err := clearInterruptedSQL(cfg.DataDir, cleared); err != nil {
		return err
	}
	// The databases of sql = "shard" bindings follow renames and deletions.
	cfg.ShardStates = append(slices.Clip(cfg.ShardStates), sqlState{dir: filepath.Join(cfg.DataDir, shardsql.Dir), b: b})
	return applyMigrations(b, cfg, log)
}
