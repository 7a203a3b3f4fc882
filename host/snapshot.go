package host

import (
	"context"
	"fmt"
	"io"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/storage"
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
// of Config.ShardStates. It runs on the shard's actor (started if need
// be, without an instance) once the writes of every earlier event are
// durable, so it holds exactly what had been acknowledged when it began;
// the shard runs no event while the snapshot is written.
func (ns *Namespace) ExportShard(ctx context.Context, shard string, w io.Writer) (storage.ShardSnapshotStats, error) {
	var st storage.ShardSnapshotStats
	var err error
	if rerr := ns.runOnShard(ctx, shard, func(a *actor) {
		a.waitLast()
		st, err = ns.h.store.ExportShard(w, a.id, ns.h.sections(a.id)...)
	}); rerr != nil {
		return st, rerr
	}
	return st, err
}

// ImportShard reads a one-shard snapshot stream (ExportShard's, possibly
// of another host, binding or shard) from r into this shard, which must be
// empty: no entry and no alarm (storage.ErrNotEmpty otherwise). It runs on
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
		if err = a.dropLoneStoredRecord(); err != nil {
			return
		}
		st, err = a.store.Import(r, ns.h.importers())
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

// ClearShard deletes one shard's entries and alarm, between two of its
// events, and discards its instance: what a planned move does to the
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
// Sections of Config.ShardStates are read shard by shard, outside that
// view (not between two events of the shard): they are consistent with
// the shard's entries only if the shard ran no event meanwhile.
func (h *Host) Backup(w io.Writer, note string, progress func(storage.BackupStats)) (storage.BackupStats, error) {
	var extra func(storage.ShardID) []storage.Section
	if len(h.cfg.ShardStates) > 0 {
		extra = h.sections
	}
	return h.store.Backup(w, note, extra, progress)
}

// sections returns the extra snapshot sections of shard id.
func (h *Host) sections(id storage.ShardID) []storage.Section {
	out := make([]storage.Section, 0, len(h.cfg.ShardStates))
	for _, s := range h.cfg.ShardStates {
		out = append(out, storage.Section{Name: s.SnapshotSection(), Write: func(w io.Writer) error {
			return s.ExportShard(id.Namespace, id.Name, w)
		}})
	}
	return out
}

// importers restores the sections of Config.ShardStates.
func (h *Host) importers() storage.Importers {
	return ShardStateImporters(h.cfg.ShardStates)
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
	return applyMigrations(b, cfg, log)
}
