//go:build !wasip1

package ratelimit

import (
	"context"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/plugins/internal/plugintest"
)

// TestStatementsOnTheSchema keeps one bucket in proxy_rate_limits through
// the statements: store, read back as the state Decide left, reset on a
// new window length, sweep what no decision reads.
func TestStatementsOnTheSchema(t *testing.T) {
	db := plugintest.OpenDB(t)
	ctx := context.Background()
	exec := func(q string, args ...any) [][]any {
		rs, err := db.Batch(ctx, []abi.Statement{{SQL: q, Args: args}})
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return rs[0].Rows
	}
	// call decides one bucket at now the way the edge's SQL fallback does.
	call := func(key string, limit, w, now int64) *Bucket {
		bs := []Bucket{{Line: Line{Key: key, Limit: limit, WindowMs: w}}}
		var rows []Row
		for _, r := range exec(SQLRead, key) {
			rows = append(rows, Row{Start: r[0].(int64), WindowMs: r[1].(int64), Count: r[2].(int64)})
		}
		bs[0].Stored, bs[0].Exists = StateFromRows(rows)
		if Decide(bs, now) {
			if bs[0].Fresh && bs[0].Exists {
				exec(SQLReset, key)
			}
			exec(SQLStore, bs[0].StoreArgs()...)
		}
		return &bs[0]
	}
	for i := range 3 {
		if b := call("user:a", 3, 1000, 10_100+int64(i)); !b.Allowed || b.State.Cur != int64(i+1) {
			t.Fatalf("call %d: %+v", i, b)
		}
	}
	if b := call("user:a", 3, 1000, 10_200); b.Allowed {
		t.Fatalf("4th call allowed: %+v", b)
	}
	// Next window: the 3 weigh 3·(1000−500)/1000 = 1.5, so one more fits.
	if b := call("user:a", 3, 1000, 11_500); !b.Allowed || b.State.Prev != 3 || b.State.Cur != 1 {
		t.Fatalf("next window: %+v", b)
	}
	// Another window length: the bucket starts afresh, its old rows go.
	if b := call("user:a", 3, 2000, 11_600); !b.Allowed || !b.Fresh || b.State.Cur != 1 || b.State.Prev != 0 {
		t.Fatalf("new window length: %+v", b)
	}
	if rows := exec("SELECT window_start, window_ms, count FROM proxy_rate_limits"); len(rows) != 1 || rows[0][0] != int64(10_000) || rows[0][1] != int64(2000) {
		t.Fatalf("rows after the reset %v", rows)
	}
	call("ip:b", 5, 1000, 11_600)
	exec(SQLSweep, SweepArgs(13_000)...) // ip:b's window [11000, 12000) ended over a window ago
	if rows := exec("SELECT bucket FROM proxy_rate_limits ORDER BY bucket"); len(rows) != 1 || rows[0][0] != "user:a" {
		t.Fatalf("rows after the sweep %v", rows)
	}
}
