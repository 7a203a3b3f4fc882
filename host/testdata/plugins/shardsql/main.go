// Command shardsql is a ledger written against the plain SQL binding: each
// entry is a row in SQL and, in the same event, a key and a running
// balance in key-value storage. On a binding with sql = "shard" every
// shard keeps its own ledger; the host's tests check that the two stores
// always agree (balance = SUM(amount)), across restarts, evictions and
// crashes between the two commits.
//
// Routes:
//
//	POST /entry?id=X&amount=N[&memo=BYTES][&panic=1][&unconfirmed=1]
//	     add an entry (409 if id exists, 507 when the database is full;
//	     panic=1 traps after writing both; unconfirmed=1 writes storage
//	     with allowUnconfirmed)
//	GET  /state                                       {"balance","sum","rows","keys","dialect"}
//	POST /sql                                         run the body as one statement
package main

import (
	"errors"
	"strconv"
	"strings"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/abi/sdk"
)

func main() {}

func init() {
	sdk.Serve(sdk.Handlers{Fetch: router.Fetch})
}

var router = sdk.Router{Routes: []sdk.Route{
	{Method: "POST", Path: "/entry", Handle: entry},
	{Method: "GET", Path: "/state", Handle: state},
	{Method: "POST", Path: "/sql", Handle: rawSQL},
}}

const schema = "CREATE TABLE IF NOT EXISTS entries (id TEXT PRIMARY KEY, amount INTEGER NOT NULL, memo BLOB)"

func entry(req *sdk.Request) *sdk.Response {
	id := sdk.Query(req, "id")
	amount, err := strconv.ParseInt(sdk.Query(req, "amount"), 10, 64)
	if id == "" || err != nil {
		return sdk.ErrorJSON(400, "bad_entry", "want ?id=X&amount=N")
	}
	memo := make([]byte, atoi(sdk.Query(req, "memo")))
	_, err = sdk.SQL().Batch([]sdk.Statement{
		{SQL: schema},
		{SQL: "INSERT INTO entries (id, amount, memo) VALUES (?, ?, ?)", Args: []any{id, amount, memo}},
	})
	if err != nil {
		return sqlError(err)
	}
	st := sdk.Storage()
	bal, err := balance()
	if err != nil {
		return sdk.ErrorJSON(500, "storage", err.Error())
	}
	put := st.PutMulti
	if sdk.Query(req, "unconfirmed") == "1" {
		put = st.PutMultiUnconfirmed
	}
	if err := put([]abi.KV{
		{Key: "balance", Value: strconv.AppendInt(nil, bal+amount, 10)},
		{Key: "entry:" + id, Value: strconv.AppendInt(nil, amount, 10)},
	}); err != nil {
		return sdk.ErrorJSON(500, "storage", err.Error())
	}
	if sdk.Query(req, "panic") == "1" {
		panic("trap after writing SQL and storage")
	}
	return sdk.JSON(200, map[string]any{"balance": bal + amount})
}

func sqlError(err error) *sdk.Response {
	var he *sdk.HostError
	switch {
	case errors.As(err, &he) && he.Errno == abi.ErrnoQuota:
		return sdk.ErrorJSON(507, "ledger_full", err.Error())
	case strings.Contains(err.Error(), "UNIQUE"):
		return sdk.ErrorJSON(409, "duplicate", err.Error())
	}
	return sdk.ErrorJSON(500, "sql", err.Error())
}

func balance() (int64, error) {
	v, ok, err := sdk.Storage().Get("balance")
	if err != nil || !ok {
		return 0, err
	}
	return strconv.ParseInt(string(v), 10, 64)
}

func state(*sdk.Request) *sdk.Response {
	rs, err := sdk.SQL().Batch([]sdk.Statement{
		{SQL: schema},
		{SQL: "SELECT COALESCE(SUM(amount), 0), COUNT(*) FROM entries"},
	})
	if err != nil {
		return sqlError(err)
	}
	bal, err := balance()
	if err != nil {
		return sdk.ErrorJSON(500, "storage", err.Error())
	}
	keys, err := sdk.Storage().List(sdk.ListOptions{Prefix: "entry:"})
	if err != nil {
		return sdk.ErrorJSON(500, "storage", err.Error())
	}
	row := rs[1].Rows[0]
	return sdk.JSON(200, map[string]any{
		"balance": bal, "sum": row[0], "rows": row[1], "keys": len(keys),
		"dialect": sdk.SQL().Dialect(),
	})
}

func rawSQL(req *sdk.Request) *sdk.Response {
	if _, err := sdk.SQL().Exec(string(req.Body)); err != nil {
		var he *sdk.HostError
		if errors.As(err, &he) {
			return sdk.ErrorJSON(400, he.Errno.Error(), err.Error())
		}
		return sdk.ErrorJSON(500, "sql", err.Error())
	}
	return sdk.Text(200, "ok")
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return max(0, min(n, 1<<20))
}
