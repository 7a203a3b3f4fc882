package host_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/harness"
	"github.com/edgeshard/edgeshard/internal/hostinternal"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/edgeshard/edgeshard/storage/shardsql"
)

// ledgerConfig is a host on a temporary directory with the shardsql test
// plugin as LEDGER, one object per name, each with its own database.
func ledgerConfig(t *testing.T, mutate func(*host.Config)) host.Config {
	t.Helper()
	cfg := testutil.HostConfig(t, harness.Bindings(host.Binding{
		Name: "LEDGER", Module: testutil.Plugin(t, "host/testdata/plugins/shardsql"), SQL: host.ShardSQL,
	}))
	if mutate != nil {
		mutate(&cfg)
	}
	return cfg
}

type ledgerState struct {
	Balance int64  `json:"balance"`
	Sum     int64  `json:"sum"`
	Rows    int64  `json:"rows"`
	Keys    int    `json:"keys"`
	Dialect string `json:"dialect"`
}

func ledger(t *testing.T, h *host.Host, name, method, path string) (*abi.Response, error) {
	t.Helper()
	return h.Fetch(context.Background(), "LEDGER", name, &abi.Request{Method: method, Path: path})
}

func addEntry(t *testing.T, h *host.Host, name, id string, amount int) {
	t.Helper()
	resp, err := ledger(t, h, name, "POST", fmt.Sprintf("/entry?id=%s&amount=%d", id, amount))
	if err != nil || resp.Status != 200 {
		t.Fatalf("entry %s/%s: %v %+v", name, id, err, resp)
	}
}

// ledgerOf returns a ledger's state and checks that its two stores agree.
func ledgerOf(t *testing.T, h *host.Host, name string) ledgerState {
	t.Helper()
	resp, err := ledger(t, h, name, "GET", "/state")
	if err != nil || resp.Status != 200 {
		t.Fatalf("state of %s: %v %+v", name, err, resp)
	}
	var s ledgerState
	if err := json.Unmarshal(resp.Body, &s); err != nil {
		t.Fatal(err)
	}
	if s.Balance != s.Sum || int64(s.Keys) != s.Rows {
		t.Fatalf("ledger %s: key-value storage and SQL disagree: %+v", name, s)
	}
	return s
}

// TestShardSQLIsolatedAndDurable: each shard has its own database file
// under data_dir/shardsql; one shard never sees another's rows; the rows
// outlive eviction and a restart of the host. No shared database exists.
func TestShardSQLIsolatedAndDurable(t *testing.T) {
	cfg := ledgerConfig(t, func(c *host.Config) { c.IdleTimeout = 150 * time.Millisecond })
	if len(cfg.SQL) != 0 {
		t.Fatalf("the host has shared databases %v; a database per shard needs none", cfg.SQL)
	}
	f := start(t, cfg)
	addEntry(t, f.h, "alice", "a1", 10)
	addEntry(t, f.h, "alice", "a2", 5)
	addEntry(t, f.h, "bob", "b1", 7)
	if resp, _ := ledger(t, f.h, "bob", "POST", "/entry?id=a1&amount=1"); resp == nil || resp.Status != 200 {
		t.Fatalf("bob's a1 collided with alice's: %+v", resp) // ids are per database
	}
	a, b := ledgerOf(t, f.h, "alice"), ledgerOf(t, f.h, "bob")
	if a.Rows != 2 || a.Sum != 15 || b.Rows != 2 || b.Sum != 8 || a.Dialect != "sqlite" {
		t.Fatalf("alice %+v, bob %+v", a, b)
	}
	for _, n := range []string{"alice", "bob"} {
		if _, err := os.Stat(shardsql.Path(cfg.DataDir, "LEDGER", n)); err != nil {
			t.Fatalf("database of %s: %v", n, err)
		}
	}

	ns, _ := f.h.Namespace("LEDGER")
	waitFor(t, func() bool { return len(ns.Stats()) == 0 }, "idle shards to be evicted")
	if a := ledgerOf(t, f.h, "alice"); a.Rows != 2 || a.Sum != 15 {
		t.Fatalf("alice after eviction: %+v", a)
	}
	addEntry(t, f.h, "alice", "a3", 1)

	f.h.Close(context.Background())
	f2 := start(t, cfg)
	if a, b := ledgerOf(t, f2.h, "alice"), ledgerOf(t, f2.h, "bob"); a.Rows != 3 || a.Sum != 16 || b.Rows != 2 || b.Sum != 8 {
		t.Fatalf("after restart alice %+v, bob %+v", a, b)
	}
}

