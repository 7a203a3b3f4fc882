package shardsql_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/storage"
	"github.com/edgeshard/edgeshard/storage/shardsql"
	"github.com/edgeshard/edgeshard/storage/sqldb"
)

var ctx = context.Background()

func open(t *testing.T, path string, opts shardsql.Options) *shardsql.DB {
	t.Helper()
	d, err := shardsql.Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func exec(t *testing.T, d *shardsql.DB, q string, args ...any) []abi.Result {
	t.Helper()
	r, err := d.Batch(ctx, []abi.Statement{{SQL: q, Args: args}})
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return r
}

func count(t *testing.T, d *shardsql.DB, table string) int64 {
	t.Helper()
	r := exec(t, d, "SELECT COUNT(*) FROM "+table)
	return r[0].Rows[0][0].(int64)
}

func TestPathIsPerBindingAndShard(t *testing.T) {
	a := shardsql.Path("/data", "COUNTER", "7")
	if filepath.Dir(a) != filepath.Join("/data", "shardsql", "COUNTER") || !strings.HasSuffix(a, ".db") {
		t.Fatalf("Path = %s", a)
	}
	if a == shardsql.Path("/data", "COUNTER", "8") || a == shardsql.Path("/data", "OTHER", "7") {
		t.Fatal("two shards share a file")
	}
	if d := filepath.Dir(shardsql.Path("/data", "a/../b", "x")); d != filepath.Join("/data", "shardsql", "a%2F..%2Fb") {
		t.Fatalf("binding not escaped: %s", d)
	}
}

// An event's batches commit together; a failed batch undoes only itself;
// Rollback undoes the event.
func TestEventTransaction(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	d := open(t, path, shardsql.Options{})
	exec(t, d, "CREATE TABLE t (x INTEGER PRIMARY KEY)")
	exec(t, d, "INSERT INTO t VALUES (1)")
	_, err := d.Batch(ctx, []abi.Statement{{SQL: "INSERT INTO t VALUES (2)"}, {SQL: "INSERT INTO t VALUES (1)"}})
	var se *sqldb.StatementError
	if !errors.As(err, &se) || se.Index != 1 || !strings.Contains(err.Error(), "UNIQUE") {
		t.Fatalf("duplicate insert: %v", err)
	}
	if n := count(t, d, "t"); n != 1 {
		t.Fatalf("after the failed batch %d rows, want 1 (the batch is all or nothing)", n)
	}
	if seq, err := d.Commit(shardsql.EncodeRedo(storage.Batch{Puts: []abi.KV{{Key: "k", Value: []byte("v")}}})); err != nil || seq != 1 {
		t.Fatalf("Commit = %d, %v", seq, err)
	}
	exec(t, d, "INSERT INTO t VALUES (3)")
	d.Rollback()
	if n := count(t, d, "t"); n != 1 {
		t.Fatalf("after Rollback %d rows, want 1", n)
	}
	d.Rollback()
	d.Close()

	d2 := open(t, path, shardsql.Options{})
	if d2.Seq() != 1 {
		t.Fatalf("Seq after reopen = %d", d2.Seq())
	}
	seq, redo, err := d2.Redo(ctx)
	if err != nil || seq != 1 {
		t.Fatalf("Redo = %d, %v", seq, err)
	}
	b, err := shardsql.DecodeRedo(storage.ShardID{Namespace: "N", Name: "s"}, redo)
	if err != nil || len(b.Puts) != 1 || string(b.Puts[0].Value) != "v" {
		t.Fatalf("DecodeRedo = %+v, %v", b, err)
	}
}

func TestReservedNamesRefused(t *testing.T) {
	d := open(t, filepath.Join(t.TempDir(), "s.db"), shardsql.Options{})
	for _, q := range []string{"DELETE FROM _edgeshard_event", "drop table _EDGESHARD_EVENT"} {
		if _, err := d.Batch(ctx, []abi.Statement{{SQL: q}}); !errors.Is(err, shardsql.ErrReserved) {
			t.Errorf("%s: %v, want ErrReserved", q, err)
		}
	}
}

func TestSizeCap(t *testing.T) {
	d := open(t, filepath.Join(t.TempDir(), "s.db"), shardsql.Options{MaxBytes: 256 << 10})
	exec(t, d, "CREATE TABLE t (b BLOB)")
	if _, err := d.Commit(nil); err != nil {
		t.Fatal(err)
	}
	blob := bytes.Repeat([]byte{7}, 16<<10)
	var err error
	n := 0
	for ; n < 100; n++ {
		if _, err = d.Batch(ctx, []abi.Statement{{SQL: "INSERT INTO t VALUES (?)", Args: []any{blob}}}); err != nil {
			break
		}
		if _, err = d.Commit(nil); err != nil {
			break
		}
	}
	if !errors.Is(err, shardsql.ErrFull) || !strings.Contains(err.Error(), "size cap is 262144 bytes") {
		t.Fatalf("after %d inserts: %v, want ErrFull naming the cap", n, err)
	}
	if n < 5 {
		t.Fatalf("only %d inserts of 16 KiB fit under 256 KiB", n)
	}
	// The refused batch changed nothing; deleting makes room again.
	d.Rollback()
	if c := count(t, d, "t"); c != int64(n) {
		t.Fatalf("%d rows, want %d", c, n)
	}
	exec(t, d, "DELETE FROM t")
	exec(t, d, "INSERT INTO t VALUES (?)", blob)
	if _, err := d.Commit(nil); err != nil {
		t.Fatal(err)
	}
}

func TestRedoRoundTrip(t *testing.T) {
	id := storage.ShardID{Namespace: "N", Name: "s"}
	in := storage.Batch{Shard: id, DeleteAll: true, SetAlarm: 1234, Puts: []abi.KV{{Key: "a", Value: []byte{}}, {Key: "b", Value: []byte("x")}}, Deletes: []string{"c"}}
	out, err := shardsql.DecodeRedo(id, shardsql.EncodeRedo(in))
	if err != nil || !out.DeleteAll || out.SetAlarm != 1234 || out.DelAlarm || len(out.Puts) != 2 || string(out.Puts[1].Value) != "x" || len(out.Deletes) != 1 {
		t.Fatalf("round trip: %+v, %v", out, err)
	}
	raw := shardsql.EncodeRedo(in)
	for _, bad := range [][]byte{nil, {9}, raw[:len(raw)-1], append(raw, 0)} {
		if _, err := shardsql.DecodeRedo(id, bad); !errors.Is(err, shardsql.ErrBadRedo) {
			t.Errorf("DecodeRedo(%x) = %v, want ErrBadRedo", bad, err)
		}
	}
}

// Export carries the rows and not the redo record; Import replaces the
// file, refuses garbage and leaves the old file in place then.
func TestExportImport(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "a", "s.db")
	d := open(t, src, shardsql.Options{})
	exec(t, d, "CREATE TABLE t (x TEXT)")
	exec(t, d, "INSERT INTO t VALUES ('kept')")
	if _, err := d.Commit(shardsql.EncodeRedo(storage.Batch{Puts: []abi.KV{{Key: "k", Value: []byte("v")}}})); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := shardsql.Export(ctx, src, &buf); err != nil { // while open
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "b", "s.db")
	if err := shardsql.Import(ctx, dst, bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	e := open(t, dst, shardsql.Options{})
	r := exec(t, e, "SELECT x FROM t")
	if len(r[0].Rows) != 1 || r[0].Rows[0][0] != "kept" {
		t.Fatalf("imported rows: %v", r[0].Rows)
	}
	seq, redo, err := e.Redo(ctx)
	if err != nil || seq != 1 || redo != nil {
		t.Fatalf("imported record: seq %d redo %x err %v; want seq 1 and no redo", seq, redo, err)
	}
	e.Rollback()
	e.Close()

	if err := shardsql.Import(ctx, dst, strings.NewReader("not a database at all, just text that is long enough")); err == nil {
		t.Fatal("Import accepted garbage")
	}
	e2 := open(t, dst, shardsql.Options{})
	if n := count(t, e2, "t"); n != 1 {
		t.Fatalf("after a refused import %d rows, want the old 1", n)
	}
	entries, _ := os.ReadDir(filepath.Dir(dst))
	for _, en := range entries {
		if strings.HasPrefix(en.Name(), ".") {
			t.Errorf("temporary file left: %s", en.Name())
		}
	}
	if err := shardsql.Export(ctx, filepath.Join(dir, "none.db"), &buf); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Export of a missing database: %v", err)
	}
}

