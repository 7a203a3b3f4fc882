// Package schema is the edge API's SQL schema: its tables (runtime events,
// rate-limit windows, counters and their source rows) as embedded,
// versioned migrations, one set per dialect (migrations/sqlite and
// migrations/postgres, the same versions), applied with sqldb's runner.
// SCHEMA.md describes every table; the statements the edge and the plugins
// run on them, one text for both dialects, are in plugins/proto.
package schema

import (
	"context"
	"embed"
	"fmt"
	"io/fs"

	"github.com/edgeshard/edgeshard/storage/sqldb"
)

// Version is the version of the newest migration: the schema a migrated
// database has. Bump it with every new migrations/{sqlite,postgres}/NNNN_name.sql
// pair.
const Version = 3

//go:embed migrations/sqlite/*.sql migrations/postgres/*.sql
var files embed.FS

// Migrations returns the embedded migrations of both dialects, each
// dialect's in version order (sqldb.DB.Migrate takes its own).
func Migrations() ([]sqldb.Migration, error) {
	sub, err := fs.Sub(files, "migrations")
	if err != nil {
		return nil, err
	}
	ms, err := sqldb.LoadMigrations(sub)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{sqldb.DialectSQLite, sqldb.DialectPostgres} {
		own, err := sqldb.ForDialect(ms, d)
		if err != nil {
			return nil, err
		}
		if len(own) != Version || own[0].Dialect != d {
			return nil, fmt.Errorf("newest %s migration is %d but schema.Version is %d", d, len(own), Version)
		}
	}
	return ms, nil
}

// Migrate brings db to Version (see sqldb.DB.Migrate): idempotent, safe
// from several processes at once (on PostgreSQL under an advisory lock),
// and an error matching sqldb.ErrSchemaTooNew on a database a newer binary
// migrated.
func Migrate(ctx context.Context, db *sqldb.DB) (sqldb.MigrateReport, error) {
	ms, err := Migrations()
	if err != nil {
		return sqldb.MigrateReport{}, fmt.Errorf("migrate: %w", err)
	}
	return db.Migrate(ctx, ms)
}
