package sqldb

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
)

func TestBatchAtomicity(t *testing.T) {
	db := openFile(t, Options{})
	batch(t, db, st("CREATE TABLE t (x INTEGER UNIQUE, y TEXT)"), st("INSERT INTO t VALUES (1, 'one')"))

	_, err := db.Batch(context.Background(), []abi.Statement{
		st("INSERT INTO t VALUES (?, ?)", int64(2), "two"),
		st("UPDATE t SET y = 'changed' WHERE x = 1"),
		st("INSERT INTO t VALUES (?, ?)", int64(1), "dup"),
		st("INSERT INTO t VALUES (3, 'never run')"),
	})
	if err == nil {
		t.Fatal("batch with a duplicate succeeded")
	}
	if want := "statement 2: UNIQUE constraint failed: t.x"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	var se *StatementError
	if !errors.As(err, &se) || se.Index != 2 {
		t.Errorf("error %#v is not a *StatementError for index 2", err)
	}
	if Code(err) != 2067 { // SQLITE_CONSTRAINT_UNIQUE
		t.Errorf("Code = %d, want 2067", Code(err))
	}

	res := batch(t, db, st("SELECT x, y FROM t ORDER BY x"))
	want := [][]any{{int64(1), "one"}}
	if !reflect.DeepEqual(res[0].Rows, want) {
		t.Fatalf("after failed batch rows = %v, want %v (first statements must roll back)", res[0].Rows, want)
	}
}

func TestBatchTypesRoundTrip(t *testing.T) {
	db := openFile(t, Options{})
	batch(t, db, st("CREATE TABLE v (k INTEGER PRIMARY KEY, i INTEGER, f REAL, s TEXT, b BLOB, a ANY, d DATETIME)"))
	in := [][]any{
		{int64(1), int64(-9007199254740993), 3.25, "héllo", []byte{0, 1, 2, 255}, nil, "2024-05-06 07:08:09"},
		{int64(2), nil, nil, "", []byte{}, int64(7), nil},
		{int64(3), int64(0), -0.5, "x'y\"z", []byte("text-like"), 1.5, "2024-05-06T07:08:09.5+02:00"},
	}
	var stmts []abi.Statement
	for _, r := range in {
		stmts = append(stmts, st("INSERT INTO v VALUES (?, ?, ?, ?, ?, ?, ?)", r...))
	}
	stmts = append(stmts, st("SELECT k, i, f, s, b, a, d, typeof(b) AS tb FROM v ORDER BY k"))
	res := batch(t, db, stmts...)
	got := res[len(res)-1]
	if want := []string{"k", "i", "f", "s", "b", "a", "d", "tb"}; !reflect.DeepEqual(got.Columns, want) {
		t.Errorf("columns %q, want %q", got.Columns, want)
	}
	want := [][]any{
		append(append([]any{}, in[0][:6]...), "2024-05-06 07:08:09", "blob"),
		append(append([]any{}, in[1][:6]...), nil, "blob"),
		append(append([]any{}, in[2][:6]...), "2024-05-06 07:08:09.5+02:00", "blob"),
	}
	if !reflect.DeepEqual(got.Rows, want) {
		t.Errorf("rows\n got %#v\nwant %#v", got.Rows, want)
	}
	// Go integer types and bool are accepted and stored as integers.
	res = batch(t, db, st("SELECT ?, ?, ?, ?", 5, uint32(6), true, float32(0.5)))
	if want := []any{int64(5), int64(6), int64(1), 0.5}; !reflect.DeepEqual(res[0].Rows[0], want) {
		t.Errorf("converted args %#v, want %#v", res[0].Rows[0], want)
	}
	// An empty result still has its columns and a non-nil row list.
	res = batch(t, db, st("SELECT k FROM v WHERE 0"))
	if !reflect.DeepEqual(res[0].Columns, []string{"k"}) || res[0].Rows == nil || len(res[0].Rows) != 0 {
		t.Errorf("empty select = %#v", res[0])
	}
}

