// Package config reads edgeshard.toml, a wrangler-like file, applies
// environment overrides and validates the result with messages that name
// the offending setting.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/edgeshard/edgeshard/abi"
)

// Duration is a time.Duration written as "5s", "2m" in TOML.
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q (use e.g. \"5s\", \"2m\")", string(b))
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration back.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// File is the whole configuration.
type File struct {
	Listen        string   `toml:"listen"`
	AdminListen   string   `toml:"admin_listen"`
	AdminToken    string   `toml:"admin_token"`
	DataDir       string   `toml:"data_dir"`
	CacheDir      string   `toml:"cache_dir"` // wazero compilation cache; default data_dir/cache
	Trace         string   `toml:"trace"`     // BINDING/SHARD whose host calls are logged
	LogLevel      string   `toml:"log_level"`
	LogFormat     string   `toml:"log_format"` // json (default) or console
	SyncWrites    *bool    `toml:"sync_writes"`
	EventTimeout  Duration `toml:"event_timeout"`
	IdleTimeout   Duration `toml:"idle_timeout"`
	ShutdownGrace Duration `toml:"shutdown_grace"`
	// ShutdownTimeout bounds the whole shutdown; past it serve exits
	// non-zero naming what was still stopping.
	ShutdownTimeout Duration `toml:"shutdown_timeout"`
	// ReadTimeout bounds reading one request, body included (slow clients).
	ReadTimeout Duration `toml:"read_timeout"`
	// NodeID names this host among the hosts that share a SQL database
	// (abi.ValidNodeID); empty: the one kept in data_dir/node_id, made up
	// on first start (host.LoadNodeID).
	NodeID string `toml:"node_id"`
	// Metrics says where /metrics is served: "main" (the main listener,
	// behind MetricsToken when set), "admin" (the admin listener, behind
	// the admin token) or "off".
	Metrics        string             `toml:"metrics"`
	MetricsToken   string             `toml:"metrics_token"`
	MemoryLimitMB  int                `toml:"memory_limit_mb"`
	QueueDepth     int                `toml:"queue_depth"`
	FetchBatch     int                `toml:"fetch_batch"`
	MaxBodyBytes   int64              `toml:"max_body_bytes"`
	Storage        Storage            `toml:"storage"`
	Limits         Limits             `toml:"limits"`
	WebSocket      WebSocket          `toml:"websocket"`
	DurableObjects DurableObjects     `toml:"durable_objects"`
	D1Databases    []D1Database       `toml:"d1_databases"`
	Analytics      []AnalyticsDataset `toml:"analytics_engine_datasets"`
	Vars           map[string]string  `toml:"vars"`
	// Migrations rename and delete bindings' shard data, each once
	// (host.Migration).
	Migrations []Migration `toml:"migrations"`

	// The instance memory budget (host.Config.InstanceMemoryBudgetMiB):
	// 0 takes half of the machine's memory, -1 sets none.
	InstanceMemoryBudgetMB int      `toml:"instance_memory_budget_mb"`
	InstanceStartWait      Duration `toml:"instance_start_wait"`

	// Extra holds tables the core does not know (e.g. [auth], [proxy] of the
	// edge API), as decoded by toml, for the components that own them.
	Extra map[string]any `toml:"-"`
	meta  toml.MetaData
	path  string
}

// Storage is the [storage] table: the shards' Badger storage in data_dir.
type Storage struct {
	// MinFreeMB is the free space kept on data_dir's filesystem for what
	// Badger writes on its own: below it shard writes are refused (507
	// storage_full) until space is freed. 0: the default, 256 (or 2 value
	// log files + 4 memtables, if more).
	MinFreeMB int `toml:"min_free_mb"`
	// ValueLogFileMB is the size of one Badger value log file (0: 64).
	ValueLogFileMB int `toml:"value_log_file_mb"`
	// MemtableMB is the size of one Badger memtable (0: 8). Up to three
	// are in memory at once, each ~1.3× this; one event's small writes
	// must fit in 15% of one.
	MemtableMB int `toml:"memtable_mb"`
	// BlockCacheMB is Badger's block cache (0: 8; -1: none).
	BlockCacheMB int `toml:"block_cache_mb"`
	// IndexCacheMB bounds the memory of Badger's table indexes and bloom
	// filters (0: 8; -1: every index in memory, unbounded).
	IndexCacheMB int `toml:"index_cache_mb"`
	// ShardCacheMB bounds the read caches of all live shards together
	// (0: 32; each shard at most 4 MiB and its share; -1: none).
	ShardCacheMB int `toml:"shard_cache_mb"`
}

