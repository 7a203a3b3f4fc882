package edge

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/host/config"
)

func TestParseLimit(t *testing.T) {
	for in, want := range map[string]Limit{
		"60/m": {60, time.Minute}, "10/s": {10, time.Second}, "1000/h": {1000, time.Hour},
		" 5 / 10s ": {5, 10 * time.Second}, "100/minute": {100, time.Minute},
	} {
		got, err := ParseLimit(in)
		if err != nil || got != want {
			t.Errorf("ParseLimit(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "60", "x/m", "0/m", "-1/m", "60/d", "60/500ms", "60/48h", "60/1.5ms"} {
		if _, err := ParseLimit(in); err == nil {
			t.Errorf("ParseLimit(%q) accepted", in)
		}
	}
	if s := (Limit{60, time.Minute}).String(); s != "60/m" {
		t.Errorf("String = %q", s)
	}
}

const sampleTOML = `
listen = "127.0.0.1:8787"
[vars]
RUNTIME_EVENT_DO_MODE = "shadow"
COUNTER_DO_MODE = "off"

[edge]
shard_timeout = "3s"

[auth]
jwt_secret = "file-secret"
trust_user_header = "x-user-id"

[proxy]
allow_hosts = ["127.0.0.1:9000"]
trust_forwarded_for = true
timeout = "5s"
max_response_bytes = 1000
max_redirects = 0

[proxy.limits]
user = "30/m"
ip = "5/s"
host = "1000/h"

[runtime_events]
max_events = 100
max_payload_bytes = 2048

[reconcile]
interval = "0s"
`

func TestConfigFromFile(t *testing.T) {
	f, err := config.Parse([]byte(sampleTOML), "test.toml")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"COUNTER_DO_MODE": "primary", EnvJWTSecret: "env-secret"}
	cfg, enabled, err := ConfigFromFile(f, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil || !enabled {
		t.Fatalf("enabled %v, err %v", enabled, err)
	}
	want := DefaultConfig()
	want.ShardTimeout = 3 * time.Second
	want.EventMode, want.CounterMode = ModeShadow, ModePrimary // env wins over [vars]
	want.Auth.JWTSecret, want.Auth.TrustUserHeader = "env-secret", "X-User-Id"
	want.Proxy.AllowHosts = []string{"127.0.0.1:9000"}
	want.Proxy.TrustForwardedFor = true
	want.Proxy.Timeout = 5 * time.Second
	want.Proxy.MaxResponseBytes = 1000
	want.Proxy.MaxRedirects = -1
	want.Proxy.UserLimit, want.Proxy.IPLimit, want.Proxy.HostLimit = Limit{30, time.Minute}, Limit{5, time.Second}, Limit{1000, time.Hour}
	want.Events.MaxEvents, want.Events.MaxPayloadBytes = 100, 2048
	want.Reconcile.Interval = 0
	g, _ := json.Marshal(cfg)
	w, _ := json.Marshal(want)
	if string(g) != string(w) {
		t.Fatalf("config\n got %s\nwant %s", g, w)
	}
	// An env mode needs no [vars] entry.
	f, _ = config.Parse([]byte("[auth]\ntrust_user_header = \"X-User-Id\"\n"), "t.toml")
	cfg, _, err = ConfigFromFile(f, func(k string) (string, bool) {
		if k == VarEventMode {
			return "off", true
		}
		return "", false
	})
	if err != nil || cfg.EventMode != ModeOff || cfg.CounterMode != ModePrimary {
		t.Fatalf("env-only mode: %+v, %v", cfg, err)
	}
}

func TestConfigFromFileErrors(t *testing.T) {
	for toml, wantAll := range map[string][]string{
		"[vars]\nCOUNTER_DO_MODE = \"sometimes\"\n[auth]\njwt_secret = \"x\"\n":      {"COUNTER_DO_MODE", "primary, shadow or off"},
		"[proxy.limits]\nuser = \"lots\"\nbogus = \"1/m\"\n":                         {"proxy.limits.user", "proxy.limits.bogus", "bucket"},
		"[proxy]\nallow_hosts = [\"no-port\"]\n[auth]\njwt_secret = \"x\"\n":         {"allow_hosts"},
		"[auth]\njwt_secret = \"x\"\ncolour = \"red\"\n":                             {"auth.colour"},
		"[auth]\ntrust_user_header = \"X User\"\n":                                   {"trust_user_header"},
		"[runtime_events]\nmax_events = 99999\n[auth]\njwt_secret = \"x\"\n":         {"max_events"},
		"[reconcile]\ninterval = \"soon\"\n[auth]\njwt_secret = \"x\"\n":             {"invalid duration"},
		"[edge]\nshard_timeout = 5\n[auth]\njwt_secret = \"x\"\n":                    {"edge"},
		"[proxy]\nmax_redirects = 50\n[auth]\njwt_secret = \"x\"\n":                  {"max_redirects"},
		"[auth]\njwt_secret = \"x\"\n[vars]\nRUNTIME_EVENT_DO_MODE = \"primary \"\n": nil, // trimmed, fine
	} {
		f, err := config.Parse([]byte(toml), "t.toml")
		if err != nil {
			t.Fatalf("%q: parse: %v", toml, err)
		}
		_, _, err = ConfigFromFile(f, nil)
		if wantAll == nil {
			if err != nil {
				t.Errorf("%q: %v", toml, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%q: accepted", toml)
			continue
		}
		for _, w := range wantAll {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: error %q lacks %q", toml, err, w)
			}
		}
	}
	f, _ := config.Parse([]byte("[edge]\nenabled = false\n"), "t.toml")
	if _, enabled, err := ConfigFromFile(f, nil); err != nil || enabled {
		t.Fatalf("disabled edge: enabled %v err %v", enabled, err)
	}
}
