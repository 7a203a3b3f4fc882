package host_test

import (
	"context"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/hostinternal"
)

// dialectSQL is a SQL binding that says its dialect, as sqldb.DB does.
type dialectSQL struct{ dialect string }

func (dialectSQL) Batch(context.Context, []abi.Statement) ([]abi.Result, error) { return nil, nil }
func (d dialectSQL) Dialect() string                                            { return d.dialect }

// TestReservedSQLDialectVar: edgeshard.sql_dialect answers the dialect of
// the namespace's SQL database, and is unset without one.
func TestReservedSQLDialectVar(t *testing.T) {
	f := startNative(t, map[string]hostinternal.NativeShard{"PG": varShard{host.VarSQLDialect}, "NOSQL": varShard{host.VarSQLDialect}}, func(c *host.Config) {
		c.SQL = map[string]host.SQLDB{"DB": dialectSQL{"postgres"}}
		c.Vars = map[string]string{host.VarSQLDialect: "from the config, ignored"}
		c.Bindings = []host.Binding{{Name: "PG", Shards: 1, SQL: "DB"}, {Name: "NOSQL", Shards: 1}}
	})
	for binding, want := range map[string]string{"PG": "postgres", "NOSQL": "(unset)"} {
		resp, err := f.h.Fetch(context.Background(), binding, "k", &abi.Request{Method: "GET", Path: "/"})
		if err != nil {
			t.Fatal(err)
		}
		if string(resp.Body) != want {
			t.Errorf("%s: edgeshard.sql_dialect = %q, want %q", binding, resp.Body, want)
		}
	}
}
