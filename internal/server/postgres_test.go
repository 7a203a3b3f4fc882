package server

import (
	"context"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/edge/schema"
	"github.com/edgeshard/edgeshard/internal/pgtest"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/edgeshard/edgeshard/storage/sqldb"
)

// TestServerOnPostgres: a config whose SQL database is PostgreSQL starts
// (pool and statement timeout from the config, the edge schema migrated),
// serves a counter write through the counters plugin and the reconcile
// job, and stops.
func TestServerOnPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs plugins")
	}
	url := pgtest.DB(t)
	cfg := testConfig(t, t.TempDir(), func(s string) string {
		return regexp.MustCompile(`url = "sqlite://[^"]*"`).ReplaceAllString(s, `url = "`+url+`"
max_conns = 3
statement_timeout = "10s"`)
	})
	if !cfg.D1Databases[0].IsPostgres() {
		t.Fatal("the config still names SQLite")
	}
	s, err := New(cfg, Options{LookupEnv: noEnv, Engine: testutil.Engine(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Stop(context.Background())
	client := &http.Client{Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	for _, c := range []struct {
		method, url, token string
		status             int
	}{
		{"POST", "http://" + s.Addr() + "/posts/p1/views", "", 202},
		{"POST", "http://" + s.AdminAddr() + "/admin/jobs/reconcile-counters", testToken, 200},
	} {
		st, b := testutil.DoWith(t, client, c.method, c.url, "", "X-User-Id", "alice", "Authorization", testutil.Bearer(c.token))
		if st != c.status {
			t.Fatalf("%s %s: %d %s", c.method, c.url, st, b)
		}
	}
	db, err := sqldb.Open(url, sqldb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	res, err := db.Batch(context.Background(), []abi.Statement{{SQL: "SELECT COUNT(*) FROM schema_migrations"}})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Rows[0][0] != int64(schema.Version) {
		t.Fatalf("schema_migrations rows %v", res[0].Rows)
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}
