package pgtest_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgeshard/edgeshard/internal/pgtest"
)

func TestThrowawayServer(t *testing.T) {
	a, b := pgtest.DB(t), pgtest.DB(t)
	if a == b {
		t.Fatal("two tests share a database")
	}
	db, err := sql.Open("pgx", a)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v string
	if err := db.QueryRowContext(context.Background(), "SHOW server_version").Scan(&v); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("CREATE TABLE x (id INTEGER PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	t.Logf("PostgreSQL %s on port %d", v, pgtest.Shared(t).Port)
}

// TestStartAndClose: a server of one's own serves databases and leaves
// nothing behind when closed.
func TestStartAndClose(t *testing.T) {
	pgtest.Shared(t) // skips (or fails under CI) without PostgreSQL
	s, err := pgtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	url, err := s.CreateDB(context.Background(), "own")
	if err != nil {
		s.Close()
		t.Fatal(err)
	}
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow("SELECT 1").Err(); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(s.Log())); !os.IsNotExist(err) {
		t.Fatalf("the server's directory is still there: %v", err)
	}
}
