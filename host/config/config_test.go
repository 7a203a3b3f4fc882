package config

import (
	"strings"
	"testing"
	"time"
)

func TestUnknownTablesAreRefusedUnlessOwned(t *testing.T) {
	f, err := Parse([]byte("[auth]\njwt_secret = \"x\"\n[proxyy]\nmax = 1\n"), "t.toml")
	if err != nil {
		t.Fatalf("Parse keeps unknown tables for their owners: %v", err)
	}
	if err := f.CheckExtra("auth"); err == nil || !strings.Contains(err.Error(), "[proxyy]") || strings.Contains(err.Error(), "[auth]") {
		t.Fatalf("CheckExtra(auth) = %v, want an error naming [proxyy] only", err)
	}
	if err := f.CheckExtra("auth", "proxyy"); err != nil {
		t.Fatalf("CheckExtra with both owned: %v", err)
	}
	if _, err := Parse([]byte("[durable_objects]\nbogus = 1\n"), "t.toml"); err == nil || !strings.Contains(err.Error(), "durable_objects.bogus") {
		t.Fatalf("an unknown key in a core table: %v", err)
	}
	if _, err := Parse([]byte("bogus = 1\n"), "t.toml"); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Fatalf("an unknown top-level key: %v", err)
	}
}

func TestTimeoutsAndMetricsSettings(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"read_timeout = \"0s\"\n", "read_timeout must be positive"},
		{"shutdown_grace = \"30s\"\nshutdown_timeout = \"10s\"\n", "shutdown_timeout = 10s must be at least shutdown_grace = 30s"},
		{"metrics = \"public\"\n", "metrics = \"public\": want main, admin or off"},
		{"metrics = \"admin\"\n", "metrics = \"admin\" needs the admin API"},
	} {
		f, err := Parse([]byte(tc.text), "t.toml")
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.text, err, tc.want)
		}
	}
	f, _ := Parse(nil, "t.toml")
	if f.ReadTimeout.Duration != 30*time.Second || f.ShutdownTimeout.Duration != time.Minute || f.Metrics != "main" {
		t.Fatalf("defaults: read_timeout %v, shutdown_timeout %v, metrics %q", f.ReadTimeout, f.ShutdownTimeout, f.Metrics)
	}
}

func TestStorageTable(t *testing.T) {
	f, err := Parse([]byte("[storage]\nmin_free_mb = 512\nvalue_log_file_mb = 16\n"), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Validate(); err != nil || f.Storage.MinFreeMB != 512 || f.Storage.ValueLogFileMB != 16 {
		t.Fatalf("[storage] = %+v, %v", f.Storage, err)
	}
	if err := f.CheckExtra(); err != nil {
		t.Fatalf("[storage] is a core table: %v", err)
	}
	f, _ = Parse([]byte("[storage]\nmin_free_mb = -1\nvalue_log_file_mb = 4096\n"), "t.toml")
	err = f.Validate()
	if err == nil || !strings.Contains(err.Error(), "storage.min_free_mb = -1") || !strings.Contains(err.Error(), "storage.value_log_file_mb = 4096") {
		t.Fatalf("Validate of bad [storage] = %v; want both settings named", err)
	}
	f, _ = Parse([]byte("[storage]\nmemtable_mb = 16\nblock_cache_mb = -1\nindex_cache_mb = 4\nshard_cache_mb = 64\n"), "t.toml")
	if err := f.Validate(); err != nil || f.Storage.MemtableMB != 16 || f.Storage.BlockCacheMB != -1 || f.Storage.IndexCacheMB != 4 || f.Storage.ShardCacheMB != 64 {
		t.Fatalf("[storage] memory settings = %+v, %v", f.Storage, err)
	}
	f, _ = Parse([]byte("[storage]\nmemtable_mb = 2048\nblock_cache_mb = -2\nindex_cache_mb = -2\nshard_cache_mb = -5\n"), "t.toml")
	err = f.Validate()
	for _, want := range []string{"storage.memtable_mb = 2048", "storage.block_cache_mb = -2", "storage.index_cache_mb = -2", "storage.shard_cache_mb = -5"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate of bad [storage] = %v; want %q named", err, want)
		}
	}
}

