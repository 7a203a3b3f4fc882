package host_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/storage"
	"github.com/edgeshard/edgeshard/storage/shardsql"
)

// ledgerIn returns the state of ledger name in binding, its two stores
// checked to agree (ledgerOf, for any binding name).
func ledgerIn(t *testing.T, h *host.Host, binding, name string) ledgerState {
	t.Helper()
	resp, err := h.Fetch(context.Background(), binding, name, &abi.Request{Method: "GET", Path: "/state"})
	if err != nil || resp.Status != 200 {
		t.Fatalf("state of %s/%s: %v %+v", binding, name, err, resp)
	}
	var s ledgerState
	if err := json.Unmarshal(resp.Body, &s); err != nil {
		t.Fatal(err)
	}
	if s.Balance != s.Sum || int64(s.Keys) != s.Rows {
		t.Fatalf("ledger %s/%s: key-value storage and SQL disagree: %+v", binding, name, s)
	}
	return s
}

// fillLedgers adds entries to alice (3), bob (1) and returns their states.
func fillLedgers(t *testing.T, h *host.Host) map[string]ledgerState {
	t.Helper()
	for i, amount := range []int{10, 5, 2} {
		addEntry(t, h, "alice", fmt.Sprintf("a%d", i), amount)
	}
	addEntry(t, h, "bob", "b0", 7)
	want := map[string]ledgerState{}
	for _, n := range []string{"alice", "bob"} {
		want[n] = ledgerOf(t, h, n)
		if want[n].Rows == 0 {
			t.Fatalf("%s has no rows", n)
		}
	}
	return want
}

