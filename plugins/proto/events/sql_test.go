//go:build !wasip1

package events

import (
	"context"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/plugins/internal/plugintest"
)

// TestInsertOnTheSchema: the insert stores absent fields as NULL and a
// repeated id once (a flush's retry, or the edge's inline write of an
// event the shard also holds).
func TestInsertOnTheSchema(t *testing.T) {
	db := plugintest.OpenDB(t)
	ctx := context.Background()
	evs := []Event{
		{ID: "e1", CapsuleID: "c1", Type: "run.start", TsMs: 1, ReceivedMs: 2, Payload: `{"a":1}`},
		{ID: "e2", RunID: "r1", Type: "run.end", TsMs: 3, ReceivedMs: 4},
	}
	var args []any
	for i := range evs {
		args = evs[i].AppendArgs(args)
	}
	for range 2 {
		if _, err := db.Batch(ctx, []abi.Statement{{SQL: InsertSQL(len(evs)), Args: args}}); err != nil {
			t.Fatal(err)
		}
	}
	rs, err := db.Batch(ctx, []abi.Statement{{SQL: "SELECT id, capsule_id IS NULL, run_id IS NULL, payload IS NULL FROM runtime_events ORDER BY id"}})
	if err != nil {
		t.Fatal(err)
	}
	rows := rs[0].Rows
	if len(rows) != 2 || rows[0][1] != int64(0) || rows[0][2] != int64(1) || rows[0][3] != int64(0) ||
		rows[1][1] != int64(1) || rows[1][2] != int64(0) || rows[1][3] != int64(1) {
		t.Fatalf("rows %v", rows)
	}
}
