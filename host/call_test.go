package host_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/harness"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/prometheus/client_golang/prometheus"
)

// Tests of shard_call on the real host: the outbound test plugin
// (host/testdata/plugins/outbound) on per-name bindings A and B that may
// call each other (and A itself), and C, which may call nobody.

const outboundPlugin = "host/testdata/plugins/outbound"

// startCalls starts a host with A, B (calls = A, B) and, with mutate, more.
func startCalls(t *testing.T, mutate func(*host.Config)) *fixture {
	t.Helper()
	mod := testutil.Plugin(t, outboundPlugin)
	fetch := &host.FetchConfig{Hosts: []string{"api.example.com"}}
	cfg := testutil.HostConfig(t, harness.Bindings(
		host.Binding{Name: "A", Module: mod, Calls: []string{"A", "B"}, Fetch: fetch},
		host.Binding{Name: "B", Module: mod, Calls: []string{"A"}, Fetch: fetch},
	))
	if mutate != nil {
		mutate(&cfg)
	}
	return start(t, cfg)
}

// chain asks binding/key for /chain with the hops, and how long it took.
func (f *fixture) chain(t *testing.T, binding, key, extra string, hops ...string) (string, time.Duration) {
	t.Helper()
	q := url.Values{"hop": hops}
	t0 := time.Now()
	resp, err := f.h.Fetch(context.Background(), binding, key, &abi.Request{Method: "GET", Path: "/chain?" + q.Encode() + extra})
	if err != nil {
		t.Fatalf("%s/%s /chain %v: %v", binding, key, hops, err)
	}
	return string(resp.Body), time.Since(t0)
}

// TestShardCall: a shard calls a shard of another binding by key and gets
// its answer; the called shard learns who called (X-Edgeshard-Caller) and
// its write is durable, as a /do request's would be.
func TestShardCall(t *testing.T) {
	f := startCalls(t, nil)
	got, _ := f.chain(t, "A", "a", "", "B/b")
	if want := "A/a -> [200] B/b end caller=A/a n=1"; got != want {
		t.Fatalf("A/a calling B/b answered %q, want %q", got, want)
	}
	got, _ = f.chain(t, "A", "a", "", "B/b")
	if want := "A/a -> [200] B/b end caller=A/a n=2"; got != want {
		t.Fatalf("second call: %q, want %q", got, want)
	}
	// Two hops, and the called shard's state is the one /do reaches.
	got, _ = f.chain(t, "A", "x", "", "B/b", "A/y")
	if want := "A/x -> [200] B/b -> [200] A/y end caller=B/b n=1"; got != want {
		t.Fatalf("A/x → B/b → A/y answered %q, want %q", got, want)
	}
	got, _ = f.chain(t, "B", "b", "")
	if want := "B/b end caller= n=3"; got != want {
		t.Fatalf("/do to B/b answered %q, want %q", got, want)
	}
	// A client cannot pass for a shard.
	resp, err := f.h.Fetch(context.Background(), "B", "b", &abi.Request{Method: "GET", Path: "/chain", Header: []abi.Header{{Name: host.CallerHeader, Value: "A/a"}}})
	if err != nil || !strings.Contains(string(resp.Body), "caller= ") {
		t.Fatalf("a client's %s reached the shard: %q, %v", host.CallerHeader, resp.Body, err)
	}
}

