package sqldb

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ErrSchemaTooNew is matched (errors.Is) by Migrate's error when the
// database records a migration newer than the ones given: it was migrated
// by a newer binary, and this one must not write to it.
var ErrSchemaTooNew = errors.New("database schema is newer than this binary")

// Migration is one schema migration.
type Migration struct {
	Version int    // from the file name's numeric prefix, from 1
	Name    string // the rest of the file name ("init" for 0001_init.sql)
	SQL     string
}

// LoadMigrations reads the NNNN_name.sql files at the root of fsys (an
// application's embedded migrations) in version order. Versions must run
// 1, 2, 3… without gaps or repeats.
func LoadMigrations(fsys fs.FS) ([]Migration, error) {
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, fmt.Errorf("list migrations: %w", err)
	}
	ms := make([]Migration, 0, len(names))
	for _, n := range names {
		base := strings.TrimSuffix(path.Base(n), ".sql")
		num, name, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 || name == "" {
			return nil, fmt.Errorf("migration file %s: want NNNN_name.sql", n)
		}
		b, err := fs.ReadFile(fsys, n)
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", n, err)
		}
		ms = append(ms, Migration{Version: v, Name: name, SQL: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i, m := range ms {
		if m.Version != i+1 {
			return nil, fmt.Errorf("migration versions must run 1..n without gaps: found %d at position %d", m.Version, i+1)
		}
	}
	return ms, nil
}

// MigrateReport says what Migrate did.
type MigrateReport struct {
	Applied []int // versions applied by this call, in order
	Version int   // the database's schema version afterwards
}

// Migrate brings the database to the newest of ms (as LoadMigrations
// returns them) by applying the migrations it lacks, each in its own
// transaction together with its row in schema_migrations. It is idempotent
// and safe to run from several processes at once; it logs nothing.
func (d *DB) Migrate(ctx context.Context, ms []Migration) (MigrateReport, error) {
	var rep MigrateReport
	const createTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT,
    applied_at INTEGER
)`
	if _, err := d.db.ExecContext(ctx, createTable); err != nil {
		return rep, fmt.Errorf("migrate: create schema_migrations: %w", err)
	}
	current, err := d.schemaVersion(ctx)
	if err != nil {
		return rep, fmt.Errorf("migrate: %w", err)
	}
	if current > len(ms) {
		return rep, fmt.Errorf("migrate: database is at version %d, this binary knows %d: %w", current, len(ms), ErrSchemaTooNew)
	}
	for _, m := range ms {
		if m.Version <= current {
			continue
		}
		applied, err := d.apply(ctx, m)
		if err != nil {
			return rep, fmt.Errorf("migrate: version %d (%s): %w", m.Version, m.Name, err)
		}
		if applied {
			rep.Applied = append(rep.Applied, m.Version)
		}
	}
	if rep.Version, err = d.schemaVersion(ctx); err != nil {
		return rep, fmt.Errorf("migrate: %w", err)
	}
	return rep, nil
}

func (d *DB) schemaVersion(ctx context.Context) (int, error) {
	var v int
	if err := d.db.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&v); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return v, nil
}

// apply runs one migration in a write transaction, unless another process
// applied it first; it reports whether it did.
func (d *DB) apply(ctx context.Context, m Migration) (bool, error) {
	tx, err := d.db.BeginTx(ctx, nil) // BEGIN IMMEDIATE: serialises migrators
	if err != nil {
		return false, err
	}
	defer func() { _ = tx.Rollback() }()
	var n int
	if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM schema_migrations WHERE version = ?", m.Version).Scan(&n); err != nil {
		return false, err
	}
	if n > 0 {
		return false, nil
	}
	if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
		return false, err
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
		m.Version, m.Name, time.Now().UnixMilli()); err != nil {
		return false, err
	}
	if err := tx.Commit(); err != nil {
		return false, err
	}
	return true, nil
}
