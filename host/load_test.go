package host_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/testutil"
)

// TestBindingsLoadConcurrently: host.New loads its bindings' modules in
// parallel; every binding is served, and a bad module among good ones
// fails New with an error naming that binding (the good ones are closed).
func TestBindingsLoadConcurrently(t *testing.T) {
	counter := testutil.Plugin(t, "examples/counter", "-X main.version=test")
	var bs []host.Binding
	for _, name := range []string{"A", "B", "C", "D", "E"} {
		bs = append(bs, host.Binding{Name: name, Module: counter})
	}
	f := start(t, counterConfig(t, func(c *host.Config) { c.Bindings = bs }))
	if got := len(f.h.Namespaces()); got != len(bs) {
		t.Fatalf("%d namespaces, want %d", got, len(bs))
	}
	for _, b := range bs {
		resp, err := f.h.Fetch(context.Background(), b.Name, "x", &abi.Request{Method: "POST", Path: "/increment"})
		if err != nil || resp.Status != 200 {
			t.Fatalf("%s: %v %v", b.Name, resp, err)
		}
	}

	bad := testutil.Plugin(t, "host/testdata/plugins/badabi")
	cfg := counterConfig(t, func(c *host.Config) {
		c.Bindings = append(bs[:2:2], host.Binding{Name: "BAD", Module: bad}, bs[2])
	})
	_, err := host.New(context.Background(), cfg)
	if err == nil || !errors.Is(err, host.ErrInvalidModule) || !strings.Contains(err.Error(), `binding "BAD"`) {
		t.Fatalf("host.New error = %v, want invalid module naming binding BAD", err)
	}
}