// TestShardCallDeadlock: A → B → A and A → A fail at once with
// ErrnoDeadlock, far inside the event deadline.
func TestShardCallDeadlock(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := startCalls(t, func(c *host.Config) { c.Registerer = reg })
	deadlock := fmt.Sprintf("err %d: ", abi.ErrnoDeadlock)
	for _, tc := range []struct {
		hops []string
		want string
	}{
		{[]string{"B/b", "A/a"}, "A/a -> [200] B/b " + deadlock},
		{[]string{"A/a"}, "A/a " + deadlock},
	} {
		got, took := f.chain(t, "A", "a", "", tc.hops...)
		if !strings.HasPrefix(got, tc.want) || !strings.Contains(got, "A/a is waiting for this call") {
			t.Errorf("A/a → %v answered %q, want %q…", tc.hops, got, tc.want)
		}
		if took > 2*time.Second {
			t.Errorf("A/a → %v took %s; the event deadline is %s", tc.hops, took, f.cfg.EventTimeout)
		}
	}
	// B's call back to A and A's call to itself were refused; A's call
	// to B was answered.
	for _, m := range []struct {
		binding, outcome string
		want             float64
	}{{"B", "deadlock", 1}, {"A", "deadlock", 1}, {"A", "ok", 1}} {
		if got := metricValue(t, reg, "edgeshard_shard_calls_total", map[string]string{"binding": m.binding, "outcome": m.outcome}); got != m.want {
			t.Errorf("edgeshard_shard_calls_total{binding=%s,outcome=%s} = %v, want %v", m.binding, m.outcome, got, m.want)
		}
	}
}

// TestShardCallCrossDeadlock: two requests that make A/a wait on B/b and
// B/b on A/a, neither in the other's chain: the host's wait graph refuses
// the second call at once, and the first then completes.
func TestShardCallCrossDeadlock(t *testing.T) {
	f := startCalls(t, nil)
	f.chain(t, "A", "a", "") // start both instances, so timing is the guests'
	f.chain(t, "B", "b", "")
	var wg sync.WaitGroup
	var viaB string
	wg.Go(func() {
		// B/b is busy for 500 ms, then calls A/a …
		viaB, _ = f.chain(t, "B", "b", "&spin=500ms", "A/a")
	})
	time.Sleep(150 * time.Millisecond)
	// … which meanwhile called B/b and waits for it.
	viaA, took := f.chain(t, "A", "a", "", "B/b")
	wg.Wait()
	if want := fmt.Sprintf("B/b err %d: ", abi.ErrnoDeadlock); !strings.HasPrefix(viaB, want) {
		t.Errorf("B/b → A/a answered %q, want %q…", viaB, want)
	}
	if want := "A/a -> [200] B/b end caller=A/a"; !strings.HasPrefix(viaA, want) {
		t.Errorf("A/a → B/b answered %q, want %q…", viaA, want)
	}
	if took > 3*time.Second {
		t.Errorf("A/a → B/b took %s", took)
	}
}

// TestShardCallDepth: a chain of abi.MaxCallDepth shards works; one more
// is refused with ErrnoLimit.
func TestShardCallDepth(t *testing.T) {
	f := startCalls(t, nil)
	hops := func(n int) []string {
		var h []string
		for i := 1; i <= n; i++ {
			h = append(h, fmt.Sprintf("A/d%d", i))
		}
		return h
	}
	got, _ := f.chain(t, "A", "d0", "", hops(abi.MaxCallDepth-1)...)
	if !strings.HasSuffix(got, fmt.Sprintf("A/d%d end caller=A/d%d n=1", abi.MaxCallDepth-1, abi.MaxCallDepth-2)) {
		t.Fatalf("a chain of %d shards answered %q", abi.MaxCallDepth, got)
	}
	got, _ = f.chain(t, "A", "e0", "", strings.Fields(strings.ReplaceAll(strings.Join(hops(abi.MaxCallDepth), " "), "/d", "/e"))...)
	if want := fmt.Sprintf("A/e%d err %d: call chain too deep", abi.MaxCallDepth-1, abi.ErrnoLimit); !strings.Contains(got, want) {
		t.Fatalf("a chain of %d shards answered %q, want …%q…", abi.MaxCallDepth+1, got, want)
	}
}