// ShardSQL is the value of a binding's sql that gives each shard its own
// SQLite database; no [[d1_databases]] may take the name.
const ShardSQL = "shard"

// Migration is one [[migrations]] entry, like wrangler's:
//
//	[[migrations]]
//	tag = "v2"
//	renamed_bindings = [{ from = "COUNTER", to = "COUNTERS" }]
//	deleted_bindings = ["OLD_EXPERIMENT"]
type Migration struct {
	Tag             string           `toml:"tag"`
	RenamedBindings []RenamedBinding `toml:"renamed_bindings"`
	DeletedBindings []string         `toml:"deleted_bindings"`
}

// RenamedBinding is one rename of a Migration.
type RenamedBinding struct {
	From string `toml:"from"`
	To   string `toml:"to"`
}

// DurableObjects is the [durable_objects] table.
type DurableObjects struct {
	Bindings []Binding `toml:"bindings"`
}

// Binding is one [[durable_objects.bindings]] entry.
type Binding struct {
	Name   string `toml:"name"`
	Module string `toml:"module"`
	Shards int    `toml:"shards"`
	// SQL names a [[d1_databases]] binding the shards share, or is "shard"
	// (ShardSQL): each shard its own SQLite database in data_dir/shardsql.
	SQL       string `toml:"sql"`
	Analytics string `toml:"analytics"`
	// Limits override [limits] for this binding, setting by setting.
	Limits *Limits `toml:"limits"`
	// LogCodes are the code fields of its plugin's log records the host
	// honours: exact codes or prefixes ending in "*" ("*" for all). Absent
	// (nil) leaves the choice to the wiring (internal/server: the edge
	// API's shards get the codes their plugins document, others none).
	LogCodes []string `toml:"log_codes"`
	// Calls names the bindings whose shards this binding's shards may
	// call (shard_call).
	Calls []string `toml:"calls"`
	// FetchHosts are the hosts its shards may fetch (http_fetch):
	// "api.example.com", "api.example.com:8443", "*.hooks.example".
	// FetchAllowPrivate lists exact host:port destinations let through
	// although loopback, private or reserved (an explicit opt-in). Either
	// grants http_fetch; FetchTimeout (default 5s) and
	// FetchMaxResponseBytes (default 1 MiB) bound each fetch.
	FetchHosts            []string  `toml:"fetch_hosts"`
	FetchAllowPrivate     []string  `toml:"fetch_allow_private"`
	FetchTimeout          *Duration `toml:"fetch_timeout"`
	FetchMaxResponseBytes int64     `toml:"fetch_max_response_bytes"`
}

// Limits is the [limits] table, and a binding's limits: what one plugin
// may make the host do (host.Limits, docs/SECURITY.md). An absent setting
// takes the default (for a binding, the [limits] value); 0 (or "0s")
// removes that limit.
type Limits struct {
	EventWriteBytes    *int64    `toml:"event_write_bytes"`
	EventWriteKeys     *int64    `toml:"event_write_keys"`
	EventLogLines      *int64    `toml:"event_log_lines"`
	EventLogBytes      *int64    `toml:"event_log_bytes"`
	StorageQuotaBytes  *int64    `toml:"storage_quota_bytes"`
	ShardSQLBytes      *int64    `toml:"shard_sql_bytes"` // cap of each shard's own database (sql = "shard")
	AlarmRearmInterval *Duration `toml:"alarm_rearm_interval"`
	AlarmRearmBurst    *int      `toml:"alarm_rearm_burst"`
}

// check reports every negative setting, naming it under where.
func (l *Limits) check(where string, bad func(string, ...any)) {
	if l == nil {
		return
	}
	for _, n := range []struct {
		name string
		v    *int64
	}{
		{"event_write_bytes", l.EventWriteBytes}, {"event_write_keys", l.EventWriteKeys},
		{"event_log_lines", l.EventLogLines}, {"event_log_bytes", l.EventLogBytes},
		{"storage_quota_bytes", l.StorageQuotaBytes}, {"shard_sql_bytes", l.ShardSQLBytes},
	} {
		if n.v != nil && *n.v < 0 {
			bad("%s%s = %d: want ≥ 0 (0 removes the limit)", where, n.name, *n.v)
		}
	}
	if d := l.AlarmRearmInterval; d != nil && d.Duration < 0 {
		bad("%salarm_rearm_interval = %v: want ≥ 0 (\"0s\" removes the pacing)", where, d.Duration)
	}
	if b := l.AlarmRearmBurst; b != nil && *b < 1 {
		bad("%salarm_rearm_burst = %d: want ≥ 1", where, *b)
	}
}

