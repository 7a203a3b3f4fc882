package host

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/storage"
	"github.com/rs/zerolog"
)

// Binding migrations, like wrangler's [[migrations]]: shard storage is
// keyed by binding name (storage.ShardID.Namespace is the binding's
// Name), so renaming a binding in the config alone would leave its data
// behind under the old name, and removing one leaves its data on disk.
// A migration says what to do with that data, once.

// Migration is one [[migrations]] entry. Migrations run at New, before
// any shard, in order; each runs once and is recorded (with when and what
// it did) in shard storage itself, so a backup carries the records.
type Migration struct {
	// Tag names the migration; unique, never reused.
	Tag string
	// Renamed moves every shard of binding From (entries and alarm) to
	// binding To, under the same shard name. To must hold no data.
	Renamed []BindingRename
	// Deleted deletes every shard of these bindings, on purpose.
	Deleted []string
}

// BindingRename is one rename of a Migration.
type BindingRename struct{ From, To string }

// ShardStateMigrator is a ShardState (a per-shard database kept by
// binding name) that follows binding renames and deletions; the host calls
// it during a migration, before recording it. Both must be idempotent: an
// interrupted migration runs them again.
type ShardStateMigrator interface {
	RenameBinding(from, to string) error
	DeleteBinding(name string) error
}

// migrationShard is where migrations are recorded: a shard no binding
// can have (binding names are not empty).
var migrationShard = storage.ShardID{Namespace: "", Name: "edgeshard.migrations"}

const (
	migrationRunning = "running"  // the tag of a migration begun, not finished
	migrationDone    = "applied/" // + tag: its MigrationRecord
)

// MigrationRecord is what storage keeps of an applied migration.
type MigrationRecord struct {
	Tag       string          `json:"tag"`
	AppliedAt time.Time       `json:"applied_at"`
	Renamed   []BindingRename `json:"renamed,omitempty"`
	Deleted   []string        `json:"deleted,omitempty"`
	// Shards counts the shards moved (renames) and deleted.
	Moved   int `json:"moved_shards"`
	Removed int `json:"deleted_shards"`
}

// ErrMigration reports a migration that is invalid or cannot run.
var ErrMigration = errors.New("migration")

// checkMigrations refuses malformed migrations before anything runs.
func checkMigrations(ms []Migration) error {
	tags := map[string]bool{}
	for i, m := range ms {
		if m.Tag == "" {
			return fmt.Errorf("%w %d: empty tag", ErrMigration, i+1)
		}
		if tags[m.Tag] {
			return fmt.Errorf("%w %q: tag used twice", ErrMigration, m.Tag)
		}
		tags[m.Tag] = true
		seen := map[string]bool{}
		name := func(n string) error {
			if n == "" {
				return fmt.Errorf("%w %q: empty binding name", ErrMigration, m.Tag)
			}
			if seen[n] {
				return fmt.Errorf("%w %q: binding %q appears twice (split it over two migrations)", ErrMigration, m.Tag, n)
			}
			seen[n] = true
			return nil
		}
		for _, r := range m.Renamed {
			if err := errors.Join(name(r.From), name(r.To)); err != nil {
				return err
			}
		}
		for _, d := range m.Deleted {
			if err := name(d); err != nil {
				return err
			}
		}
	}
	return nil
}

// applyMigrations runs the migrations not yet recorded in b, in order.
func applyMigrations(b storage.Backend, cfg Config, log zerolog.Logger) error {
	if len(cfg.Migrations) == 0 {
		return nil
	}
	if err := checkMigrations(cfg.Migrations); err != nil {
		return err
	}
	running, _, err := b.Get(migrationShard, migrationRunning)
	if err != nil {
		return fmt.Errorf("read migration records: %w", err)
	}
	if len(running) > 0 && !hasTag(cfg.Migrations, string(running)) {
		return fmt.Errorf("%w %q was interrupted and is no longer in the config: put it back so that it finishes", ErrMigration, running)
	}
	configured := map[string]bool{}
	for _, bd := range cfg.Bindings {
		configured[bd.Name] = true
	}
	for _, m := range cfg.Migrations {
		_, done, err := b.Get(migrationShard, migrationDone+m.Tag)
		if err != nil {
			return fmt.Errorf("read migration records: %w", err)
		}
		if done {
			continue
		}
		if err := applyMigration(b, m, string(running) == m.Tag, configured, cfg.ShardStates, log); err != nil {
			return err
		}
	}
	return nil
}