// TestShardCallNotGranted: a binding may call only those it lists; a
// module importing shard_call is refused on a binding that lists none.
func TestShardCallNotGranted(t *testing.T) {
	f := startCalls(t, nil)
	got, _ := f.chain(t, "B", "b", "", "B/other")
	if want := fmt.Sprintf("B/b err %d: binding not granted: binding B may not call \"B\"", abi.ErrnoNotGranted); !strings.HasPrefix(got, want) {
		t.Fatalf("B calling B answered %q, want %q…", got, want)
	}
	mod := testutil.Plugin(t, outboundPlugin)
	cfg := testutil.HostConfig(t, harness.Bindings(host.Binding{Name: "C", Module: mod, Fetch: &host.FetchConfig{Hosts: []string{"x.example"}}}))
	_, err := host.New(context.Background(), cfg)
	if !errors.Is(err, host.ErrInvalidModule) || !strings.Contains(err.Error(), "shard_call") {
		t.Fatalf("C without calls loaded the module: %v", err)
	}
	cfg = testutil.HostConfig(t, harness.Bindings(host.Binding{Name: "C", Module: mod, Calls: []string{"NOPE"}}))
	if _, err := host.New(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), `calls "NOPE": no such binding`) {
		t.Fatalf("calls naming no binding: %v", err)
	}
}

// TestShardCallDeadline: the called event ends by the caller's deadline,
// so a call to a shard that never answers cannot hold the caller past its
// own event timeout; the caller learns nothing of the called shard's
// crash but that it was stopped.
func TestShardCallDeadline(t *testing.T) {
	f := startCalls(t, func(c *host.Config) { c.EventTimeout = time.Second })
	f.chain(t, "B", "spin", "") // started, so the timing is the event's
	t0 := time.Now()
	resp, err := f.h.Fetch(context.Background(), "A", "a", &abi.Request{Method: "GET", Path: "/chain?hop=B/spin&path=/spin"})
	took := time.Since(t0)
	// The caller gets ErrnoDeadline at its deadline; it may still answer
	// before the host's interrupt stops it too (then the request times out).
	want := fmt.Sprintf("A/a err %d: the calling event's deadline passed waiting for B/spin; the called shard was stopped at that deadline", abi.ErrnoDeadline)
	if !errors.Is(err, host.ErrTimeout) && (err != nil || string(resp.Body) != want) {
		t.Fatalf("A/a calling a spinning shard: %v, %v; want a timeout or %q", resp, err, want)
	}
	if took > 2500*time.Millisecond {
		t.Fatalf("took %s with a 1 s event timeout", took)
	}
}

// ownerRouter routes a call to the host that owns its binding, as a
// cluster layer would (there over HTTP, carrying the chain and deadline).
type ownerRouter struct {
	owner map[string]**host.Host
}

func (r ownerRouter) RouteCall(ctx context.Context, c *host.Call) (*abi.Response, error) {
	return (*r.owner[c.Binding]).DeliverCall(ctx, c)
}

// TestShardCallAcrossHosts: with a CallRouter in front (Config.Calls), a
// call reaches the shard's owner on another host, and a chain that comes
// back to the first host is refused there as a deadlock.
func TestShardCallAcrossHosts(t *testing.T) {
	var h1, h2 *host.Host
	router := ownerRouter{owner: map[string]**host.Host{"A": &h1, "B": &h2}}
	mk := func() *host.Host {
		return startCalls(t, func(c *host.Config) {
			c.Calls = func(local host.CallRouter) host.CallRouter { return router }
		}).h
	}
	h1, h2 = mk(), mk()
	ask := func(h *host.Host, binding, key, path string) string {
		resp, err := h.Fetch(context.Background(), binding, key, &abi.Request{Method: "GET", Path: path})
		if err != nil {
			t.Fatal(err)
		}
		return string(resp.Body)
	}
	if got, want := ask(h1, "A", "a", "/chain?hop=B%2Fb"), "A/a -> [200] B/b end caller=A/a n=1"; got != want {
		t.Fatalf("A/a on host 1 calling B/b answered %q, want %q", got, want)
	}
	// B/b's state is on host 2 only.
	if got, want := ask(h2, "B", "b", "/chain"), "B/b end caller= n=2"; got != want {
		t.Fatalf("B/b on host 2: %q, want %q", got, want)
	}
	got := ask(h1, "A", "a", "/chain?hop=B%2Fb&hop=A%2Fa")
	if want := fmt.Sprintf("A/a -> [200] B/b err %d: ", abi.ErrnoDeadlock); !strings.HasPrefix(got, want) {
		t.Fatalf("A/a → B/b (host 2) → A/a answered %q, want %q…", got, want)
	}
}