// checkLogCodes reports empty patterns and a "*" anywhere but at the end.
func checkLogCodes(where string, codes []string, bad func(string, ...any)) {
	for _, c := range codes {
		if c == "" || strings.Contains(strings.TrimSuffix(c, "*"), "*") {
			bad("%slog_codes: %q: want a code (E-VIBECODR-2130), or a prefix followed by one final * (E-VIBECODR-21*)", where, c)
		}
	}
}

// Path returns the name the file was parsed under.
func (f *File) Path() string { return f.path }

// Binding returns the binding named name.
func (f *File) Binding(name string) (Binding, bool) {
	for _, b := range f.DurableObjects.Bindings {
		if b.Name == name {
			return b, true
		}
	}
	return Binding{}, false
}

// D1Database is one [[d1_databases]] entry: an SQLite file
// (sqlite://PATH) or a PostgreSQL database (postgres://user@host:5432/db?
// sslmode=verify-full&sslrootcert=…, TLS set in the URL as libpq takes it).
type D1Database struct {
	Binding     string `toml:"binding"`
	URL         string `toml:"url"`
	Synchronous string `toml:"synchronous"` // SQLite: FULL (default) or NORMAL
	// MaxConns caps the database's connection pool (0: max(4, GOMAXPROCS)).
	MaxConns int `toml:"max_conns"`
	// StatementTimeout is PostgreSQL's statement_timeout for every
	// connection (0: the server's or role's own).
	StatementTimeout Duration `toml:"statement_timeout"`
	// PasswordEnv names the environment variable holding the PostgreSQL
	// password, so that no secret sits in the file. Without it the URL's
	// password, libpq's PGPASSWORD or ~/.pgpass apply.
	PasswordEnv string `toml:"password_env"`
	// Password is PasswordEnv's value, read by ApplyEnv; never from the file.
	Password string `toml:"-"`
}

// IsPostgres reports whether the database is PostgreSQL (postgres:// or
// postgresql://).
func (d *D1Database) IsPostgres() bool { return isPostgresURL(d.URL) }

func isPostgresURL(u string) bool {
	return strings.HasPrefix(u, "postgres://") || strings.HasPrefix(u, "postgresql://")
}

// checkStore checks what a [[d1_databases]] and an
// [[analytics_engine_datasets]] entry (entry i of table) share: a binding,
// unique among seen; a url, sqlite:// or postgres:// (or none, when
// optional); a password_env for PostgreSQL only, and set. where names the
// entry for further messages; pg is whether its url is PostgreSQL.
func checkStore(bad func(string, ...any), seen map[string]bool, table string, i int, binding, rawURL string, optional bool, password, passwordEnv string) (where string, pg bool) {
	switch {
	case binding == "":
		bad("%s[%d]: binding is required", table, i)
	case seen[binding]:
		bad("%s[%d]: binding %q declared twice", table, i, binding)
	}
	seen[binding] = true
	where = fmt.Sprintf("%s[%d] (%s)", table, i, binding)
	pg = isPostgresURL(rawURL)
	if !pg && !strings.HasPrefix(rawURL, "sqlite://") && (rawURL != "" || !optional) {
		bad("%s: url = %q: want sqlite://PATH or postgres://user@host:5432/db", where, redactURL(rawURL))
	}
	switch {
	case passwordEnv != "" && !pg:
		bad("%s: password_env applies to PostgreSQL only", where)
	case passwordEnv != "" && password == "":
		bad("%s: password_env = %q: the environment variable is not set", where, passwordEnv)
	}
	return where, pg
}

// redactURL returns u with its password, if any, replaced by "xxxxx".
func redactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		if strings.Contains(u, "@") {
			return "(unparsable URL)"
		}
		return u
	}
	if _, has := p.User.Password(); !has {
		return u
	}
	return p.Redacted()
}

// AnalyticsDataset is one [[analytics_engine_datasets]] entry.
type AnalyticsDataset struct {
	Binding string `toml:"binding"`
	Dataset string `toml:"dataset"`
	URL     string `toml:"url"` // sqlite://… or postgres://… where points are stored
	// PasswordEnv and Password are as in D1Database, for a postgres:// URL.
	PasswordEnv string `toml:"password_env"`
	Password    string `toml:"-"`
}

