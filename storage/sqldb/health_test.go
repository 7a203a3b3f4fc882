package sqldb

import (
	"context"
	"errors"
	"github.com/edgeshard/edgeshard/internal/pgtest"
	"os"
	"testing"
	"time"
)

func TestWritable(t *testing.T) {
	ctx := context.Background()
	db := openFile(t, Options{})
	if err := db.Writable(ctx); err != nil {
		t.Fatalf("a fresh database: %v", err)
	}
	batch(t, db, st("SELECT name FROM sqlite_schema WHERE name = 'edgeshard_write_probe'"))
	if res := batch(t, db, st("SELECT COUNT(*) FROM sqlite_schema WHERE name = 'edgeshard_write_probe'")); res[0].Rows[0][0] != int64(0) {
		t.Fatal("the probe left its table behind")
	}

	// Locked by another writer.
	other, err := Open("sqlite://"+db.Path(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	conn, _ := other.SQL().Conn(ctx)
	if _, err := conn.ExecContext(ctx, "BEGIN EXCLUSIVE"); err != nil {
		t.Fatal(err)
	}
	lctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err = db.Writable(lctx)
	cancel()
	if !errors.Is(err, ErrNotWritable) {
		t.Fatalf("locked: %v", err)
	}
	conn.ExecContext(ctx, "ROLLBACK")
	conn.Close()
	other.Close()

	// Read-only (as root the file mode does not stop writes; query_only does).
	ro, err := Open("sqlite://"+db.Path(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	ro.SQL().SetMaxOpenConns(1)
	if _, err := ro.SQL().ExecContext(ctx, "PRAGMA query_only = ON"); err != nil {
		t.Fatal(err)
	}
	if err := ro.Writable(ctx); !errors.Is(err, ErrNotWritable) {
		t.Fatalf("read-only: %v", err)
	}
	ro.Close()

	// Deleted under the running pool.
	for _, suffix := range []string{"", "-wal", "-shm"} {
		os.Remove(db.Path() + suffix)
	}
	if err := db.Writable(ctx); !errors.Is(err, ErrNotWritable) {
		t.Fatalf("deleted: %v", err)
	}
}

func TestWritablePostgres(t *testing.T) {
	db := openURL(t, pgtest.DB(t), Options{})
	ctx := context.Background()
	if err := db.Writable(ctx); err != nil {
		t.Fatalf("a fresh database: %v", err)
	}
	if _, err := db.SQL().ExecContext(ctx, "ALTER DATABASE "+currentDB(t, db)+" SET default_transaction_read_only = on"); err != nil {
		t.Fatal(err)
	}
	db.SQL().SetMaxIdleConns(0) // new connections read the setting
	if err := db.Writable(ctx); !errors.Is(err, ErrNotWritable) {
		t.Fatalf("read-only: %v", err)
	}
}

func currentDB(t *testing.T, db *DB) string {
	var name string
	if err := db.SQL().QueryRow("SELECT current_database()").Scan(&name); err != nil {
		t.Fatal(err)
	}
	return name
}
