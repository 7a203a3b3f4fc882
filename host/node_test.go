package host_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/hostinternal"
)

// TestReservedNodeVar: edgeshard.node answers the host's node id, which
// the config's [vars] cannot set, and is unset on a host without one.
func TestReservedNodeVar(t *testing.T) {
	for _, node := range []string{"pop-fra.1", ""} {
		f := startNative(t, map[string]hostinternal.NativeShard{"N": varShard{host.VarNodeID}}, func(c *host.Config) {
			c.NodeID = node
			c.Vars = map[string]string{host.VarNodeID: "from the config, ignored"}
			c.Bindings = []host.Binding{{Name: "N", Shards: 1}}
		})
		resp, err := f.h.Fetch(context.Background(), "N", "k", &abi.Request{Method: "GET", Path: "/"})
		if err != nil {
			t.Fatal(err)
		}
		want := node
		if want == "" {
			want = "(unset)"
		}
		if string(resp.Body) != want {
			t.Errorf("edgeshard.node = %q, want %q", resp.Body, want)
		}
	}
	cfg := host.DefaultConfig()
	cfg.DataDir, cfg.NodeID = t.TempDir(), "pop a"
	if _, err := host.New(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "node id") {
		t.Fatalf("a node id with a space: %v", err)
	}
}

// TestLoadNodeID: a data directory makes up its node id once and keeps
// it; a file that does not hold a node id is an error, not replaced.
func TestLoadNodeID(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	id, created, err := host.LoadNodeID(dir)
	if err != nil || !created || !abi.ValidNodeID(id) || !strings.HasPrefix(id, "n-") {
		t.Fatalf("first: %q %v %v", id, created, err)
	}
	again, created, err := host.LoadNodeID(dir)
	if err != nil || created || again != id {
		t.Fatalf("second: %q %v %v, want %q kept", again, created, err, id)
	}
	if err := os.WriteFile(filepath.Join(dir, host.NodeIDFile), []byte("pop-ams\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, _, err := host.LoadNodeID(dir); err != nil || got != "pop-ams" {
		t.Fatalf("an operator's file: %q %v", got, err)
	}
	if err := os.WriteFile(filepath.Join(dir, host.NodeIDFile), []byte("pop ams"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := host.LoadNodeID(dir); err == nil {
		t.Fatal("a file holding no node id was accepted")
	}
	for _, s := range []string{"", strings.Repeat("a", abi.MaxNodeID+1), "a/b", "é", "a\tb"} {
		if abi.ValidNodeID(s) {
			t.Errorf("%q is not a node id", s)
		}
	}
}