// Defaults returns the settings used where the file is silent.
func Defaults() File {
	t := true
	return File{
		Listen:          "127.0.0.1:8787",
		AdminListen:     "127.0.0.1:8788",
		DataDir:         "./data",
		LogLevel:        "info",
		LogFormat:       "json",
		SyncWrites:      &t,
		EventTimeout:    Duration{10 * time.Second},
		IdleTimeout:     Duration{2 * time.Minute},
		ShutdownGrace:   Duration{30 * time.Second},
		ShutdownTimeout: Duration{time.Minute},
		ReadTimeout:     Duration{30 * time.Second},
		Metrics:         "main",
		MemoryLimitMB:   128,
		QueueDepth:      1024,
		FetchBatch:      16,
		MaxBodyBytes:    1 << 20,
		Vars:            map[string]string{},

		InstanceStartWait: Duration{5 * time.Second},
	}
}

// Load reads a config file over the defaults, applies environment
// overrides (Env) and validates it.
func Load(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	f, err := Parse(b, path)
	if err != nil {
		return nil, err
	}
	f.ApplyEnv(os.LookupEnv)
	if err := f.Validate(); err != nil {
		return nil, err
	}
	return f, nil
}

// Parse decodes TOML over the defaults. Unknown settings are errors, except
// unknown top-level tables ([auth], [proxy]… of an application built on the
// host), which are kept in Extra for their owners; CheckExtra then refuses
// the tables no owner claimed.
func Parse(b []byte, name string) (*File, error) {
	f := Defaults()
	meta, err := toml.Decode(string(b), &f)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", name, err)
	}
	var raw map[string]any
	if _, err := toml.Decode(string(b), &raw); err != nil {
		return nil, fmt.Errorf("config %s: %w", name, err)
	}
	f.Extra = map[string]any{}
	var unknown []string
	for _, k := range meta.Undecoded() {
		if t, isTable := raw[k[0]].(map[string]any); isTable && !coreKey(k[0]) {
			f.Extra[k[0]] = t // a whole table the core has no field for
			continue
		}
		unknown = append(unknown, k.String())
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, fmt.Errorf("config %s: unknown setting(s): %s", name, strings.Join(unknown, ", "))
	}
	if f.Vars == nil {
		f.Vars = map[string]string{}
	}
	f.meta, f.path = meta, name
	return &f, nil
}

// coreKey reports whether File has a field for the top-level key.
func coreKey(key string) bool {
	t := reflect.TypeFor[File]()
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ","); name == key {
			return true
		}
	}
	return false
}

