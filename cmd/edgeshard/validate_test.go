package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeshard/edgeshard/internal/testutil"
)

// TestValidate: validate lists each import once and the memory range;
// with --config and --binding it checks the module against that binding's
// grants (the counters plugin imports sql_exec: refused for a binding
// without sql) and shows its limits and log codes.
func TestValidate(t *testing.T) {
	counters := testutil.Plugin(t, "plugins/counters")
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "edgeshard.toml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
data_dir = %q
memory_limit_mb = 64

[[durable_objects.bindings]]
name = "COUNTER_SHARD"
module = %q
sql = "DB"

[[durable_objects.bindings]]
name = "NO_SQL"
module = %q
limits = { storage_quota_bytes = 0 }

[[d1_databases]]
binding = "DB"
url = "sqlite://%s/d1.db"
`, dir, counters, counters, dir)), 0o644); err != nil {
		t.Fatal(err)
	}
	validate := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := run(append([]string{"validate"}, args...), &out, &errOut)
		return code, out.String(), errOut.String()
	}

	code, out, errOut := validate(counters)
	if code != 0 || strings.Count(out, "wasi_snapshot_preview1.fd_write") != 1 || !strings.Contains(out, "memory   ") || !strings.Contains(out, "..2048 pages") {
		t.Fatalf("validate FILE = %d\n%s%s", code, out, errOut)
	}

	code, out, errOut = validate("--config", cfgPath, "--binding", "COUNTER_SHARD")
	for _, want := range []string{
		counters + ": ok",
		"..1024 pages", // the config's 64 MiB cap
		"binding  COUNTER_SHARD grants storage, alarm, vars, log, websocket, sql",
		"storage_quota_bytes 1073741824",
		"log codes honoured: E-VIBECODR-2140, E-VIBECODR-2141",
	} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("validate --binding COUNTER_SHARD = %d, want %q in\n%s%s", code, want, out, errOut)
		}
	}

	code, out, errOut = validate("--config", cfgPath, "--binding", "NO_SQL", counters)
	if code != 1 || !strings.Contains(errOut, `imports edgeshard.sql_exec but its binding does not grant "sql" (granted: storage, alarm, vars, log, websocket)`) {
		t.Fatalf("validate --binding NO_SQL = %d\n%s%s", code, out, errOut)
	}
	code, _, errOut = validate("--config", cfgPath, "--binding", "MISSING")
	if code != 1 || !strings.Contains(errOut, `has no binding "MISSING"`) {
		t.Fatalf("validate --binding MISSING = %d\n%s", code, errOut)
	}
	for _, args := range [][]string{
		{"--config", cfgPath},
		{"--binding", "NO_SQL"},
		{"--config", cfgPath, "--binding", "NO_SQL", "--grant", "sql"},
		{},
		{counters, counters},
	} {
		if code, _, _ := validate(args...); code != 2 {
			t.Errorf("validate %q = %d, want 2 (usage)", args, code)
		}
	}
}
