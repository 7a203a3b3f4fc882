package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/internal/pgtest"
)

// backend is one kind of database the binding's tests run on.
type backend struct {
	name string
	open func(t testing.TB, opts Options) *DB
}

// backends are SQLite (a file) and PostgreSQL (a fresh database on the test
// binary's throwaway server; skipped without PostgreSQL, except in CI).
var backends = []backend{
	{DialectSQLite, openFile},
	{DialectPostgres, openPG},
}

// eachBackend runs f as a subtest per backend.
func eachBackend(t *testing.T, opts Options, f func(t *testing.T, db *DB)) {
	t.Helper()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { f(t, b.open(t, opts)) })
	}
}

// pick returns the backend's variant of a value that differs by dialect.
func pick[T any](db *DB, sqlite, postgres T) T {
	if db.Dialect() == DialectPostgres {
		return postgres
	}
	return sqlite
}

func openPG(t testing.TB, opts Options) *DB {
	t.Helper()
	return openURL(t, pgtest.DB(t), opts)
}

// openURL opens the database at url, closed when the test ends.
func openURL(t testing.TB, url string, opts Options) *DB {
	t.Helper()
	db, err := Open(url, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// holdConns takes n connections of db's pool at once, released when the
// test ends.
func holdConns(t *testing.T, db *DB, n int) []*sql.Conn {
	t.Helper()
	out := make([]*sql.Conn, n)
	for i := range out {
		conn, err := db.SQL().Conn(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		out[i] = conn
	}
	return out
}

func openFile(t testing.TB, opts Options) *DB {
	t.Helper()
	return openURL(t, "sqlite://"+filepath.Join(t.TempDir(), "d1.db"), opts)
}

func batch(t testing.TB, db *DB, stmts ...abi.Statement) []abi.Result {
	t.Helper()
	res, err := db.Batch(context.Background(), stmts)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func st(sql string, args ...any) abi.Statement { return abi.Statement{SQL: sql, Args: args} }

func TestOpenURLErrors(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"mysql://localhost/db", `unknown scheme "mysql://"`},
		{"./d1.db", "missing scheme"},
		{"sqlite://", "empty path"},
		{"sqlite://./x.db?_pragma=foo", "query or fragment"},
		{"sqlite://file:x.db", "file: URIs"},
	} {
		_, err := Open(tc.url, Options{})
		if err == nil {
			t.Errorf("Open(%q) succeeded", tc.url)
			continue
		}
		if !strings.HasPrefix(err.Error(), "open sql database \""+tc.url+"\": ") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%q) error %q, want it to contain %q", tc.url, err, tc.want)
		}
	}
}

func TestOpenBadOptions(t *testing.T) {
	for _, o := range []Options{{Synchronous: "OFF"}, {BusyTimeout: -1}, {MaxOpenConns: -1}} {
		if _, err := Open("sqlite://:memory:", o); err == nil {
			t.Errorf("Open with %+v succeeded", o)
		}
	}
}

func TestOpenCreatesDirsAndAppliesPragmas(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	path := filepath.Join(dir, "d1.db")
	db := openURL(t, "sqlite://"+path, Options{Synchronous: "normal", BusyTimeout: 1500 * time.Millisecond})
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database file not created: %v", err)
	}
	if db.Path() != path {
		t.Errorf("Path() = %q, want %q", db.Path(), path)
	}
	// Check every connection of a busy pool, not just the first.
	ctx := context.Background()
	for i, conn := range holdConns(t, db, 3) {
		for pragma, want := range map[string]string{
			"journal_mode": "wal", "foreign_keys": "1", "synchronous": "1", "busy_timeout": "1500",
		} {
			var got string
			if err := conn.QueryRowContext(ctx, "PRAGMA "+pragma).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("conn %d: PRAGMA %s = %q, want %q", i, pragma, got, want)
			}
		}
	}

	def := openFile(t, Options{})
	var sync string
	if err := def.SQL().QueryRow("PRAGMA synchronous").Scan(&sync); err != nil {
		t.Fatal(err)
	}
	if sync != "2" {
		t.Errorf("default synchronous = %s, want 2 (FULL)", sync)
	}
}

func TestRelativeURL(t *testing.T) {
	t.Chdir(t.TempDir())
	openURL(t, "sqlite://./data/d1.db", Options{})
	if _, err := os.Stat(filepath.Join("data", "d1.db")); err != nil {
		t.Fatal(err)
	}
}

func TestMemoryAcrossPooledConnections(t *testing.T) {
	db := openURL(t, "sqlite://:memory:", Options{MaxOpenConns: 4})
	if db.Path() != "" {
		t.Errorf("Path() = %q for memory", db.Path())
	}
	batch(t, db, st("CREATE TABLE t (x INTEGER)"), st("INSERT INTO t VALUES (42)"))

	// Hold all four connections at once: each must see the same database.
	ctx := context.Background()
	for i, conn := range holdConns(t, db, 4) {
		var x int64
		if err := conn.QueryRowContext(ctx, "SELECT x FROM t").Scan(&x); err != nil {
			t.Fatalf("conn %d: %v", i, err)
		}
		if x != 42 {
			t.Fatalf("conn %d: x = %d", i, x)
		}
	}

	// A second :memory: database is private.
	other := openURL(t, "sqlite://:memory:", Options{})
	if _, err := other.Batch(ctx, []abi.Statement{st("SELECT x FROM t")}); err == nil || !strings.Contains(err.Error(), "no such table: t") {
		t.Fatalf("second memory database sees the first: %v", err)
	}
}

func TestMemorySurvivesIdlePool(t *testing.T) {
	db := openURL(t, "sqlite://:memory:", Options{})
	batch(t, db, st("CREATE TABLE t (x INTEGER)"))
	// Drop every pooled connection; the database must survive.
	db.SQL().SetMaxIdleConns(0)
	db.SQL().SetMaxIdleConns(4)
	if n := db.SQL().Stats().OpenConnections; n != 0 {
		t.Fatalf("%d connections still open", n)
	}
	batch(t, db, st("INSERT INTO t VALUES (1)"))
}

func TestCloseIdempotent(t *testing.T) {
	db, err := Open("sqlite://:memory:", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := db.Batch(context.Background(), []abi.Statement{st("SELECT 1")}); err == nil {
		t.Fatal("Batch after Close succeeded")
	}
}

func TestMessage(t *testing.T) {
	eachBackend(t, Options{}, func(t *testing.T, db *DB) {
		for _, tc := range []struct{ sql, sqlite, postgres string }{
			{"SELEC 1", `near "SELEC": syntax error`, `syntax error at or near "SELEC"`},
			{"SELECT * FROM nope", "no such table: nope", `relation "nope" does not exist`},
		} {
			want := "statement 0: " + pick(db, tc.sqlite, tc.postgres)
			_, err := db.Batch(context.Background(), []abi.Statement{st(tc.sql)})
			if err == nil || err.Error() != want {
				t.Errorf("%s: error %v, want %q", tc.sql, err, want)
			}
		}
	})
	if got := Message(errors.New("plain")); got != "plain" {
		t.Errorf("Message(plain) = %q", got)
	}
}