// TestShardSQLSizeCap: past limits.shard_sql_bytes a statement answers
// -ErrnoQuota naming the cap, the event changes nothing, and the host logs
// and counts the limit.
func TestShardSQLSizeCap(t *testing.T) {
	cfg := ledgerConfig(t, func(c *host.Config) {
		c.Bindings[0].Limits = &host.Limits{ShardSQLBytes: 96 << 10}
	})
	f := start(t, cfg)
	var resp *abi.Response
	n := 0
	for ; n < 40; n++ {
		var err error
		resp, err = ledger(t, f.h, "big", "POST", fmt.Sprintf("/entry?id=e%d&amount=1&memo=8192", n))
		if err != nil {
			t.Fatal(err)
		}
		if resp.Status != 200 {
			break
		}
	}
	if resp.Status != 507 || !strings.Contains(string(resp.Body), "size cap is 98304 bytes") || !strings.Contains(string(resp.Body), "quota") {
		t.Fatalf("after %d entries: %d %s; want 507 naming the cap and ErrnoQuota", n, resp.Status, resp.Body)
	}
	if n < 4 {
		t.Fatalf("only %d entries of 8 KiB fit under 96 KiB", n)
	}
	if s := ledgerOf(t, f.h, "big"); s.Rows != int64(n) {
		t.Fatalf("state %+v, want %d rows (the refused entry left nothing)", s, n)
	}
	addEntry(t, f.h, "other", "x", 1) // the cap is per shard
	if !strings.Contains(f.logs.String(), "shard_sql_bytes") {
		t.Fatal("the cap was not logged")
	}
}

// TestShardSQLTrapDiscardsBoth: a guest that traps after writing SQL and
// key-value storage leaves neither behind; the host's reserved table is out
// of the guest's reach.
func TestShardSQLTrapDiscardsBoth(t *testing.T) {
	f := start(t, ledgerConfig(t, nil))
	addEntry(t, f.h, "t", "ok", 3)
	if _, err := ledger(t, f.h, "t", "POST", "/entry?id=lost&amount=100&panic=1"); err == nil {
		t.Fatal("a trapping event succeeded")
	}
	if s := ledgerOf(t, f.h, "t"); s.Rows != 1 || s.Sum != 3 {
		t.Fatalf("after the trap: %+v, want only the first entry", s)
	}
	resp, err := ledger(t, f.h, "t", "POST", "/sql")
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"DELETE FROM _edgeshard_event", "DROP TABLE _edgeshard_event"} {
		resp, err = f.h.Fetch(context.Background(), "LEDGER", "t", &abi.Request{Method: "POST", Path: "/sql", Body: []byte(q)})
		if err != nil || resp.Status != 400 || !strings.Contains(string(resp.Body), "reserved") {
			t.Fatalf("%s: %v %d %s", q, err, resp.Status, resp.Body)
		}
	}
}

