package pgtest_test

import (
	"context"
	"database/sql"
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
