package host_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/hostinternal"
)

// TestSetTraceOverridesConfig: a run-time switch overrides --trace for its
// shard either way, refuses a shard the binding cannot have, and is
// bounded.
func TestSetTraceOverridesConfig(t *testing.T) {
	f := startNative(t, map[string]hostinternal.NativeShard{"S": nativeCounter{}, "P": nativeCounter{}}, func(c *host.Config) {
		c.Bindings = []host.Binding{{Name: "S", Shards: 8}, {Name: "P"}}
		c.TraceShard = "S/1"
	})
	s, _ := f.h.Namespace("S")
	if !s.Tracing("1") || s.Tracing("2") {
		t.Fatal("Config.TraceShard not reflected")
	}
	if err := f.h.SetTrace("S", "1", false); err != nil || s.Tracing("1") {
		t.Fatalf("switch the configured shard off: %v, tracing %v", err, s.Tracing("1"))
	}
	if err := s.SetTrace("2", true); err != nil || !s.Tracing("2") {
		t.Fatalf("switch shard 2 on: %v", err)
	}
	if err := s.SetTrace("1", true); err != nil || !s.Tracing("1") {
		t.Fatalf("back to the config's: %v", err)
	}
	for _, bad := range []string{"8", "01", "x", ""} {
		if err := s.SetTrace(bad, true); !errors.Is(err, host.ErrBadKey) {
			t.Errorf("SetTrace(%q) = %v, want ErrBadKey", bad, err)
		}
	}
	if err := f.h.SetTrace("NOPE", "1", true); !errors.Is(err, host.ErrUnknownBinding) {
		t.Fatalf("unknown binding: %v", err)
	}

	// The cap counts shards switched on (shard 2 of S is one).
	p, _ := f.h.Namespace("P")
	for i := 0; i < host.MaxTracedShards-1; i++ {
		if err := p.SetTrace(fmt.Sprint("obj-", i), true); err != nil {
			t.Fatalf("shard %d: %v", i, err)
		}
	}
	if err := p.SetTrace("one-too-many", true); !errors.Is(err, host.ErrTooManyTraced) {
		t.Fatalf("past the cap: %v", err)
	}
	if err := p.SetTrace("obj-0", true); err != nil {
		t.Fatalf("switching on a traced shard again: %v", err)
	}
	if err := s.SetTrace("2", false); err != nil {
		t.Fatal(err)
	}
	if err := p.SetTrace("one-too-many", true); err != nil || !p.Tracing("one-too-many") {
		t.Fatalf("after one went off: %v", err)
	}
}