// TestInstanceMemoryBudget: instance_memory_budget_mb is 0 (the default:
// half of the machine's memory), -1 (none) or at least 16;
// instance_start_wait a positive duration.
func TestInstanceMemoryBudget(t *testing.T) {
	for src, want := range map[string]string{
		"":                                 "",
		"instance_memory_budget_mb = 0\n":  "",
		"instance_memory_budget_mb = -1\n": "",
		"instance_memory_budget_mb = 512\ninstance_start_wait = \"250ms\"\n": "",
		"instance_memory_budget_mb = -2\n":                                   "instance_memory_budget_mb = -2",
		"instance_memory_budget_mb = 8\n":                                    "instance_memory_budget_mb = 8",
		"instance_start_wait = \"0s\"\n":                                     "instance_start_wait must be positive",
	} {
		f, err := Parse([]byte(src), "t.toml")
		if err != nil {
			t.Fatalf("%q: %v", src, err)
		}
		err = f.Validate()
		if (want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), want)) {
			t.Errorf("%q: Validate = %v, want %q", src, err, want)
		}
	}
	f, _ := Parse([]byte("instance_memory_budget_mb = 512\n"), "t.toml")
	if f.InstanceMemoryBudgetMB != 512 || f.InstanceStartWait.Duration != 5e9 {
		t.Fatalf("parsed %d, %v", f.InstanceMemoryBudgetMB, f.InstanceStartWait)
	}
}

