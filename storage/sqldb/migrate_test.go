package sqldb

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

// testMigrations are two small migrations of a made-up application.
func testMigrations(t *testing.T) []Migration {
	t.Helper()
	ms, err := LoadMigrations(fstest.MapFS{
		"0001_init.sql":  {Data: []byte("CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT);")},
		"0002_stars.sql": {Data: []byte("ALTER TABLE notes ADD COLUMN stars INTEGER NOT NULL DEFAULT 0;")},
		"README.md":      {Data: []byte("not a migration")},
	})
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

func TestLoadMigrations(t *testing.T) {
	ms := testMigrations(t)
	if len(ms) != 2 || ms[0].Version != 1 || ms[0].Name != "init" || ms[1].Name != "stars" || ms[1].SQL == "" {
		t.Fatalf("migrations %+v", ms)
	}
	for name, files := range map[string]fstest.MapFS{
		"gap":              {"0001_a.sql": {}, "0003_b.sql": {}},
		"repeat":           {"0001_a.sql": {}, "0001_b.sql": {}},
		"bad name":         {"init.sql": {}},
		"zero":             {"0000_a.sql": {}},
		"gap in a dialect": {"postgres/0002_b.sql": {}},
		"root and dialect": {"0001_a.sql": {}, "sqlite/0001_a.sql": {}},
		"dialects differ":  {"sqlite/0001_a.sql": {}, "postgres/0001_a.sql": {}, "postgres/0002_b.sql": {}},
		"names differ":     {"sqlite/0001_a.sql": {}, "postgres/0001_b.sql": {}},
	} {
		if _, err := LoadMigrations(files); err == nil {
			t.Errorf("%s: LoadMigrations accepted %v", name, files)
		}
	}
}

func TestLoadMigrationsPerDialect(t *testing.T) {
	ms, err := LoadMigrations(fstest.MapFS{
		"sqlite/0001_init.sql":   {Data: []byte("CREATE TABLE n (id TEXT PRIMARY KEY) STRICT;")},
		"postgres/0001_init.sql": {Data: []byte("CREATE TABLE n (id TEXT PRIMARY KEY);")},
		"sqlite/0002_more.sql":   {Data: []byte("ALTER TABLE n ADD COLUMN c INTEGER;")},
		"postgres/0002_more.sql": {Data: []byte("ALTER TABLE n ADD COLUMN c BIGINT;")},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{DialectSQLite, DialectPostgres} {
		own, err := ForDialect(ms, d)
		if err != nil || len(own) != 2 || own[0].Dialect != d || own[1].Version != 2 || own[1].Name != "more" {
			t.Errorf("%s: %+v, %v", d, own, err)
		}
	}
	if _, err := ForDialect(ms[:2], DialectPostgres); err == nil {
		t.Error("ForDialect found postgres migrations among sqlite ones")
	}
	// Root migrations serve every dialect.
	root := testMigrations(t)
	if own, err := ForDialect(root, DialectPostgres); err != nil || len(own) != 2 {
		t.Errorf("root migrations for postgres: %+v, %v", own, err)
	}
}

func TestMigrateIdempotent(t *testing.T) {
	eachBackend(t, Options{}, testMigrateIdempotent)
}

func testMigrateIdempotent(t *testing.T, db *DB) {
	ctx := context.Background()
	before := time.Now().UnixMilli()
	ms := testMigrations(t)

	rep, err := db.Migrate(ctx, ms[:1])
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(rep.Applied, []int{1}) || rep.Version != 1 {
		t.Fatalf("first migrate report %+v", rep)
	}
	rep, err = db.Migrate(ctx, ms)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(rep.Applied, []int{2}) || rep.Version != 2 {
		t.Fatalf("second migrate report %+v, want version 2 applied", rep)
	}
	rep, err = db.Migrate(ctx, ms)
	if err != nil || len(rep.Applied) != 0 || rep.Version != 2 {
		t.Fatalf("third migrate report %+v, %v: want nothing applied", rep, err)
	}
	res := batch(t, db, st("SELECT version, name, applied_at FROM schema_migrations ORDER BY version"))
	rows := res[0].Rows
	if len(rows) != 2 || rows[0][0] != int64(1) || rows[0][1] != "init" || rows[1][1] != "stars" || rows[0][2].(int64) < before {
		t.Fatalf("schema_migrations rows %v", rows)
	}
	batch(t, db, st("INSERT INTO notes (id, body, stars) VALUES ('n1', 'hi', 3)"))
}

func TestMigrateRefusesNewerSchema(t *testing.T) {
	eachBackend(t, Options{}, testMigrateRefusesNewerSchema)
}

func testMigrateRefusesNewerSchema(t *testing.T, db *DB) {
	ctx := context.Background()
	ms := testMigrations(t)
	if _, err := db.Migrate(ctx, ms); err != nil {
		t.Fatal(err)
	}
	_, err := db.Migrate(ctx, ms[:1])
	if !errors.Is(err, ErrSchemaTooNew) || !strings.Contains(err.Error(), "database is at version 2, this binary knows 1") {
		t.Fatalf("Migrate on a newer schema: %v", err)
	}
}

func TestMigrateFailureRollsBack(t *testing.T) {
	eachBackend(t, Options{}, testMigrateFailureRollsBack)
}

func testMigrateFailureRollsBack(t *testing.T, db *DB) {
	ctx := context.Background()
	ms := []Migration{{Version: 1, Name: "bad", SQL: "CREATE TABLE a (x INTEGER); CREATE TABLE a (y INTEGER);"}}
	if _, err := db.Migrate(ctx, ms); err == nil || !strings.Contains(err.Error(), "version 1 (bad)") {
		t.Fatalf("a failing migration: %v", err)
	}
	exists := pick(db, "SELECT COUNT(*) FROM sqlite_schema WHERE name = 'a'", "SELECT COUNT(*) FROM pg_tables WHERE tablename = 'a'")
	res := batch(t, db, st("SELECT COUNT(*) FROM schema_migrations"), st(exists))
	if res[0].Rows[0][0] != int64(0) || res[1].Rows[0][0] != int64(0) {
		t.Fatalf("after a failed migration: %v rows recorded, table a exists %v", res[0].Rows, res[1].Rows)
	}
}

// TestMigrateConcurrent starts ten migrators at once, each with its own
// pool (ten hosts starting together): every version is applied once.
func TestMigrateConcurrent(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			first := b.open(t, Options{})
			url := "sqlite://" + first.Path()
			if first.Dialect() == DialectPostgres {
				url = first.url
			}
			const hosts = 10
			dbs := []*DB{first}
			for range hosts - 1 {
				d := openURL(t, url, Options{MaxOpenConns: 2})
				dbs = append(dbs, d)
			}
			ctx := context.Background()
			ms := testMigrations(t)
			// Version 1 sleeps a little on PostgreSQL, so the others queue.
			if first.Dialect() == DialectPostgres {
				ms[0].SQL += " SELECT pg_sleep(0.1);"
			}
			reps := make(chan MigrateReport, hosts)
			errs := make(chan error, hosts)
			start := make(chan struct{})
			for _, d := range dbs {
				go func() {
					<-start
					rep, err := d.Migrate(ctx, ms)
					reps <- rep
					errs <- err
				}()
			}
			close(start)
			applied := map[int]int{}
			for range hosts {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
				rep := <-reps
				for _, v := range rep.Applied {
					applied[v]++
				}
				if rep.Version != 2 {
					t.Errorf("a migrator ended at version %d", rep.Version)
				}
			}
			if !reflect.DeepEqual(applied, map[int]int{1: 1, 2: 1}) {
				t.Fatalf("applied %v, want each of 2 versions once", applied)
			}
			res := batch(t, first, st("SELECT COUNT(*) FROM schema_migrations"))
			if res[0].Rows[0][0] != int64(2) {
				t.Fatalf("schema_migrations has %v rows", res[0].Rows)
			}
		})
	}
}