// An event whose SQL only read records nothing: its key-value writes need
// no repair.
func TestReadOnlyEventRecordsNothing(t *testing.T) {
	d := open(t, filepath.Join(t.TempDir(), "s.db"), shardsql.Options{})
	redo := shardsql.EncodeRedo(storage.Batch{Puts: []abi.KV{{Key: "k", Value: []byte("v")}}})
	exec(t, d, "CREATE TABLE t (x)")
	if seq, err := d.Commit(redo); err != nil || seq != 1 {
		t.Fatalf("a writing event: seq %d, %v", seq, err)
	}
	exec(t, d, "SELECT * FROM t")
	if seq, err := d.Commit(redo); err != nil || seq != 0 || d.Seq() != 1 {
		t.Fatalf("a reading event: seq %d (Seq %d), %v; want nothing recorded", seq, d.Seq(), err)
	}
	// Writes total_changes does not count still record.
	for i, q := range []string{"DROP TABLE t", "PRAGMA user_version = 7", "INSERT INTO u VALUES (1)"} {
		if i == 2 {
			exec(t, d, "CREATE TABLE u (x)")
			d.Commit(nil)
		}
		exec(t, d, q)
		if seq, err := d.Commit(redo); err != nil || seq == 0 {
			t.Fatalf("%s: seq %d, %v; want the event recorded", q, seq, err)
		}
	}
}