// TestShardSQLCrashBetweenCommits: the process "dies" (an injected crash)
// after an event's SQL commit and before its key-value writes are
// submitted. The event fails, and the shard's next start — in the same
// host, or after a restart — applies the lost key-value writes again from
// the database's redo record: the two stores agree and hold the event.
func TestShardSQLCrashBetweenCommits(t *testing.T) {
	var crash atomic.Bool
	ctx := hostinternal.WithShardSQLCrash(context.Background(), func(binding, shard string) bool {
		return binding == "LEDGER" && shard == "c" && crash.Swap(false)
	})
	cfg := ledgerConfig(t, nil)
	f := startCtx(t, ctx, cfg)
	addEntry(t, f.h, "c", "e1", 1)

	crash.Store(true)
	_, err := ledger(t, f.h, "c", "POST", "/entry?id=e2&amount=2")
	if !errors.Is(err, host.ErrCommit) || !errors.Is(err, hostinternal.ErrInjectedCrash) {
		t.Fatalf("crashed event: %v, want ErrCommit and the injected crash", err)
	}
	if s := ledgerOf(t, f.h, "c"); s.Rows != 2 || s.Balance != 3 || s.Keys != 2 {
		t.Fatalf("after the crash, in the same host: %+v, want e1 and e2 in both stores", s)
	}
	if !strings.Contains(f.logs.String(), "applied again") {
		t.Fatalf("the repair was not logged:\n%s", f.logs.String())
	}

	// Crash again, and restart before the shard runs another event.
	crash.Store(true)
	if _, err := ledger(t, f.h, "c", "POST", "/entry?id=e3&amount=4"); !errors.Is(err, hostinternal.ErrInjectedCrash) {
		t.Fatalf("second crash: %v", err)
	}
	f.h.Close(context.Background())
	f2 := startCtx(t, ctx, cfg)
	if s := ledgerOf(t, f2.h, "c"); s.Rows != 3 || s.Balance != 7 || s.Keys != 3 {
		t.Fatalf("after the crash and a restart: %+v, want e1, e2, e3 in both stores", s)
	}
	// An event's allowUnconfirmed writes are repaired alike.
	crash.Store(true)
	if _, err := ledger(t, f2.h, "c", "POST", "/entry?id=u1&amount=100&unconfirmed=1"); !errors.Is(err, hostinternal.ErrInjectedCrash) {
		t.Fatalf("crash of an unconfirmed event: %v", err)
	}
	if s := ledgerOf(t, f2.h, "c"); s.Rows != 4 || s.Balance != 107 {
		t.Fatalf("after the crash of an unconfirmed event: %+v", s)
	}
	addEntry(t, f2.h, "c", "e4", 8)
	f2.h.Close(context.Background())
	f3 := start(t, cfg)
	if s := ledgerOf(t, f3.h, "c"); s.Rows != 5 || s.Balance != 115 {
		t.Fatalf("after a clean restart: %+v", s)
	}
	if strings.Contains(f3.logs.String(), "applied again") {
		t.Fatal("a clean restart replayed an event")
	}
}

// TestShardSQLExportImport: a shard's database leaves as bytes between two
// of its events and replaces another shard's; a shard that never ran SQL
// has none to export.
func TestShardSQLExportImport(t *testing.T) {
	f := start(t, ledgerConfig(t, nil))
	addEntry(t, f.h, "alice", "a1", 10)
	addEntry(t, f.h, "alice", "a2", 5)
	addEntry(t, f.h, "carol", "c1", 99)
	ns, _ := f.h.Namespace("LEDGER")
	var buf bytes.Buffer
	if err := ns.ExportSQL(context.Background(), "alice", &buf); err != nil {
		t.Fatal(err)
	}
	if err := ns.ImportSQL(context.Background(), "carol", bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	resp, err := ledger(t, f.h, "carol", "GET", "/state")
	if err != nil {
		t.Fatal(err)
	}
	var s ledgerState
	json.Unmarshal(resp.Body, &s)
	// The rows are alice's; carol's key-value storage is the caller's to restore.
	if s.Rows != 2 || s.Sum != 15 || s.Balance != 99 {
		t.Fatalf("carol after import: %+v, want alice's 2 rows (sum 15) beside carol's own balance 99", s)
	}
	addEntry(t, f.h, "carol", "c2", 1) // the imported database takes new events
	if err := ns.ExportSQL(context.Background(), "nobody", &buf); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("export of a shard without a database: %v", err)
	}
	if err := ns.ImportSQL(context.Background(), "carol", strings.NewReader("garbage")); err == nil {
		t.Fatal("import of garbage succeeded")
	}
	if resp, _ := ledger(t, f.h, "carol", "GET", "/state"); resp == nil || !strings.Contains(string(resp.Body), `"rows":3`) {
		t.Fatalf("carol after a refused import: %+v", resp)
	}
}

// TestShardSQLConfigRefused: a database per shard needs a data directory,
// and "shard" cannot also name a shared database.
func TestShardSQLConfigRefused(t *testing.T) {
	b := host.Binding{Name: "L", ModuleBytes: []byte("\x00asm"), SQL: host.ShardSQL}
	for _, tc := range []struct {
		cfg  host.Config
		want string
	}{
		{host.Config{Bindings: []host.Binding{b}}, "needs a DataDir"},
		{host.Config{DataDir: t.TempDir(), Bindings: []host.Binding{b}, SQL: map[string]host.SQLDB{host.ShardSQL: testutil.SQL(t, "", nil)}}, "ambiguous"},
	} {
		h, err := host.New(context.Background(), tc.cfg)
		if err == nil {
			h.Close(context.Background())
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New: %v, want %q", err, tc.want)
		}
	}
}