// TestShardSQLBackupRestore: a backup of a host whose binding has a
// database per shard carries each shard's database (section "sql"); after
// the data dir is wiped and the backup restored offline (as `edgeshard
// restore` does), every ledger answers as before from both stores and
// takes new entries.
func TestShardSQLBackupRestore(t *testing.T) {
	cfg := ledgerConfig(t, nil)
	f := start(t, cfg)
	want := fillLedgers(t, f.h)
	// carol only ever writes SQL: no entry of her own, yet backed up.
	if st := rawSQL(t, f.h, "carol", "CREATE TABLE notes (x)"); st != 200 {
		t.Fatalf("CREATE TABLE on carol: %d", st)
	}
	var backup bytes.Buffer
	if _, err := f.h.Backup(&backup, "test", nil); err != nil {
		t.Fatal(err)
	}
	f.h.Close(context.Background())

	if err := os.RemoveAll(cfg.DataDir); err != nil {
		t.Fatal(err)
	}
	b, err := storage.OpenBadger(storage.BadgerOptions{Dir: filepath.Join(cfg.DataDir, "shards")})
	if err != nil {
		t.Fatal(err)
	}
	imp := host.ShardStateImporters([]host.ShardState{host.ShardSQLState(filepath.Join(cfg.DataDir, shardsql.Dir))})
	if _, err := storage.Restore(b, bytes.NewReader(backup.Bytes()), imp, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// Without an importer for "sql" the backup is refused, not half-restored.
	b2, err := storage.OpenBadger(storage.BadgerOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	if _, err := storage.Restore(b2, bytes.NewReader(backup.Bytes()), host.ShardStateImporters(nil), nil); err == nil {
		t.Fatal("a restore without the sql importer accepted a backup holding databases")
	}

	f2 := start(t, cfg)
	for n, w := range want {
		if got := ledgerOf(t, f2.h, n); got != w {
			t.Fatalf("%s after restore: %+v; want %+v", n, got, w)
		}
	}
	addEntry(t, f2.h, "alice", "a9", 1)
	if got := ledgerOf(t, f2.h, "alice"); got.Rows != want["alice"].Rows+1 || got.Sum != want["alice"].Sum+1 {
		t.Fatalf("alice after a new entry: %+v", got)
	}
	if st := rawSQL(t, f2.h, "carol", "INSERT INTO notes VALUES (1)"); st != 200 {
		t.Fatalf("carol's table after restore: INSERT answered %d; want her restored table", st)
	}
}

// rawSQL runs one statement in ledger name's database; it returns the status.
func rawSQL(t *testing.T, h *host.Host, name, stmt string) int {
	t.Helper()
	resp, err := h.Fetch(context.Background(), "LEDGER", name, &abi.Request{Method: "POST", Path: "/sql", Body: []byte(stmt)})
	if err != nil {
		t.Fatalf("sql on %s: %v", name, err)
	}
	return resp.Status
}

// TestShardSQLShardMovesBetweenHosts: a one-shard export carries the
// shard's database with its entries; imported on another host the ledger
// answers the same from both stores. A shard with a database refuses an
// import; ClearShard deletes the database with the entries, after which
// the shard takes the import.
func TestShardSQLShardMovesBetweenHosts(t *testing.T) {
	src := start(t, ledgerConfig(t, nil))
	dst := start(t, ledgerConfig(t, nil))
	want := fillLedgers(t, src.h)
	srcNS, _ := src.h.Namespace("LEDGER")
	dstNS, _ := dst.h.Namespace("LEDGER")
	var snap bytes.Buffer
	if _, err := srcNS.ExportShard(context.Background(), "alice", &snap); err != nil {
		t.Fatal(err)
	}
	if _, err := dstNS.ImportShard(context.Background(), "alice", bytes.NewReader(snap.Bytes())); err != nil {
		t.Fatal(err)
	}
	if got := ledgerOf(t, dst.h, "alice"); got != want["alice"] {
		t.Fatalf("alice on the second host: %+v; want %+v", got, want["alice"])
	}
	addEntry(t, dst.h, "alice", "a9", 1)

	// A shard whose database holds rows is not empty, even with no entry.
	if st := rawSQL(t, dst.h, "carol", "CREATE TABLE notes (x)"); st != 200 {
		t.Fatalf("CREATE TABLE on carol: %d", st)
	}
	if _, err := dstNS.ImportShard(context.Background(), "carol", bytes.NewReader(snap.Bytes())); !errors.Is(err, storage.ErrNotEmpty) {
		t.Fatalf("import into a shard with data: %v; want ErrNotEmpty", err)
	}

	// The move's last step: the source shard is cleared, database included.
	if err := srcNS.ClearShard(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(shardsql.Path(src.cfg.DataDir, "LEDGER", "alice")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("database of a cleared shard: %v; want none", err)
	}
	if got := ledgerOf(t, src.h, "alice"); got.Rows != 0 || got.Balance != 0 {
		t.Fatalf("alice after ClearShard: %+v; want nothing", got)
	}
	if err := srcNS.ClearShard(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := srcNS.ImportShard(context.Background(), "alice", bytes.NewReader(snap.Bytes())); err != nil {
		t.Fatalf("import into the cleared shard: %v", err)
	}
	if got := ledgerOf(t, src.h, "alice"); got != want["alice"] {
		t.Fatalf("alice imported back: %+v; want %+v", got, want["alice"])
	}

	// A snapshot of a shard without a database imports as one without.
	var none bytes.Buffer
	if _, err := srcNS.ExportShard(context.Background(), "nobody", &none); err != nil {
		t.Fatal(err)
	}
	if _, err := dstNS.ImportShard(context.Background(), "dave", bytes.NewReader(none.Bytes())); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(shardsql.Path(dst.cfg.DataDir, "LEDGER", "dave")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("database after importing a shard without one: %v", err)
	}
}

// TestShardSQLMigrations: a [[migrations]] rename moves the binding's
// databases (the ledgers answer as before under the new name), a deletion
// removes them.
func TestShardSQLMigrations(t *testing.T) {
	cfg := ledgerConfig(t, nil)
	f := start(t, cfg)
	want := fillLedgers(t, f.h)
	f.h.Close(context.Background())

	renamed := renamedConfig(cfg, "BOOKS")
	f2 := start(t, renamed)
	for n, w := range want {
		if got := ledgerIn(t, f2.h, "BOOKS", n); got != w {
			t.Fatalf("%s after the rename: %+v; want %+v", n, got, w)
		}
	}
	if _, err := os.Stat(shardsql.BindingDir(filepath.Join(cfg.DataDir, shardsql.Dir), "LEDGER")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the old name's databases are still there: %v", err)
	}
	f2.h.Close(context.Background())

	deleted := renamed
	deleted.Bindings = []host.Binding{cfg.Bindings[0]} // LEDGER again, empty
	deleted.Migrations = append(deleted.Migrations, host.Migration{Tag: "v3", Deleted: []string{"BOOKS"}})
	f3 := start(t, deleted)
	if _, err := os.Stat(shardsql.BindingDir(filepath.Join(cfg.DataDir, shardsql.Dir), "BOOKS")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the deleted binding's databases are still there: %v", err)
	}
	if got := ledgerOf(t, f3.h, "alice"); got.Rows != 0 {
		t.Fatalf("alice under LEDGER after the deletion: %+v; want nothing", got)
	}
}