func hasTag(ms []Migration, tag string) bool {
	for _, m := range ms {
		if m.Tag == tag {
			return true
		}
	}
	return false
}

// applyMigration runs one migration. resumed: it was begun before (a
// crash); its renames' targets then may hold part of what it moved.
func applyMigration(b storage.Backend, m Migration, resumed bool, configured map[string]bool, states []ShardState, log zerolog.Logger) error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%w %q: %s", ErrMigration, m.Tag, fmt.Sprintf(format, args...))
	}
	for _, r := range m.Renamed {
		if configured[r.From] {
			return fail("binding %q is renamed to %q but is still configured: remove it from [[durable_objects.bindings]]", r.From, r.To)
		}
		if !resumed {
			ids, err := storage.NamespaceShards(b, r.To)
			if err != nil {
				return fail("%v", err)
			}
			if len(ids) > 0 {
				return fail("binding %q already holds data (%d shards): a rename onto it would mix two bindings' data", r.To, len(ids))
			}
		}
	}
	for _, d := range m.Deleted {
		if configured[d] {
			return fail("binding %q is deleted but is still configured: remove it from [[durable_objects.bindings]]", d)
		}
	}
	if err := b.Apply([]*storage.Batch{{Shard: migrationShard, Puts: []abi.KV{{Key: migrationRunning, Value: []byte(m.Tag)}}}}); err != nil {
		return fail("record its start: %v", err)
	}
	rec := MigrationRecord{Tag: m.Tag, Renamed: m.Renamed, Deleted: m.Deleted}
	for _, r := range m.Renamed {
		ids, err := storage.NamespaceShards(b, r.From)
		if err != nil {
			return fail("%v", err)
		}
		for _, id := range ids {
			if _, err := storage.MoveShard(b, id, storage.ShardID{Namespace: r.To, Name: id.Name}); err != nil {
				return fail("%v", err)
			}
		}
		for _, s := range states {
			if sm, ok := s.(ShardStateMigrator); ok {
				if err := sm.RenameBinding(r.From, r.To); err != nil {
					return fail("rename %s of %q: %v", s.SnapshotSection(), r.From, err)
				}
			}
		}
		rec.Moved += len(ids)
		log.Info().Str("migration", m.Tag).Str("from", r.From).Str("to", r.To).Int("shards", len(ids)).
			Msg("migration: binding renamed; its shards' data now belongs to the new name")
	}
	for _, d := range m.Deleted {
		ids, err := storage.NamespaceShards(b, d)
		if err != nil {
			return fail("%v", err)
		}
		for _, id := range ids {
			if err := storage.DeleteShard(b, id); err != nil {
				return fail("%v", err)
			}
		}
		for _, s := range states {
			if sm, ok := s.(ShardStateMigrator); ok {
				if err := sm.DeleteBinding(d); err != nil {
					return fail("delete %s of %q: %v", s.SnapshotSection(), d, err)
				}
			}
		}
		rec.Removed += len(ids)
		log.Warn().Str("migration", m.Tag).Str("binding", d).Int("shards", len(ids)).
			Msg("migration: binding deleted; its shards' data is gone")
	}
	rec.AppliedAt = time.Now().UTC()
	js, err := json.Marshal(rec)
	if err != nil {
		return fail("%v", err)
	}
	err = b.Apply([]*storage.Batch{{Shard: migrationShard, Puts: []abi.KV{{Key: migrationDone + m.Tag, Value: js}}, Deletes: []string{migrationRunning}}})
	if err != nil {
		return fail("record it: %v", err)
	}
	log.Info().Str("migration", m.Tag).Int("moved_shards", rec.Moved).Int("deleted_shards", rec.Removed).
		Msg("migration applied and recorded; it will not run again")
	return nil
}

// AppliedMigrations returns the records of the migrations applied to the
// host's storage, in tag order.
func (h *Host) AppliedMigrations() ([]MigrationRecord, error) {
	sh := h.store.Shard(migrationShard)
	defer sh.Close()
	kvs, err := sh.List(abi.ListOptions{Prefix: migrationDone})
	if err != nil {
		return nil, err
	}
	out := make([]MigrationRecord, 0, len(kvs))
	for _, kv := range kvs {
		var r MigrationRecord
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			return nil, fmt.Errorf("migration record %q: %w", kv.Key, err)
		}
		out = append(out, r)
	}
	return out, nil
}
