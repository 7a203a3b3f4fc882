//go:build !wasip1

// Package ccounter is examples/counter in C (src/counter.c), built with clang
// against abi/include/edgeshard.h; its test builds it and runs the Go
// counter's conformance suite against it.
package ccounter

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/conformance"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/harness"
	"github.com/edgeshard/edgeshard/internal/testutil"
)

// build compiles src/counter.c (skipped without clang unless CI=true).
func build(t *testing.T) string { return testutil.BuildC(t, "", "src/counter.c") }

// TestConformance: the C counter passes the Go counter's suite
// (examples/counter/conformance.json) on both storage backends.
func TestConformance(t *testing.T) {
	conformance.RunEachBackend(t, build(t), "../counter/conformance.json", conformance.Options{CacheDir: testutil.CacheDir()})
}

// TestRunawayIsStopped: POST /spin loops forever in C; the host's deadline
// rewrite stops it at the event timeout like a Go guest's, and the counter
// goes on from storage.
func TestRunawayIsStopped(t *testing.T) {
	wasm := build(t)
	env := testutil.Host(t, harness.Memory(), harness.Bindings(host.Binding{Name: "COUNTER", Module: wasm}),
		harness.Configure(func(c *host.Config) { c.EventTimeout = 300 * time.Millisecond }))
	fetch := func(method, path string) (*abi.Response, error) {
		return env.Host.Fetch(context.Background(), "COUNTER", "c", &abi.Request{Method: method, Path: path})
	}
	if resp, err := fetch("POST", "/increment"); err != nil || resp.Status != 200 {
		t.Fatalf("increment: %v %v", resp, err)
	}
	t0 := time.Now()
	if _, err := fetch("POST", "/spin"); err == nil || !strings.Contains(err.Error(), "timeout") && !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("spin: %v, want a timeout", err)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("spin stopped after %v", d)
	}
	resp, err := fetch("GET", "/")
	if err != nil || resp.Status != 200 || string(resp.Body) != `{"count":1,"version":"c"}` {
		t.Fatalf("after the runaway: %v %v", resp, err)
	}
}
