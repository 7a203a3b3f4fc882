package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/edgeshard/edgeshard/storage"
	"github.com/edgeshard/edgeshard/storage/shardsql"
)

// The databases of sql = "shard" bindings in shard snapshots, backups,
// restores and migrations. The host carries them by itself, as the
// section SectionSQL of each shard's snapshot:
//
//   - a shard's snapshot (Namespace.ExportShard) holds its database as of
//     the same moment as its entries: both are read between two of its
//     events, after any crash repair (recoverShardSQL);
//   - a backup (Host.Backup) reads every shard's entries from one view of
//     storage, then each shard's database between two of that shard's
//     events, at or after that view (Host.Backup says what that allows).
//     There the section belongs to the shard's marker (markNamespace),
//     written when the database is created: a shard that only ever wrote
//     SQL has no entry of its own, but its marker is in the view;
//   - an import (Namespace.ImportShard) refuses a shard that has a
//     database, like one that has entries: the imported entries and the
//     imported database (or none, without the section) are the shard's
//     whole state. A database copy never carries its redo record
//     (storage/shardsql.Export), so an import never replays an event of
//     another host or moment;
//   - a restore (edgeshard restore) writes each section with
//     ShardSQLState's importer;
//   - a [[migrations]] rename moves the binding's directory of databases
//     and its shards' markers, a deletion removes both.

// SectionSQL names the section of a shard's snapshot that holds its own
// database. An empty section means the shard has none.
const SectionSQL = "sql"

// sqlState is the ShardState of the databases under dir (data_dir/
// shardsql), read and written as files: what an offline restore and the
// migrations use, and a backup for a binding no longer configured.
// b, when set, is the storage of the shards' markers (migrations).
type sqlState struct {
	dir string
	b   storage.Backend
}

// ShardSQLState returns the ShardState of the databases of sql = "shard"
// bindings kept under dir (data_dir/shardsql): for an offline restore
// (ShardStateImporters), with the host stopped. A running host carries
// them by itself; do not put it in Config.ShardStates.
func ShardSQLState(dir string) ShardState { return sqlState{dir: dir} }

func (s sqlState) SnapshotSection() string { return SectionSQL }

// ExportShard writes the shard's database file, nothing if it has none.
func (s sqlState) ExportShard(binding, shard string, w io.Writer) error {
	err := shardsql.Export(context.Background(), shardsql.File(s.dir, binding, shard), w)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// ImportShard writes the shard's database (an empty section: removes it).
// In a backup the section is the marker's: it goes to the marked shard.
func (s sqlState) ImportShard(binding, shard string, r io.Reader) error {
	if id, ok := markedShard(storage.ShardID{Namespace: binding, Name: shard}); ok {
		binding, shard = id.Namespace, id.Name
	}
	return shardsql.Import(context.Background(), shardsql.File(s.dir, binding, shard), r)
}

// RenameBinding moves binding from's databases to binding to, and their
// markers: a marker left under the old name would read as 0 and could
// replay a stale redo record over the moved entries. Idempotent.
func (s sqlState) RenameBinding(from, to string) error {
	src, dst := shardsql.BindingDir(s.dir, from), shardsql.BindingDir(s.dir, to)
	if err := moveDir(src, dst); err != nil {
		return err
	}
	return s.eachMarker(from, func(id storage.ShardID, shard string) error {
		_, err := storage.MoveShard(s.b, id, markID(to, shard))
		return err
	})
}

// DeleteBinding removes binding's databases and their markers.
func (s sqlState) DeleteBinding(name string) error {
	if err := os.RemoveAll(shardsql.BindingDir(s.dir, name)); err != nil {
		return err
	}
	return s.eachMarker(name, func(id storage.ShardID, _ string) error {
		return storage.DeleteShard(s.b, id)
	})
}

// eachMarker calls fn with the marker of each shard of binding.
func (s sqlState) eachMarker(binding string, fn func(id storage.ShardID, shard string) error) error {
	if s.b == nil {
		return nil
	}
	ids, err := storage.NamespaceShards(s.b, markNamespace)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if shard, ok := strings.CutPrefix(id.Name, binding+"\x00"); ok {
			if err := fn(id, shard); err != nil {
				return err
			}
		}
	}
	return nil
}

