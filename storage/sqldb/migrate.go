package sqldb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
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
	// Dialect is the dialect the migration is written for, from its
	// directory (DialectSQLite for sqlite/0001_init.sql), or "" for a
	// migration at the root, which any dialect runs.
	Dialect string
}

// LoadMigrations reads an application's embedded migrations from fsys:
// NNNN_name.sql files either at its root, for every dialect, or in the
// subdirectories sqlite/ and postgres/, one set per dialect. Each set must
// run 1, 2, 3… without gaps or repeats, and when both dialects have one,
// they must have the same versions and names: version N is one schema
// change, written twice. Migrations come back in version order, each
// dialect's together.
func LoadMigrations(fsys fs.FS) ([]Migration, error) {
	root, err := loadDir(fsys, ".", "")
	if err != nil {
		return nil, err
	}
	lite, err := loadDir(fsys, DialectSQLite, DialectSQLite)
	if err != nil {
		return nil, err
	}
	pg, err := loadDir(fsys, DialectPostgres, DialectPostgres)
	if err != nil {
		return nil, err
	}
	if len(root) > 0 && len(lite)+len(pg) > 0 {
		return nil, errors.New("migrations both at the root and in sqlite/ or postgres/: keep one set for every dialect, or one per dialect")
	}
	if len(lite) > 0 && len(pg) > 0 {
		ln, pn := migrationNames(lite), migrationNames(pg)
		if !slices.Equal(ln, pn) {
			return nil, fmt.Errorf("sqlite/ and postgres/ migrations differ (%s versus %s): each version must exist in both, with one name",
				strings.Join(ln, ", "), strings.Join(pn, ", "))
		}
	}
	return slices.Concat(root, lite, pg), nil
}

func migrationNames(ms []Migration) []string {
	ns := make([]string, len(ms))
	for i, m := range ms {
		ns[i] = fmt.Sprintf("%04d_%s", m.Version, m.Name)
	}
	return ns
}

// loadDir reads the NNNN_name.sql files of dir in version order.
func loadDir(fsys fs.FS, dir, dialect string) ([]Migration, error) {
	names, err := fs.Glob(fsys, path.Join(dir, "*.sql"))
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
		ms = append(ms, Migration{Version: v, Name: name, SQL: string(b), Dialect: dialect})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i, m := range ms {
		if m.Version != i+1 {
			return nil, fmt.Errorf("migration versions must run 1..n without gaps: found %d at position %d in %s", m.Version, i+1, dir)
		}
	}
	return ms, nil
}

// ForDialect returns the migrations of ms a database of dialect runs: the
// ones written for it, or else the ones for every dialect. It fails when
// ms has migrations but none for dialect.
func ForDialect(ms []Migration, dialect string) ([]Migration, error) {
	var own, any []Migration
	for _, m := range ms {
		switch m.Dialect {
		case dialect:
			own = append(own, m)
		case "":
			any = append(any, m)
		}
	}
	switch {
	case len(own) > 0:
		return own, nil
	case len(any) > 0 || len(ms) == 0:
		return any, nil
	}
	return nil, fmt.Errorf("no migrations for %s (only for another dialect)", dialect)
}

// MigrateReport says what Migrate did.
type MigrateReport struct {
	Applied []int // versions applied by this call, in order
	Version int   // the database's schema version afterwards
}

// MigrateLockKey is the PostgreSQL advisory lock Migrate holds while it
// runs (pg_advisory_lock(MigrateLockKey), session level): hosts starting
// together migrate one after another, and each later one finds the work
// done. The number is "edgeshrd" in ASCII.
const MigrateLockKey int64 = 0x6564676573687264

// Migrate brings the database to the newest of ms (as LoadMigrations
// returns them; those of the database's dialect, see ForDialect) by
// applying the migrations it lacks, each in its own transaction together
// with its row in schema_migrations. It is idempotent and safe to run from
// several processes at once: on SQLite each migration's transaction is
// BEGIN IMMEDIATE and checks again that the version is missing; on
// PostgreSQL the whole run holds the advisory lock MigrateLockKey, waited
// for without a timeout (ctx bounds the wait). A database that records a
// version newer than the newest of ms fails with ErrSchemaTooNew. It logs
// nothing.
func (d *DB) Migrate(ctx context.Context, ms []Migration) (MigrateReport, error) {
	rep, err := d.migrate(ctx, ms)
	if err != nil {
		return rep, fmt.Errorf("migrate: %w", err)
	}
	return rep, nil
}

func (d *DB) migrate(ctx context.Context, ms []Migration) (MigrateReport, error) {
	var rep MigrateReport
	ms, err := ForDialect(ms, d.dialect)
	if err != nil {
		return rep, err
	}
	conn, err := d.db.Conn(ctx)
	if err != nil {
		return rep, err
	}
	defer conn.Close()
	if d.dialect == DialectPostgres {
		unlock, err := lockMigrations(ctx, conn)
		if err != nil {
			return rep, err
		}
		defer unlock()
	}
	const createTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT,
    applied_at BIGINT
)`
	if _, err := conn.ExecContext(ctx, createTable); err != nil {
		return rep, fmt.Errorf("create schema_migrations: %w", err)
	}
	current, err := schemaVersion(ctx, conn)
	if err != nil {
		return rep, err
	}
	if current > len(ms) {
		return rep, fmt.Errorf("database is at version %d, this binary knows %d: %w", current, len(ms), ErrSchemaTooNew)
	}
	for _, m := range ms {
		if m.Version <= current {
			continue
		}
		applied, err := apply(ctx, conn, m)
		if err != nil {
			return rep, fmt.Errorf("version %d (%s): %w", m.Version, m.Name, err)
		}
		if applied {
			rep.Applied = append(rep.Applied, m.Version)
		}
	}
	if rep.Version, err = schemaVersion(ctx, conn); err != nil {
		return rep, err
	}
	return rep, nil
}

// lockMigrations takes MigrateLockKey on conn, with the session's
// statement_timeout lifted so that waiting for another host's migrations
// (and running long ones) is bounded by ctx only. unlock releases both; if
// it cannot, it drops the connection, which releases them too.
func lockMigrations(ctx context.Context, conn *sql.Conn) (unlock func(), err error) {
	if _, err := conn.ExecContext(ctx, "SET statement_timeout = 0"); err != nil {
		return nil, fmt.Errorf("lift statement_timeout: %w", err)
	}
	if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock(?)", MigrateLockKey); err != nil {
		dropConn(conn)
		return nil, fmt.Errorf("wait for the migration lock: %w", err)
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := conn.ExecContext(ctx, "SELECT pg_advisory_unlock(?)", MigrateLockKey)
		if err == nil {
			_, err = conn.ExecContext(ctx, "RESET statement_timeout")
		}
		if err != nil {
			dropConn(conn)
		}
	}, nil
}

// dropConn makes the pool close conn instead of reusing it.
func dropConn(conn *sql.Conn) {
	_ = conn.Raw(func(any) error { return driver.ErrBadConn })
}

func schemaVersion(ctx context.Context, conn *sql.Conn) (int, error) {
	var v int
	if err := conn.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&v); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return v, nil
}

// apply runs one migration in a write transaction, unless another process
// applied it first; it reports whether it did.
func apply(ctx context.Context, conn *sql.Conn, m Migration) (bool, error) {
	tx, err := conn.BeginTx(ctx, nil) // SQLite: BEGIN IMMEDIATE, which serialises migrators
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
