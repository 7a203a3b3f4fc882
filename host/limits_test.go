package host_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/testutil"
)

// TestHTTPInputLimits: the /do route refuses a body over MaxBodyBytes (413
// body_too_large, before any shard runs) and an object name over
// host.MaxNameBytes (400 bad_key).
func TestHTTPInputLimits(t *testing.T) {
	f := startMemory(t, func(c *host.Config) {
		c.MaxBodyBytes = 1 << 10
	})
	srv := f.serve(t)
	do := func(path string, body string) (int, string) {
		return testutil.Do(t, "POST", srv.URL+path, body, "Content-Type", "text/plain")
	}
	if st, body := do("/do/COUNTER/a/increment", strings.Repeat("x", 1<<10)); st != 200 {
		t.Fatalf("body at the limit: %d %s", st, body)
	}
	if st, body := do("/do/COUNTER/a/increment", strings.Repeat("x", 1<<10+1)); st != 413 || !strings.Contains(body, `"body_too_large"`) {
		t.Fatalf("body over the limit: %d %s", st, body)
	}
	if got := f.count(t, "a"); got != 1 {
		t.Fatalf("count %d: the refused request reached the shard", got)
	}
	if st, body := do("/do/COUNTER/"+strings.Repeat("k", host.MaxNameBytes+1)+"/increment", ""); st != 400 || !strings.Contains(body, `"bad_key"`) {
		t.Fatalf("name over %d bytes: %d %s", host.MaxNameBytes, st, body)
	}
	if st, body := do("/do/COUNTER/"+strings.Repeat("k", host.MaxNameBytes)+"/increment", ""); st != 200 {
		t.Fatalf("name of %d bytes: %d %s", host.MaxNameBytes, st, body)
	}
}

// TestQueueDepthBoundsWaitingEvents: a shard holds at most QueueDepth
// waiting events; beyond that a request fails at once with ErrOverloaded
// (503 shard_overloaded) instead of queueing without bound, and other
// shards are not affected.
func TestQueueDepthBoundsWaitingEvents(t *testing.T) {
	f := startMemory(t, func(c *host.Config) {
		c.QueueDepth = 2
		c.EventTimeout = 2 * time.Second
	})
	ns, _ := f.h.Namespace("COUNTER")
	spun := make(chan error, 1)
	go func() {
		_, err := ns.Fetch(context.Background(), "busy", &abi.Request{Method: "POST", Path: "/spin"})
		spun <- err
	}()
	// Wait until the spin runs (the queue is empty again), then fill it.
	waitFor(t, func() bool {
		st, ok := ns.ShardStat("busy")
		return ok && st.Live && st.QueueDepth == 0
	}, "the spin to start")
	time.Sleep(50 * time.Millisecond)
	queued := make(chan error, 2)
	for i := 0; i < 2; i++ {
		go func() {
			_, err := ns.Fetch(context.Background(), "busy", &abi.Request{Method: "POST", Path: "/increment"})
			queued <- err
		}()
	}
	waitFor(t, func() bool { st, _ := ns.ShardStat("busy"); return st.QueueDepth == 2 }, "two queued events")
	_, err := ns.Fetch(context.Background(), "busy", &abi.Request{Method: "POST", Path: "/increment"})
	if !errors.Is(err, host.ErrOverloaded) {
		t.Fatalf("third waiting event: %v, want ErrOverloaded", err)
	}
	if st, code := host.ErrorStatus(err); st != 503 || code != "shard_overloaded" {
		t.Fatalf("maps to %d %s", st, code)
	}
	if _, err := ns.Fetch(context.Background(), "other", &abi.Request{Method: "POST", Path: "/increment"}); err != nil {
		t.Fatalf("another shard: %v", err)
	}
	if err := <-spun; !errors.Is(err, host.ErrTimeout) {
		t.Fatalf("spin: %v", err)
	}
	for i := 0; i < 2; i++ {
		if err := <-queued; err != nil {
			t.Fatalf("queued event after the spin: %v", err)
		}
	}
	if got := f.count(t, "busy"); got != 2 {
		t.Fatalf("count %d, want the 2 queued increments", got)
	}
}