func TestBatchExecResults(t *testing.T) {
	db := openFile(t, Options{})
	res := batch(t, db,
		st("CREATE TABLE t (id INTEGER PRIMARY KEY, x INTEGER)"),
		st("INSERT INTO t (x) VALUES (10), (20), (30)"),
		st("UPDATE t SET x = x + 1 WHERE x >= 20"),
		st("DELETE FROM t WHERE x = 10"),
	)
	if res[1].RowsAffected != 3 || res[1].LastInsertID != 3 {
		t.Errorf("insert result %+v, want 3 rows, last id 3", res[1])
	}
	if res[2].RowsAffected != 2 {
		t.Errorf("update affected %d, want 2", res[2].RowsAffected)
	}
	if res[3].RowsAffected != 1 {
		t.Errorf("delete affected %d, want 1", res[3].RowsAffected)
	}
	if res[1].Columns != nil || res[1].Rows != nil {
		t.Errorf("exec result has rows: %+v", res[1])
	}
}

func TestBatchReturning(t *testing.T) {
	db := openFile(t, Options{})
	res := batch(t, db,
		st("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, n INTEGER DEFAULT 0)"),
		st("INSERT INTO t (name) VALUES (?), (?) RETURNING id, name", "a", "b"),
		st("UPDATE t SET n = n + 5 /* RETURNING in a comment is ignored */ WHERE name = 'a'"),
		st("update t set n = n + 1 returning id, n"),
		st("WITH x(v) AS (VALUES ('c')) INSERT INTO t (name) SELECT v FROM x"),
		st("WITH x(v) AS (SELECT 1) SELECT v FROM x"),
		st("SELECT 'RETURNING' AS word"),
	)
	if want := [][]any{{int64(1), "a"}, {int64(2), "b"}}; !reflect.DeepEqual(res[1].Rows, want) {
		t.Errorf("INSERT RETURNING rows %v, want %v", res[1].Rows, want)
	}
	if res[1].RowsAffected != 2 || res[1].LastInsertID != 2 || !reflect.DeepEqual(res[1].Columns, []string{"id", "name"}) {
		t.Errorf("INSERT RETURNING result %+v", res[1])
	}
	if res[2].RowsAffected != 1 || res[2].Rows != nil {
		t.Errorf("UPDATE result %+v", res[2])
	}
	if want := [][]any{{int64(1), int64(6)}, {int64(2), int64(1)}}; !reflect.DeepEqual(res[3].Rows, want) || res[3].RowsAffected != 2 {
		t.Errorf("UPDATE RETURNING result %+v", res[3])
	}
	if res[4].RowsAffected != 1 || res[4].LastInsertID != 3 {
		t.Errorf("WITH ... INSERT result %+v, want 1 row, last id 3", res[4])
	}
	if res[5].RowsAffected != 0 || !reflect.DeepEqual(res[5].Rows, [][]any{{int64(1)}}) {
		t.Errorf("WITH ... SELECT result %+v", res[5])
	}
	if !reflect.DeepEqual(res[6].Rows, [][]any{{"RETURNING"}}) {
		t.Errorf("SELECT of a string result %+v", res[6])
	}
}