// CheckExtra returns an error naming every top-level table of the file that
// neither the core nor one of the owners' tables (e.g. the edge API's
// [auth], [proxy]…) claims.
func (f *File) CheckExtra(owned ...string) error {
	var unknown []string
	for k := range f.Extra {
		if !contains(owned, k) {
			unknown = append(unknown, "["+k+"]")
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("config %s: unknown table(s): %s", f.path, strings.Join(unknown, ", "))
	}
	return nil
}

// DecodeExtra decodes the [name] table into v (for the edge API's own
// settings); absent tables leave v unchanged.
func (f *File) DecodeExtra(name string, v any) error {
	t, ok := f.Extra[name]
	if !ok {
		return nil
	}
	var ib strings.Builder
	if err := toml.NewEncoder(&ib).Encode(t); err != nil {
		return fmt.Errorf("config [%s]: %w", name, err)
	}
	meta, err := toml.Decode(ib.String(), v)
	if err != nil {
		return fmt.Errorf("config [%s]: %w", name, err)
	}
	if und := meta.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = name + "." + k.String()
		}
		return fmt.Errorf("config: unknown setting(s): %s", strings.Join(keys, ", "))
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// ApplyEnv overrides settings from the environment (env wins over the
// file): EDGESHARD_LISTEN, EDGESHARD_ADMIN_LISTEN, EDGESHARD_ADMIN_TOKEN,
// EDGESHARD_DATA_DIR, EDGESHARD_NODE_ID, EDGESHARD_LOG_LEVEL; and any [vars] entry by an
// environment variable of the same name (e.g. COUNTER_DO_MODE). It reads
// each [[d1_databases]] password_env into Password.
func (f *File) ApplyEnv(lookup func(string) (string, bool)) {
	set := func(name string, dst *string) {
		if v, ok := lookup(name); ok && v != "" {
			*dst = v
		}
	}
	set("EDGESHARD_LISTEN", &f.Listen)
	set("EDGESHARD_ADMIN_LISTEN", &f.AdminListen)
	set("EDGESHARD_ADMIN_TOKEN", &f.AdminToken)
	set("EDGESHARD_DATA_DIR", &f.DataDir)
	set("EDGESHARD_NODE_ID", &f.NodeID)
	set("EDGESHARD_CACHE_DIR", &f.CacheDir)
	set("EDGESHARD_LOG_LEVEL", &f.LogLevel)
	set("EDGESHARD_METRICS_TOKEN", &f.MetricsToken)
	for k := range f.Vars {
		if v, ok := lookup(k); ok {
			f.Vars[k] = v
		}
	}
	for i := range f.D1Databases {
		if d := &f.D1Databases[i]; d.PasswordEnv != "" {
			d.Password, _ = lookup(d.PasswordEnv)
		}
	}
	for i := range f.Analytics {
		if a := &f.Analytics[i]; a.PasswordEnv != "" {
			a.Password, _ = lookup(a.PasswordEnv)
		}
	}
}

// Validate checks the whole file and reports every problem at once.
func (f *File) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if _, _, err := net.SplitHostPort(f.Listen); err != nil {
		bad("listen = %q: want host:port", f.Listen)
	}
	if f.AdminListen != "" {
		if _, _, err := net.SplitHostPort(f.AdminListen); err != nil {
			bad("admin_listen = %q: want host:port", f.AdminListen)
		}
	}
	if f.DataDir == "" {
		bad("data_dir must not be empty")
	}
	if f.NodeID != "" && !abi.ValidNodeID(f.NodeID) {
		bad("node_id = %q: want 1-%d characters of [A-Za-z0-9._-] (or leave it empty: data_dir keeps one)", f.NodeID, abi.MaxNodeID)
	}
	switch f.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level = %q: want debug, info, warn or error", f.LogLevel)
	}
	switch f.LogFormat {
	case "json", "console":
	default:
		bad("log_format = %q: want json or console", f.LogFormat)
	}
	if f.EventTimeout.Duration <= 0 {
		bad("event_timeout must be positive")
	}
	if f.IdleTimeout.Duration <= 0 {
		bad("idle_timeout must be positive")
	}
	if f.ReadTimeout.Duration <= 0 {
		bad("read_timeout must be positive")
	}
	if f.ShutdownTimeout.Duration < f.ShutdownGrace.Duration {
		bad("shutdown_timeout = %v must be at least shutdown_grace = %v", f.ShutdownTimeout.Duration, f.ShutdownGrace.Duration)
	}
	switch f.Metrics {
	case "main", "admin", "off":
	default:
		bad("metrics = %q: want main, admin or off", f.Metrics)
	}
	if f.Metrics == "admin" && f.AdminToken == "" {
		bad("metrics = \"admin\" needs the admin API: set admin_token or EDGESHARD_ADMIN_TOKEN")
	}
	if f.MemoryLimitMB < 16 || f.MemoryLimitMB > 4096 {
		bad("memory_limit_mb = %d: want 16..4096", f.MemoryLimitMB)
	}
	if n := f.InstanceMemoryBudgetMB; n < -1 || (n > 0 && n < 16) {
		bad("instance_memory_budget_mb = %d: want 0 (half of the machine's memory), -1 (no budget) or at least 16", n)
	}
	if f.InstanceStartWait.Duration <= 0 {
		bad("instance_start_wait must be positive")
	}
	if f.QueueDepth < 1 {
		bad("queue_depth must be ≥ 1")
	}
	if f.FetchBatch < 1 || f.FetchBatch > 1024 {
		bad("fetch_batch = %d: want 1 (every request on its own) to 1024", f.FetchBatch)
	}
	if f.MaxBodyBytes < 1 {
		bad("max_body_bytes must be ≥ 1")
	}
	f.WebSocket.validate(bad)
	if f.Storage.MinFreeMB < 0 {
		bad("storage.min_free_mb = %d: want ≥ 0 (0: the default, 256)", f.Storage.MinFreeMB)
	}
	if v := f.Storage.ValueLogFileMB; v < 0 || v > 2047 {
		bad("storage.value_log_file_mb = %d: want 1..2047 (0: the default, 64)", v)
	}
	if v := f.Storage.MemtableMB; v < 0 || v > 1024 {
		bad("storage.memtable_mb = %d: want 1..1024 (0: the default, 8)", v)
	}
	for _, c := range []struct {
		name string
		v    int
		def  string
	}{
		{"block_cache_mb", f.Storage.BlockCacheMB, "8; -1: none"},
		{"index_cache_mb", f.Storage.IndexCacheMB, "8; -1: unbounded"},
		{"shard_cache_mb", f.Storage.ShardCacheMB, "32; -1: none"},
	} {
		if c.v < -1 {
			bad("storage.%s = %d: want -1 or more (0: the default, %s)", c.name, c.v, c.def)
		}
	}
	f.Limits.check("limits.", bad)
	dbs := map[string]bool{}
	for i, d := range f.D1Databases {
		if d.Binding == ShardSQL {
			bad("d1_databases[%d]: binding %q is reserved: a durable object binding's sql = %q gives each shard its own database", i, d.Binding, ShardSQL)
		}
		where, pg := checkStore(bad, dbs, "d1_databases", i, d.Binding, d.URL, false, d.Password, d.PasswordEnv)
		if pg {
			if _, err := url.Parse(d.URL); err != nil {
				bad("%s: url = %q: not a URL", where, redactURL(d.URL))
			}
		}
		switch strings.ToUpper(d.Synchronous) {
		case "", "FULL", "NORMAL":
		default:
			bad("%s: synchronous = %q: want FULL or NORMAL", where, d.Synchronous)
		}
		if pg && d.Synchronous != "" {
			bad("%s: synchronous applies to SQLite only (PostgreSQL commits durably as the server is configured)", where)
		}
		if d.MaxConns < 0 || d.MaxConns > 1000 {
			bad("%s: max_conns = %d: want 0 (the default, max(4, GOMAXPROCS)) or 1..1000", where, d.MaxConns)
		}
		switch {
		case d.StatementTimeout.Duration < 0:
			bad("%s: statement_timeout must not be negative", where)
		case !pg && d.StatementTimeout.Duration != 0:
			bad("%s: statement_timeout applies to PostgreSQL only", where)
		}
	}
	ae := map[string]bool{}
	for i, a := range f.Analytics {
		checkStore(bad, ae, "analytics_engine_datasets", i, a.Binding, a.URL, true, a.Password, a.PasswordEnv)
	}
	names := map[string]bool{}
	for i, b := range f.DurableObjects.Bindings {
		where := fmt.Sprintf("durable_objects.bindings[%d]", i)
		if b.Name != "" {
			where += " (" + b.Name + ")"
		}
		switch {
		case b.Name == "":
			bad("%s: name is required", where)
		case names[b.Name]:
			bad("%s: name declared twice", where)
		}
		names[b.Name] = true
		if b.Module == "" {
			bad("%s: module is required (path to a .wasm file)", where)
		}
		if b.Shards < 0 || b.Shards > 65536 {
			bad("%s: shards = %d: want 0 (one object per name) or 1..65536", where, b.Shards)
		}
		if b.SQL != "" && b.SQL != ShardSQL && !dbs[b.SQL] {
			bad("%s: sql = %q: no [[d1_databases]] with that binding (or %q: a database per shard)", where, b.SQL, ShardSQL)
		}
		if b.Analytics != "" && !ae[b.Analytics] {
			bad("%s: analytics = %q: no [[analytics_engine_datasets]] with that binding", where, b.Analytics)
		}
		b.Limits.check(where+": limits.", bad)
		checkLogCodes(where+": ", b.LogCodes, bad)
		if len(b.FetchHosts) == 0 && len(b.FetchAllowPrivate) == 0 && (b.FetchTimeout != nil || b.FetchMaxResponseBytes != 0) {
			bad("%s: fetch_timeout and fetch_max_response_bytes need fetch_hosts or fetch_allow_private", where)
		}
		if b.FetchMaxResponseBytes < 0 || b.FetchTimeout != nil && b.FetchTimeout.Duration < 0 {
			bad("%s: fetch_timeout and fetch_max_response_bytes must not be negative", where)
		}
	}
	for i, b := range f.DurableObjects.Bindings {
		for _, c := range b.Calls {
			if !names[c] {
				bad("durable_objects.bindings[%d] (%s): calls %q: no binding of that name", i, b.Name, c)
			}
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("config %s: %w", f.path, errors.Join(errs...))
}
