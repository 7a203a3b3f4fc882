package host_test

import (
	"context"
	"strings"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/testutil"
)

// TestInternalBindingIsNotServedOverHTTP: an Internal binding (the edge
// API's shards) answers /do exactly like a binding that does not exist —
// whatever the method, key or path — while in-process callers still reach
// it; other bindings are served as before.
func TestInternalBindingIsNotServedOverHTTP(t *testing.T) {
	f := startMemory(t, func(c *host.Config) {
		c.Bindings = append(c.Bindings, host.Binding{Name: "HIDDEN", Module: testutil.Plugin(t, "examples/counter", "-X main.version=test"), Internal: true})
	})
	srv := f.serve(t)
	do := func(method, path string) (int, string) { return testutil.Do(t, method, srv.URL+path, "body") }
	_, missing := do("POST", "/do/NOPE/k/increment")
	for _, p := range []string{"/do/HIDDEN/k/increment", "/do/HIDDEN/k/", "/do/HIDDEN/other/x?y=1"} {
		for _, m := range []string{"GET", "POST", "PUT", "DELETE"} {
			st, body := do(m, p)
			if st != 404 || body != strings.ReplaceAll(missing, "NOPE", "HIDDEN") {
				t.Fatalf("%s %s: %d %s, want the unknown-binding answer", m, p, st, body)
			}
		}
	}
	ns, _ := f.h.Namespace("HIDDEN")
	if _, err := ns.Fetch(context.Background(), "k", &abi.Request{Method: "POST", Path: "/increment"}); err != nil {
		t.Fatalf("in-process call: %v", err)
	}
	if resp, err := ns.Fetch(context.Background(), "k", &abi.Request{Method: "GET", Path: "/"}); err != nil || !strings.Contains(string(resp.Body), `"count":1`) {
		t.Fatalf("in-process read: %v %s", err, respBody(resp))
	}
	if st, body := do("POST", "/do/COUNTER/k/increment"); st != 200 {
		t.Fatalf("a public binding: %d %s", st, body)
	}
}
