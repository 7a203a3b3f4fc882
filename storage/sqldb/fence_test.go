package sqldb

import (
	"context"
	"errors"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/storage"
)

// TestBatchFenced: a batch of an older epoch than one the database has
// seen for the shard is refused whole (storage.ErrFenced, nothing
// applied); the same or a newer epoch writes; other shards have fences of
// their own; reads are not fenced. On SQLite and PostgreSQL alike.
func TestBatchFenced(t *testing.T) {
	for name, open := range map[string]func(testing.TB, Options) *DB{"sqlite": openFile, "postgres": openPG} {
		t.Run(name, func(t *testing.T) {
			db := open(t, Options{})
			ctx := context.Background()
			if _, err := db.Batch(ctx, []abi.Statement{{SQL: "CREATE TABLE t (v BIGINT)"}}); err != nil {
				t.Fatal(err)
			}
			insert := func(v int64) []abi.Statement {
				return []abi.Statement{{SQL: "INSERT INTO t (v) VALUES (?1)", Args: []any{v}}}
			}
			write := func(shard string, epoch, v int64) error {
				res, err := db.BatchFenced(ctx, "B", shard, epoch, insert(v))
				if err == nil && (len(res) != 1 || res[0].RowsAffected != 1) {
					t.Fatalf("epoch %d: results %+v", epoch, res)
				}
				return err
			}
			for _, step := range []struct {
				shard  string
				epoch  int64
				fenced bool
			}{{"s", 5, false}, {"s", 3, true}, {"s", 5, false}, {"s", 7, false}, {"s", 5, true}, {"other", 1, false}} {
				err := write(step.shard, step.epoch, step.epoch)
				if step.fenced != errors.Is(err, storage.ErrFenced) || (!step.fenced && err != nil) {
					t.Fatalf("shard %s epoch %d: err %v, want fenced=%v", step.shard, step.epoch, err, step.fenced)
				}
			}
			res, err := db.Batch(ctx, []abi.Statement{{SQL: "SELECT v FROM t ORDER BY v"}})
			if err != nil {
				t.Fatal(err)
			}
			var got []int64
			for _, r := range res[0].Rows {
				got = append(got, r[0].(int64))
			}
			if want := []int64{1, 5, 5, 7}; len(got) != len(want) || got[0] != 1 || got[1] != 5 || got[2] != 5 || got[3] != 7 {
				t.Fatalf("rows %v, want %v (a refused batch applied nothing)", got, want)
			}
			// Reads of a stale owner are not fenced; its empty batch (a
			// fence raise alone) is.
			if _, err := db.BatchFenced(ctx, "B", "s", 1, []abi.Statement{{SQL: "SELECT count(*) FROM t"}}); err != nil {
				t.Fatalf("stale read: %v", err)
			}
			if _, err := db.BatchFenced(ctx, "B", "s", 6, nil); !errors.Is(err, storage.ErrFenced) {
				t.Fatalf("stale raise: %v", err)
			}
			// A failing statement is named by its own index, not the fence's.
			_, err = db.BatchFenced(ctx, "B", "s", 9, []abi.Statement{insert(1)[0], {SQL: "INSERT INTO nope VALUES (1)"}})
			var se *StatementError
			if !errors.As(err, &se) || se.Index != 1 {
				t.Fatalf("bad statement: %v", err)
			}
		})
	}
}