func TestBatchLimits(t *testing.T) {
	db := openFile(t, Options{})
	ctx := context.Background()

	many := make([]abi.Statement, abi.MaxSQLStatements+1)
	for i := range many {
		many[i] = st("SELECT 1")
	}
	_, err := db.Batch(ctx, many)
	if !errors.Is(err, ErrLimit) || err.Error() != "batch has 1001 statements, at most 1000 allowed" {
		t.Errorf("too many statements: %v", err)
	}
	if _, err := db.Batch(ctx, many[:abi.MaxSQLStatements]); err != nil {
		t.Errorf("exactly MaxSQLStatements: %v", err)
	}

	args := make([]any, abi.MaxSQLArgs+1)
	sql := "SELECT ?" + strings.Repeat(", ?", abi.MaxSQLArgs)
	_, err = db.Batch(ctx, []abi.Statement{st("SELECT 1"), {SQL: sql, Args: args}})
	if !errors.Is(err, ErrLimit) || err.Error() != "statement 1: 101 arguments, at most 100 allowed" {
		t.Errorf("too many args: %v", err)
	}
	if _, err := db.Batch(ctx, []abi.Statement{{SQL: "SELECT ?" + strings.Repeat(", ?", abi.MaxSQLArgs-1), Args: args[:abi.MaxSQLArgs]}}); err != nil {
		t.Errorf("exactly MaxSQLArgs: %v", err)
	}

	long := "SELECT 1 -- " + strings.Repeat("x", abi.MaxSQLText)
	if _, err := db.Batch(ctx, []abi.Statement{st(long)}); !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "statement 0: SQL text is") {
		t.Errorf("too long: %v", err)
	}

	_, err = db.Batch(ctx, []abi.Statement{st("SELECT ?", struct{}{})})
	if !errors.Is(err, ErrInvalidArg) || !strings.Contains(err.Error(), "statement 0: argument 1: unsupported type struct {}") {
		t.Errorf("bad arg: %v", err)
	}
	if _, err := db.Batch(ctx, []abi.Statement{st(" -- nothing\n ;")}); !errors.Is(err, ErrInvalidArg) {
		t.Errorf("empty SQL: %v", err)
	}
	if res, err := db.Batch(ctx, nil); err != nil || len(res) != 0 {
		t.Errorf("empty batch: %v %v", res, err)
	}
}

// TestReadBatchDoesNotWaitForWriter: a batch of SELECTs runs in a read
// transaction, so in WAL mode it does not queue behind a writer.
func TestReadBatchDoesNotWaitForWriter(t *testing.T) {
	db := openFile(t, Options{BusyTimeout: 200 * time.Millisecond})
	batch(t, db, st("CREATE TABLE t (x INTEGER)"), st("INSERT INTO t VALUES (1)"))

	ctx := context.Background()
	tx, err := db.SQL().BeginTx(ctx, nil) // BEGIN IMMEDIATE: holds the write lock
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec("INSERT INTO t VALUES (2)"); err != nil {
		t.Fatal(err)
	}

	res, err := db.Batch(ctx, []abi.Statement{st("SELECT count(*) FROM t")})
	if err != nil {
		t.Fatalf("read batch blocked by a writer: %v", err)
	}
	if res[0].Rows[0][0] != int64(1) {
		t.Errorf("read saw uncommitted data: %v", res[0].Rows)
	}
	// A write batch waits for the lock, and fails after the busy timeout.
	_, err = db.Batch(ctx, []abi.Statement{st("INSERT INTO t VALUES (3)")})
	if err == nil || !strings.Contains(err.Error(), "database is locked") {
		t.Errorf("write batch against a held lock: %v", err)
	}
}

// TestConcurrentWriters runs read-then-write batches from 16 goroutines.
// With deferred transactions two of them would deadlock upgrading their read
// locks and one would fail with SQLITE_BUSY at once; BEGIN IMMEDIATE queues
// them instead.
func TestConcurrentWriters(t *testing.T) {
	db := openFile(t, Options{MaxOpenConns: 16})
	batch(t, db, st("CREATE TABLE c (k TEXT PRIMARY KEY, n INTEGER NOT NULL)"), st("INSERT INTO c VALUES ('hits', 0)"))

	const workers, rounds = 16, 25
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				_, err := db.Batch(ctx, []abi.Statement{
					st("SELECT n FROM c WHERE k = 'hits'"),
					st("UPDATE c SET n = n + 1 WHERE k = 'hits'"),
					st("INSERT INTO c VALUES (?, ?)", fmt.Sprintf("w%d-r%d", w, r), int64(r)),
				})
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	res := batch(t, db, st("SELECT n FROM c WHERE k = 'hits'"), st("SELECT count(*) FROM c"))
	if got := res[0].Rows[0][0]; got != int64(workers*rounds) {
		t.Errorf("hits = %v, want %d", got, workers*rounds)
	}
	if got := res[1].Rows[0][0]; got != int64(workers*rounds+1) {
		t.Errorf("rows = %v, want %d", got, workers*rounds+1)
	}
}

