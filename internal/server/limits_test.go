package server

import (
	"slices"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/host/config"
)

// TestBindingLimitsAndLogCodes: serve maps [limits] and a binding's
// limits to host.Limits (absent: the default or the host's; 0: no limit),
// and gives a binding without log_codes none, unless the edge API uses it
// for runtime events or counters: then the flush codes its plugin logs
// and the runbook alerts on.
func TestBindingLimitsAndLogCodes(t *testing.T) {
	cfg := parseConfig(t, `
[limits]
event_write_bytes = 1000
storage_quota_bytes = 0
alarm_rearm_interval = "0s"

[[durable_objects.bindings]]
name = "COUNTER_SHARD"
module = "c.wasm"
sql = "DB"

[[durable_objects.bindings]]
name = "RUNTIME_EVENT_SHARD"
module = "e.wasm"
sql = "DB"
analytics = "AE"
log_codes = ["E-VIBECODR-2130"]

[[durable_objects.bindings]]
name = "RATE_LIMIT_SHARD"
module = "r.wasm"

[[durable_objects.bindings]]
name = "PUBLIC"
module = "p.wasm"
limits = { event_write_bytes = 0, event_log_lines = 7 }

[[d1_databases]]
binding = "DB"
url = "sqlite://d1.db"

[[analytics_engine_datasets]]
binding = "AE"
`)
	for _, tc := range []struct {
		binding string
		codes   []string
		grants  []string
		limits  host.Limits
	}{
		{"COUNTER_SHARD", []string{"E-VIBECODR-2140", "E-VIBECODR-2141"}, []string{"storage", "alarm", "vars", "log", "websocket", "sql"},
			host.Limits{EventWriteBytes: 1000, EventWriteKeys: 10_000, EventLogLines: 100, EventLogBytes: 256 << 10, StorageQuotaBytes: -1, ShardSQLBytes: 1 << 30, AlarmRearmInterval: -1, AlarmRearmBurst: 10}},
		{"RUNTIME_EVENT_SHARD", []string{"E-VIBECODR-2130"}, []string{"storage", "alarm", "vars", "log", "websocket", "sql", "analytics"},
			host.Limits{EventWriteBytes: 1000, EventWriteKeys: 10_000, EventLogLines: 100, EventLogBytes: 256 << 10, StorageQuotaBytes: -1, ShardSQLBytes: 1 << 30, AlarmRearmInterval: -1, AlarmRearmBurst: 10}},
		{"RATE_LIMIT_SHARD", []string{}, []string{"storage", "alarm", "vars", "log", "websocket"},
			host.Limits{EventWriteBytes: 1000, EventWriteKeys: 10_000, EventLogLines: 100, EventLogBytes: 256 << 10, StorageQuotaBytes: -1, ShardSQLBytes: 1 << 30, AlarmRearmInterval: -1, AlarmRearmBurst: 10}},
		{"PUBLIC", []string{}, []string{"storage", "alarm", "vars", "log", "websocket"},
			host.Limits{EventWriteBytes: -1, EventWriteKeys: 10_000, EventLogLines: 7, EventLogBytes: 256 << 10, StorageQuotaBytes: -1, ShardSQLBytes: 1 << 30, AlarmRearmInterval: -1, AlarmRearmBurst: 10}},
	} {
		b, hostLimits, err := HostBinding(cfg, tc.binding, noEnv)
		if err != nil {
			t.Fatal(err)
		}
		if b.LogCodes == nil || !slices.Equal(b.LogCodes, tc.codes) {
			t.Errorf("%s: log codes %#v, want %q", tc.binding, b.LogCodes, tc.codes)
		}
		if !slices.Equal(b.Grants(), tc.grants) {
			t.Errorf("%s: grants %q, want %q", tc.binding, b.Grants(), tc.grants)
		}
		if got := host.ResolveLimits(hostLimits, b.Limits); got != tc.limits {
			t.Errorf("%s: limits %+v, want %+v", tc.binding, got, tc.limits)
		}
	}
	if _, _, err := HostBinding(cfg, "NONE", noEnv); err == nil {
		t.Fatal("HostBinding of an unknown binding")
	}
	if got := host.ResolveLimits(hostLimits(&config.Limits{}), nil); got != host.DefaultLimits() {
		t.Fatalf("an empty [limits] resolves to %+v, want the defaults", got)
	}
	if d := host.DefaultLimits().AlarmRearmInterval; d != 100*time.Millisecond {
		t.Fatalf("default interval %v", d)
	}
}

// TestEdgeOffGivesNoDefaultCodes: without the edge API no binding gets
// its codes by default.
func TestEdgeOffGivesNoDefaultCodes(t *testing.T) {
	cfg := parseConfig(t, `
[edge]
enabled = false

[[durable_objects.bindings]]
name = "COUNTER_SHARD"
module = "c.wasm"
`)
	b, _, err := HostBinding(cfg, "COUNTER_SHARD", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if b.LogCodes == nil || len(b.LogCodes) != 0 {
		t.Fatalf("log codes %#v, want none", b.LogCodes)
	}
}