// markID is the id of the marker of a shard's database (shardsql.go).
func markID(binding, shard string) storage.ShardID {
	return storage.ShardID{Namespace: markNamespace, Name: binding + "\x00" + shard}
}

// markedShard returns the shard whose marker is id.
func markedShard(id storage.ShardID) (storage.ShardID, bool) {
	if id.Namespace != markNamespace {
		return id, false
	}
	b, s, ok := strings.Cut(id.Name, "\x00")
	return storage.ShardID{Namespace: b, Name: s}, ok
}

// moveDir renames src to dst; when both exist (a rename interrupted
// half-way) it moves src's files into dst one by one, then removes src.
func moveDir(src, dst string) error {
	if _, err := os.Stat(src); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if _, err := os.Stat(dst); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.Rename(src, dst)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.Rename(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	return os.Remove(src)
}

// sqlSection is the SectionSQL of shard id in a snapshot taken on the
// shard's actor (onActor: ExportShard), or in a backup, where it goes with
// the shard's marker (its shard in markNamespace): every database has
// one from its creation, while the shard itself may hold no entry and so
// not be in the backup's view at all. None when the shard's binding keeps
// no database for it.
func (h *Host) sqlSection(id storage.ShardID, onActor bool) (storage.Section, bool) {
	if !onActor {
		var ok bool
		if id, ok = markedShard(id); !ok {
			return storage.Section{}, false
		}
	}
	ns, ok := h.namespace(id.Namespace)
	if h.cfg.DataDir == "" || (ok && !ns.shardSQL) {
		return storage.Section{}, false // a configured binding with no database per shard: no file to look for
	}
	path := shardsql.Path(h.cfg.DataDir, id.Namespace, id.Name)
	if _, err := os.Stat(path); err != nil {
		return storage.Section{}, false
	}
	write := func(w io.Writer) error {
		var err error
		switch {
		case onActor:
			err = shardsql.Export(context.Background(), path, w)
		case ok && ns.shardSQL:
			err = ns.ExportSQL(context.Background(), id.Name, w)
		default: // a binding not configured (or no longer sql = "shard"): no actor writes it
			err = shardsql.Export(context.Background(), path, w)
		}
		if errors.Is(err, os.ErrNotExist) {
			return nil // deleted meanwhile (ClearShard): an empty section, no database
		}
		return err
	}
	return storage.Section{Name: SectionSQL, Write: write}, true
}

// dropShardSQL deletes the shard's database and its marker, on its actor
// between two events (ClearShard): a marker kept would be ahead of the
// next database's events and hide a crash between their two commits.
func (a *actor) dropShardSQL() error {
	if !a.ns.shardSQL {
		return nil
	}
	a.closeShardSQL()
	m := a.ns.h.store.Shard(markID(a.ns.name, a.shard))
	defer m.Close()
	if err := m.DeleteAll(); err != nil {
		m.Abort()
		return err
	}
	if err := m.Commit().Wait(context.Background()); err != nil {
		return err
	}
	return shardsql.Remove(a.shardSQLPath())
}

// checkImportSQL refuses an import into a shard that has a database
// (storage.ErrNotEmpty), and a database into a binding that keeps none.
func (a *actor) checkImportSQL() error {
	if !a.ns.shardSQL {
		return nil
	}
	if _, err := os.Stat(a.shardSQLPath()); err == nil {
		return fmt.Errorf("import into %s/%s: %w: the shard has its own database (clear the shard first)", a.ns.name, a.shard, storage.ErrNotEmpty)
	}
	return nil
}

// clearInterruptedSQL removes the databases of shards whose import the
// process's end interrupted (their entries are deleted too).
func clearInterruptedSQL(dataDir string, ids []storage.ShardID) error {
	for _, id := range ids {
		if err := shardsql.Remove(shardsql.Path(dataDir, id.Namespace, id.Name)); err != nil {
			return err
		}
	}
	return nil
}