func TestBatchCanceledContext(t *testing.T) {
	db := openFile(t, Options{})
	batch(t, db, st("CREATE TABLE t (x INTEGER)"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := db.Batch(ctx, []abi.Statement{st("INSERT INTO t VALUES (1)")}); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled batch: %v", err)
	}
	if res := batch(t, db, st("SELECT count(*) FROM t")); res[0].Rows[0][0] != int64(0) {
		t.Errorf("canceled batch wrote: %v", res[0].Rows)
	}
}

func TestScanSQL(t *testing.T) {
	for _, tc := range []struct {
		sql   string
		first string
		ret   bool
		kind  stmtKind
	}{
		{"select 1", "SELECT", false, kindRead},
		{"  -- c\n /* x */ VALUES (1)", "VALUES", false, kindRead},
		{"EXPLAIN QUERY PLAN INSERT INTO t VALUES (1) RETURNING x", "EXPLAIN", true, kindRead},
		{"PRAGMA table_info(t)", "PRAGMA", false, kindPragma},
		{"WITH a AS (SELECT 1) SELECT * FROM a", "WITH", false, kindWriteRows},
		{"INSERT INTO t VALUES ('returning')", "INSERT", false, kindExec},
		{`INSERT INTO "returning" VALUES (1)`, "INSERT", false, kindExec},
		{"INSERT INTO t VALUES ('it''s') RETURNING *", "INSERT", true, kindWriteRows},
		{"delete from t returning*", "DELETE", true, kindWriteRows},
		{"UPDATE t SET [returning] = 1", "UPDATE", false, kindExec},
		{"CREATE TABLE t (x)", "CREATE", false, kindExec},
		{"", "", false, kindExec},
	} {
		first, ret := scanSQL(tc.sql)
		if first != tc.first || ret != tc.ret {
			t.Errorf("scanSQL(%q) = %q, %v; want %q, %v", tc.sql, first, ret, tc.first, tc.ret)
		}
		if first != "" {
			if k := classify(first, ret); k != tc.kind {
				t.Errorf("classify(%q) = %d, want %d", tc.sql, k, tc.kind)
			}
		}
	}
}

// BenchmarkBatchInsert measures a flush of buffered events: one batch of
// 100 upserts, one transaction (synchronous=FULL, WAL).
func BenchmarkBatchInsert(b *testing.B) {
	db := openFile(b, Options{})
	batch(b, db, st("CREATE TABLE events (id TEXT PRIMARY KEY, capsule_id TEXT, run_id TEXT, type TEXT NOT NULL, ts INTEGER NOT NULL, received_at INTEGER NOT NULL, payload TEXT) STRICT"))
	const perBatch = 100
	stmts := make([]abi.Statement, perBatch)
	payload := `{"status":"ok","durationMs":12}`
	ctx := context.Background()
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		for i := range stmts {
			n++
			stmts[i] = abi.Statement{
				SQL: "INSERT INTO events (id, capsule_id, run_id, type, ts, received_at, payload) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING",
				Args: []any{fmt.Sprintf("evt-%09d", n), "capsule-1", "run-1", "run.finished",
					int64(1_700_000_000_000 + n), int64(1_700_000_000_000 + n), payload},
			}
		}
		if _, err := db.Batch(ctx, stmts); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/row")
}
