package sdk

import (
	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/abi/sdk/internal/guestmem"
)

// Statement is one SQL statement with bound parameters (nil, int64, int,
// bool, float64, string or []byte).
type Statement = abi.Statement

// Result is one statement's outcome: rows for queries, counts for writes.
type Result = abi.Result

// DB is the SQL ("D1") binding granted to the shard's namespace: a
// database the binding's shards share, or — when the binding's sql is
// "shard" — the shard's own SQLite database (ABI.md, "A database per
// shard"). The calls are the same; on a shard's own database every call
// of one event runs in one transaction that commits with the event's
// storage writes, a statement past the size cap fails with
// abi.ErrnoQuota, and names starting "_edgeshard_" are reserved.
type DB struct{}

// SQL returns the SQL binding.
func SQL() DB { return DB{} }

// Dialect returns the dialect of the bound database, "sqlite" or
// "postgres" (the reserved var "edgeshard.sql_dialect"), or "" without a
// SQL binding. Statements written in SQL both dialects accept, with ? or
// ?NNN placeholders, need not ask (ABI.md, "SQL dialects").
func (DB) Dialect() string {
	v, _ := Var("edgeshard.sql_dialect")
	return v
}

// Exec runs one statement and returns its counts.
func (db DB) Exec(sql string, args ...any) (Result, error) {
	rs, err := db.Batch([]Statement{{SQL: sql, Args: args}})
	if err != nil {
		return Result{}, err
	}
	return rs[0], nil
}

// Query runs one statement and returns its rows.
func (db DB) Query(sql string, args ...any) (Result, error) {
	return db.Exec(sql, args...)
}

// Batch runs the statements in one transaction: all apply or none do.
func (DB) Batch(stmts []Statement) ([]Result, error) {
	enc, err := abi.AppendStatements(st.enc[:0], stmts)
	if err != nil {
		return nil, &HostError{Errno: abi.ErrnoInvalid, Op: "sql.batch", Message: err.Error()}
	}
	st.enc = enc
	p, c := scratchArgs()
	b, err := result("sql.batch", hostSQLExec(guestmem.Bytes(st.enc), uint32(len(st.enc)), p, c))
	if err != nil {
		return nil, err
	}
	rs, err := abi.DecodeResults(b)
	if err != nil {
		return nil, &HostError{Errno: abi.ErrnoInternal, Op: "sql.batch", Message: err.Error()}
	}
	if len(rs) != len(stmts) {
		return nil, &HostError{Errno: abi.ErrnoInternal, Op: "sql.batch", Message: "result count mismatch"}
	}
	return rs, nil
}
