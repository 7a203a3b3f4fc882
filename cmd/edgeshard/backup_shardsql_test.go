package main_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/internal/proctest"
	"github.com/edgeshard/edgeshard/internal/testutil"
)

// ledgerOf reads ledger name of the real binary and checks its two
// stores agree.
func ledgerOf(t *testing.T, p *proctest.Proc, name string) shardLedger {
	t.Helper()
	st := readLedger(t, p, name)
	if st.Balance != st.Sum || int64(st.Keys) != st.Rows {
		t.Fatalf("ledger %s: key-value storage and SQL disagree: %+v", name, st)
	}
	return st
}

// TestBackupRestoreShardSQL: `edgeshard backup` of a host whose binding
// has a database per shard (sql = "shard"), the data dir wiped, `edgeshard
// restore`: the ledgers answer as before from both stores. A restore into
// a data dir whose shardsql directory holds anything is refused.
func TestBackupRestoreShardSQL(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	dir := t.TempDir()
	adminAddr := proctest.FreeAddr(t)
	cfg := fmt.Sprintf(`listen = "{{LISTEN}}"
data_dir = "./data"
cache_dir = %q
admin_listen = %q

[[durable_objects.bindings]]
name = "LEDGER"
module = %q
shards = 0
sql = "shard"
`, testutil.CacheDir(), adminAddr, testutil.Plugin(t, "host/testdata/plugins/shardsql"))
	p := proctest.Start(t, dir, cfg, "EDGESHARD_ADMIN_TOKEN="+adminToken)
	entries := map[string][]int{"alice": {10, 5, 2}, "bob": {7}}
	want := map[string]shardLedger{}
	for name, amounts := range entries {
		for i, a := range amounts {
			if st, body := post(t, fmt.Sprintf("%s/do/LEDGER/%s/entry?id=e%d&amount=%d", p.URL(), name, i, a)); st != 200 {
				t.Fatalf("entry %s: %d %s", name, st, body)
			}
		}
		want[name] = ledgerOf(t, p, name)
	}
	file := filepath.Join(t.TempDir(), "host.backup")
	if out, errs, code := cli(t, "", "backup", "--admin", "http://"+adminAddr, file); code != 0 {
		t.Fatalf("backup exited %d: %s %s\n%s", code, out, errs, p.Output())
	}
	if err := p.Term(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	// Shard storage gone but databases left: refused.
	if err := os.RemoveAll(filepath.Join(data, "shards")); err != nil {
		t.Fatal(err)
	}
	_, errs, code := cli(t, dir, "restore", "--config", p.Config, file)
	if code == 0 || !strings.Contains(errs, "shardsql is not empty") {
		t.Fatalf("restore over existing shard databases: exit %d, %q; want a refusal", code, errs)
	}
	if err := os.RemoveAll(data); err != nil {
		t.Fatal(err)
	}
	out, errs, code := cli(t, dir, "restore", "--config", p.Config, file)
	if code != 0 {
		t.Fatalf("restore exited %d: %q %q", code, out, errs)
	}
	p.Restart()
	for name, w := range want {
		if got := ledgerOf(t, p, name); got != w {
			t.Fatalf("%s after restore: %+v; want %+v", name, got, w)
		}
	}
}
