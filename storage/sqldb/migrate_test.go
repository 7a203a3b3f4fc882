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
		"0001_init.sql":  {Data: []byte("CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT) STRICT;")},
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
		"gap":      {"0001_a.sql": {}, "0003_b.sql": {}},
		"repeat":   {"0001_a.sql": {}, "0001_b.sql": {}},
		"bad name": {"init.sql": {}},
		"zero":     {"0000_a.sql": {}},
	} {
		if _, err := LoadMigrations(files); err == nil {
			t.Errorf("%s: LoadMigrations accepted %v", name, files)
		}
	}
}

func TestMigrateIdempotent(t *testing.T) {
	db := openFile(t, Options{})
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
	db := openFile(t, Options{})
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
	db := openFile(t, Options{})
	ctx := context.Background()
	ms := []Migration{{Version: 1, Name: "bad", SQL: "CREATE TABLE a (x INTEGER); CREATE TABLE a (y INTEGER);"}}
	if _, err := db.Migrate(ctx, ms); err == nil || !strings.Contains(err.Error(), "version 1 (bad)") {
		t.Fatalf("a failing migration: %v", err)
	}
	res := batch(t, db, st("SELECT COUNT(*) FROM schema_migrations"), st("SELECT COUNT(*) FROM sqlite_schema WHERE name = 'a'"))
	if res[0].Rows[0][0] != int64(0) || res[1].Rows[0][0] != int64(0) {
		t.Fatalf("after a failed migration: %v rows recorded, table a exists %v", res[0].Rows, res[1].Rows)
	}
}

func TestMigrateConcurrent(t *testing.T) {
	db := openFile(t, Options{})
	// A second pool on the same file stands in for a second process.
	other, err := Open("sqlite://"+db.Path(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ctx := context.Background()
	ms := testMigrations(t)
	reps := make(chan MigrateReport, 2)
	errs := make(chan error, 2)
	for _, d := range []*DB{db, other} {
		go func() {
			rep, err := d.Migrate(ctx, ms)
			reps <- rep
			errs <- err
		}()
	}
	applied := 0
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
		applied += len((<-reps).Applied)
	}
	if applied != 2 {
		t.Fatalf("migrations applied %d times, want each of 2 once", applied)
	}
}
