package server

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/host/config"
)

// TestBindingCallsAndFetch: serve maps a binding's calls and fetch_*
// settings to the host binding, which then grants the call and fetch
// groups; the config refuses calls naming no binding and fetch settings
// without hosts.
func TestBindingCallsAndFetch(t *testing.T) {
	cfg := parseConfig(t, `
[edge]
enabled = false

[[durable_objects.bindings]]
name = "ROOMS"
module = "r.wasm"
calls = ["COUNTERS", "ROOMS"]
fetch_hosts = ["api.example.com", "*.hooks.example"]
fetch_allow_private = ["10.0.0.5:8080"]
fetch_timeout = "2s"
fetch_max_response_bytes = 65536

[[durable_objects.bindings]]
name = "COUNTERS"
module = "c.wasm"
`)
	b, _, err := HostBinding(cfg, "ROOMS", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	want := &host.FetchConfig{Hosts: []string{"api.example.com", "*.hooks.example"}, AllowPrivate: []string{"10.0.0.5:8080"}, Timeout: 2 * time.Second, MaxResponseBytes: 65536}
	if !slices.Equal(b.Calls, []string{"COUNTERS", "ROOMS"}) || !reflect.DeepEqual(b.Fetch, want) {
		t.Fatalf("ROOMS: calls %q, fetch %+v", b.Calls, b.Fetch)
	}
	if g := b.Grants(); !slices.Contains(g, "call") || !slices.Contains(g, "fetch") {
		t.Fatalf("ROOMS grants %q", g)
	}
	c, _, _ := HostBinding(cfg, "COUNTERS", noEnv)
	if c.Calls != nil || c.Fetch != nil || slices.Contains(c.Grants(), "call") || slices.Contains(c.Grants(), "fetch") {
		t.Fatalf("COUNTERS: %+v grants %q", c, c.Grants())
	}
	for _, tc := range []struct{ toml, want string }{
		{`calls = ["NOPE"]`, `calls "NOPE": no binding of that name`},
		{`fetch_timeout = "1s"`, "fetch_timeout and fetch_max_response_bytes need fetch_hosts"},
		{"fetch_hosts = [\"a.example\"]\nfetch_max_response_bytes = -1", "must not be negative"},
	} {
		f, err := config.Parse([]byte("[[durable_objects.bindings]]\nname = \"X\"\nmodule = \"x.wasm\"\n"+tc.toml+"\n"), "edgeshard.toml")
		if err == nil {
			err = f.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.toml, err, tc.want)
		}
	}
}