func TestD1Databases(t *testing.T) {
	env := map[string]string{"PGPASSWORD_DB": "s3cret"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	f, err := Parse([]byte(`
[[d1_databases]]
binding = "DB"
url = "postgres://edge@db.internal:5432/edge?sslmode=verify-full&sslrootcert=/etc/ssl/db-ca.pem"
max_conns = 16
statement_timeout = "5s"
password_env = "PGPASSWORD_DB"

[[d1_databases]]
binding = "LOCAL"
url = "sqlite://./data/d1.db"
synchronous = "normal"
max_conns = 2

[[analytics_engine_datasets]]
binding = "AE"
url = "postgresql://edge@db.internal/analytics?sslmode=verify-full"
password_env = "PGPASSWORD_DB"
`), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	f.ApplyEnv(lookup)
	if err := f.Validate(); err != nil {
		t.Fatal(err)
	}
	pg := f.D1Databases[0]
	if !pg.IsPostgres() || pg.MaxConns != 16 || pg.StatementTimeout.Duration != 5*time.Second || pg.Password != "s3cret" {
		t.Fatalf("postgres entry %+v", pg)
	}
	if f.D1Databases[1].IsPostgres() {
		t.Fatal("sqlite entry taken for postgres")
	}
	if f.Analytics[0].Password != "s3cret" {
		t.Fatal("analytics password_env not read")
	}

	for _, tc := range []struct{ text, want string }{
		{`url = "mysql://u:pw@h/db"`, `url = "mysql://u:xxxxx@h/db": want sqlite://PATH or postgres://`},
		{"url = \"postgres://h/db\"\nsynchronous = \"FULL\"", "synchronous applies to SQLite only"},
		{"url = \"sqlite://x.db\"\nstatement_timeout = \"1s\"", "statement_timeout applies to PostgreSQL only"},
		{"url = \"sqlite://x.db\"\npassword_env = \"PGPASSWORD_DB\"", "password_env applies to PostgreSQL only"},
		{"url = \"postgres://h/db\"\npassword_env = \"NOT_SET\"", `password_env = "NOT_SET": the environment variable is not set`},
		{"url = \"postgres://h/db\"\nmax_conns = -1", "max_conns = -1"},
		{"url = \"postgres://h/db\"\nstatement_timeout = \"-1s\"", "statement_timeout must not be negative"},
	} {
		f, err := Parse([]byte("[[d1_databases]]\nbinding = \"DB\"\n"+tc.text+"\n"), "t.toml")
		if err != nil {
			t.Fatal(err)
		}
		f.ApplyEnv(lookup)
		err = f.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.text, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "pw@") {
			t.Errorf("%q: the error shows the password: %v", tc.text, err)
		}
	}
}

// TestNodeID: node_id is optional, EDGESHARD_NODE_ID wins over the file,
// and a value outside [A-Za-z0-9._-] is refused naming the setting.
func TestNodeID(t *testing.T) {
	f, err := Parse([]byte("node_id = \"pop-fra\"\n"), "t.toml")
	if err != nil || f.NodeID != "pop-fra" || f.Validate() != nil {
		t.Fatalf("%+v %v", f, err)
	}
	f.ApplyEnv(func(k string) (string, bool) {
		return map[string]string{"EDGESHARD_NODE_ID": "pop-ams"}[k], k == "EDGESHARD_NODE_ID"
	})
	if f.NodeID != "pop-ams" {
		t.Fatalf("env: %q", f.NodeID)
	}
	f, _ = Parse([]byte("node_id = \"pop fra\"\n"), "t.toml")
	if err := f.Validate(); err == nil || !strings.Contains(err.Error(), `node_id = "pop fra"`) {
		t.Fatalf("a bad node id: %v", err)
	}
	f, _ = Parse(nil, "t.toml")
	if f.NodeID != "" || f.Validate() != nil {
		t.Fatalf("no node_id: %q", f.NodeID)
	}
}

func TestShardSQLSetting(t *testing.T) {
	ok := "[[durable_objects.bindings]]\nname = \"L\"\nmodule = \"l.wasm\"\nsql = \"shard\"\n" +
		"[durable_objects.bindings.limits]\nshard_sql_bytes = 65536\n"
	f, err := Parse([]byte(ok), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Validate(); err != nil {
		t.Fatalf("sql = \"shard\" needs no [[d1_databases]]: %v", err)
	}
	if b := f.DurableObjects.Bindings[0]; b.SQL != ShardSQL || *b.Limits.ShardSQLBytes != 65536 {
		t.Fatalf("binding = %+v", b)
	}
	for _, tc := range []struct{ text, want string }{
		{"[[d1_databases]]\nbinding = \"shard\"\nurl = \"sqlite://x.db\"\n", `binding "shard" is reserved`},
		{"[limits]\nshard_sql_bytes = -1\n", "shard_sql_bytes = -1: want ≥ 0"},
		{"[[durable_objects.bindings]]\nname = \"L\"\nmodule = \"l.wasm\"\nsql = \"shards\"\n", `sql = "shards": no [[d1_databases]] with that binding (or "shard": a database per shard)`},
	} {
		f, err := Parse([]byte(tc.text), "t.toml")
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.text, err, tc.want)
		}
	}
}

// TestWebSocketTable: [websocket] parses and refuses negative settings.
func TestWebSocketTable(t *testing.T) {
	f, err := Parse([]byte("[websocket]\nmax_sockets_per_shard = 5\nmax_message_bytes = 2048\nwrite_timeout = \"3s\"\n"), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	if f.WebSocket.MaxSocketsPerShard != 5 || f.WebSocket.MaxMessageBytes != 2048 || f.WebSocket.WriteTimeout.Duration != 3*time.Second {
		t.Fatalf("parsed %+v", f.WebSocket)
	}
	if err := f.Validate(); err != nil {
		t.Fatal(err)
	}
	f, err = Parse([]byte("[websocket]\nsend_queue_bytes = -1\n"), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Validate(); err == nil || !strings.Contains(err.Error(), "websocket.send_queue_bytes must be ≥ 0") {
		t.Fatalf("negative send_queue_bytes: %v", err)
	}
}
