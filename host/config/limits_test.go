package config

import (
	"strings"
	"testing"
	"time"
)

// TestLimitsParse: [limits] and a binding's limits and log_codes are read
// (absent settings stay nil: the default, or for a binding the [limits]
// value), and bad values are refused naming the setting.
func TestLimitsParse(t *testing.T) {
	f, err := Parse([]byte(`
[limits]
event_write_bytes = 1048576
storage_quota_bytes = 0
alarm_rearm_interval = "250ms"

[[durable_objects.bindings]]
name = "A"
module = "a.wasm"
log_codes = ["E-VIBECODR-2130", "E-X-*"]
limits = { event_log_lines = 5, alarm_rearm_burst = 3 }

[[durable_objects.bindings]]
name = "B"
module = "b.wasm"
log_codes = []
`), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Validate(); err != nil {
		t.Fatal(err)
	}
	l := f.Limits
	if *l.EventWriteBytes != 1<<20 || *l.StorageQuotaBytes != 0 || l.AlarmRearmInterval.Duration != 250*time.Millisecond || l.EventWriteKeys != nil {
		t.Fatalf("[limits] = %+v", l)
	}
	a, _ := f.Binding("A")
	if a.Limits == nil || *a.Limits.EventLogLines != 5 || *a.Limits.AlarmRearmBurst != 3 || a.Limits.EventWriteBytes != nil {
		t.Fatalf("A's limits = %+v", a.Limits)
	}
	if strings.Join(a.LogCodes, ",") != "E-VIBECODR-2130,E-X-*" {
		t.Fatalf("A's log codes %q", a.LogCodes)
	}
	b, _ := f.Binding("B")
	if b.LogCodes == nil || len(b.LogCodes) != 0 || b.Limits != nil {
		t.Fatalf("B: log codes %#v (want empty, not absent), limits %v", b.LogCodes, b.Limits)
	}
	if _, ok := f.Binding("C"); ok {
		t.Fatal("found binding C")
	}

	bad := `
[limits]
event_write_keys = -1
alarm_rearm_interval = "-1s"

[[durable_objects.bindings]]
name = "A"
module = "a.wasm"
log_codes = ["", "E-*-1"]
limits = { alarm_rearm_burst = 0, storage_quota_bytes = -5 }
`
	f, err = Parse([]byte(bad), "bad.toml")
	if err != nil {
		t.Fatal(err)
	}
	err = f.Validate()
	for _, want := range []string{
		"limits.event_write_keys = -1: want ≥ 0 (0 removes the limit)",
		`limits.alarm_rearm_interval = -1s`,
		`durable_objects.bindings[0] (A): log_codes: "": want a code`,
		`durable_objects.bindings[0] (A): log_codes: "E-*-1"`,
		"durable_objects.bindings[0] (A): limits.alarm_rearm_burst = 0: want ≥ 1",
		"durable_objects.bindings[0] (A): limits.storage_quota_bytes = -5",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate = %v, want it to contain %q", err, want)
		}
	}
	if _, err := Parse([]byte("[limits]\nevent_write_byte = 1\n"), "t.toml"); err == nil || !strings.Contains(err.Error(), "limits.event_write_byte") {
		t.Fatalf("a misspelt limit: %v", err)
	}
}
