package testutil

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/edgeshard/edgeshard/edge/schema"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/harness"
	"github.com/edgeshard/edgeshard/storage/sqldb"
)

// Host starts a host for tb (harness.Start): on a tb.TempDir, with the
// shared engine and compilation cache (Engine, CacheDir), every log record
// in Env.Logs, closed when the test ends. opts apply after these defaults
// and may replace them (harness.Dir for a restart, harness.HostConfig).
// A failure to start fails the test.
func Host(tb testing.TB, opts ...harness.Option) *harness.Env {
	tb.Helper()
	env, err := harness.Start(append(defaults(tb), opts...)...)
	if err != nil {
		tb.Fatalf("start host: %v", err)
	}
	// A failed close is logged, not failed: fault-injection tests break
	// the storage a host closes on purpose.
	tb.Cleanup(func() {
		if err := env.Close(); err != nil {
			tb.Logf("close host: %v", err)
		}
	})
	return env
}

// HostConfig returns the host configuration Host would start
// (harness.Config), for a test that calls host.New itself or edits the
// configuration before Host(tb, harness.HostConfig(cfg)).
func HostConfig(tb testing.TB, opts ...harness.Option) host.Config {
	tb.Helper()
	cfg, err := harness.Config(append(defaults(tb), opts...)...)
	if err != nil {
		tb.Fatal(err)
	}
	return cfg
}

func defaults(tb testing.TB) []harness.Option {
	tb.Helper()
	return []harness.Option{harness.Dir(tb.TempDir()), harness.Engine(Engine(tb), CacheDir())}
}

// SQL opens the database url (SQLite, "" for a file in a tb.TempDir, or
// PostgreSQL) migrated with migrations (none: empty; each dialect takes
// its own), closed when the test ends.
func SQL(tb testing.TB, url string, migrations []sqldb.Migration) *sqldb.DB {
	tb.Helper()
	return SQLWith(tb, url, sqldb.Options{}, migrations)
}

// SQLWith is SQL with the pool's options.
func SQLWith(tb testing.TB, url string, opts sqldb.Options, migrations []sqldb.Migration) *sqldb.DB {
	tb.Helper()
	if url == "" {
		url = sqldb.Scheme + filepath.Join(tb.TempDir(), "d1.db")
	}
	db, err := sqldb.Open(url, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	if len(migrations) > 0 {
		if _, err := db.Migrate(context.Background(), migrations); err != nil {
			tb.Fatal(err)
		}
	}
	return db
}

// EdgeSchema returns the edge API's SQL migrations (edge/schema), the
// schema the bundled plugins write to.
func EdgeSchema(tb testing.TB) []sqldb.Migration {
	tb.Helper()
	ms, err := schema.Migrations()
	if err != nil {
		tb.Fatal(err)
	}
	return ms
}
