package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/host/admin"
	"github.com/edgeshard/edgeshard/internal/harness"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/rs/zerolog"
)

// TestAdminCLI drives push, rollback and status against an in-process host
// and admin API.
func TestAdminCLI(t *testing.T) {
	const tok = "cli-token"
	env := testutil.Host(t, harness.LogLevel(zerolog.Disabled), harness.Admin(admin.Options{Token: tok}),
		harness.Bindings(host.Binding{Name: "COUNTER", Module: testutil.Plugin(t, "examples/counter", "-X main.version=test")}))
	h, ts := env.Host, env.Admin
	ns, _ := h.Namespace("COUNTER")
	ns.Fetch(context.Background(), "k", &abi.Request{Method: "POST", Path: "/increment"})
	sha1 := ns.Current().SHA256()

	cli := func(args ...string) (int, string, string) {
		var out, errb strings.Builder
		code := run(args, &out, &errb)
		return code, out.String(), errb.String()
	}
	t.Setenv("EDGESHARD_ADMIN_TOKEN", "")
	if code, _, stderr := cli("status", "--admin", ts.URL); code != 2 || !strings.Contains(stderr, "EDGESHARD_ADMIN_TOKEN") {
		t.Fatalf("status without token: %d %q", code, stderr)
	}
	if code, _, stderr := cli("status", "--admin", ts.URL, "--token", "wrong"); code != 1 || !strings.Contains(stderr, "unauthorized") {
		t.Fatalf("status with a wrong token: %d %q", code, stderr)
	}
	t.Setenv("EDGESHARD_ADMIN_TOKEN", tok) // from here on, the token comes from the environment

	code, out, stderr := cli("status", "--admin", ts.URL)
	if code != 0 {
		t.Fatalf("status: %d %s", code, stderr)
	}
	for _, want := range []string{"BINDING", "MODULE", "PREVIOUS", "COUNTER", sha1[:12], "per-name", "v1"} {
		if !strings.Contains(out, want) {
			t.Fatalf("status output lacks %q:\n%s", want, out)
		}
	}
	t.Logf("status:\n%s", out)

	bad := filepath.Join(t.TempDir(), "bad.wasm")
	os.WriteFile(bad, []byte("\x00asm\x01\x00\x00\x00 junk"), 0o644)
	if code, _, stderr := cli("push", "--admin", ts.URL, "--binding", "COUNTER", bad); code != 1 || !strings.Contains(stderr, "invalid module") || !strings.Contains(stderr, "invalid_module") {
		t.Fatalf("push of a broken module: %d %q", code, stderr)
	}
	if ns.Current().SHA256() != sha1 {
		t.Fatal("a refused push changed the module")
	}
	if code, _, _ := cli("push", "--admin", ts.URL, bad); code != 2 {
		t.Fatal("push without --binding accepted")
	}
	if code, _, stderr := cli("push", "--admin", ts.URL, "--binding", "NOPE", bad); code != 1 || !strings.Contains(stderr, "unknown_binding") {
		t.Fatalf("push to an unknown binding: %d %q", code, stderr)
	}

	v2 := testutil.Plugin(t, "examples/counter", "-X main.version=v2")
	// Flags after the file are accepted too.
	code, out, stderr = cli("push", v2, "--binding", "COUNTER", "--admin", ts.URL+"/")
	if code != 0 || !strings.Contains(out, "now serving") || !strings.Contains(out, sha1[:12]) {
		t.Fatalf("push: %d %q %q", code, out, stderr)
	}
	resp, _ := ns.Fetch(context.Background(), "k", &abi.Request{Method: "GET", Path: "/"})
	if !strings.Contains(string(resp.Body), `"version":"v2"`) {
		t.Fatalf("after push: %s", resp.Body)
	}
	code, out, _ = cli("status", "--admin", ts.URL)
	if code != 0 || !strings.Contains(out, sha1[:12]) || !strings.Contains(out, ns.Current().SHA256()[:12]) {
		t.Fatalf("status after push lacks current or previous:\n%s", out)
	}

	code, out, stderr = cli("rollback", "--admin", ts.URL, "--binding", "COUNTER")
	if code != 0 || !strings.Contains(out, "rolled back to "+sha1[:12]) {
		t.Fatalf("rollback: %d %q %q", code, out, stderr)
	}
	if ns.Current().SHA256() != sha1 {
		t.Fatal("rollback did not restore the first version")
	}
	code, out, _ = cli("status", "--admin", ts.URL, "--json")
	if code != 0 || !strings.Contains(out, `"sha256": "`+sha1) {
		t.Fatalf("status --json:\n%s", out)
	}
}
