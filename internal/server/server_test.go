package server

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/host/config"
	"github.com/edgeshard/edgeshard/internal/configtext"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

const testToken = "server-test-token"

// testConfig is a config with every component: the counter example, the
// counters plugin behind the edge API with its SQL database, the reconcile
// ticker, the admin API, all on free loopback ports in dir. edit, if set,
// rewrites the text (to break one component).
func testConfig(t *testing.T, dir string, edit func(string) string) *config.File {
	t.Helper()
	text := fmt.Sprintf(`listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
admin_token = %q
data_dir = %q
cache_dir = %q
shutdown_grace = "20s"
`, testToken, filepath.Join(dir, "data"), testutil.CacheDir()) +
		configtext.Binding("COUNTER", testutil.Plugin(t, "examples/counter", "-X main.version=v1"), 0, "", "") +
		configtext.Binding("COUNTER_SHARD", testutil.Plugin(t, "plugins/counters"), 2, "DB", "") +
		configtext.D1("DB", "sqlite://"+filepath.Join(dir, "d1.db")) + `
[auth]
trust_user_header = "X-User-Id"

[reconcile]
interval = "1h"
`
	if edit != nil {
		text = edit(text)
	}
	cfg := parseConfig(t, text)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func noEnv(string) (string, bool) { return "", false }

// parseConfig parses a config text, failing t if it does not parse.
func parseConfig(t *testing.T, text string) *config.File {
	t.Helper()
	cfg, err := config.Parse([]byte(text), "edgeshard.toml")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestServerStartsServesAndStops: every component starts in order, the
// server answers on both listeners, Stop stops them all (nothing keeps
// running), a second Stop does nothing and a stopped server does not start
// again.
func TestServerStartsServesAndStops(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs plugins")
	}
	dir := t.TempDir()
	cfg := testConfig(t, dir, nil)
	eng := testutil.Engine(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	s, err := New(cfg, Options{Watch: true, LookupEnv: noEnv, Engine: eng})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"databases", "host", "edge", "reconcile", "admin", "watch", "http"}
	if got := s.components(); !slices.Equal(got, want) {
		t.Fatalf("components %q, want %q", got, want)
	}
	if s.Addr() != "" || s.Host() != nil {
		t.Fatal("a server that has not started has an address or a host")
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	call := func(method, url, token string) (int, string) {
		t.Helper()
		return testutil.DoWith(t, client, method, url, "", "X-User-Id", "alice", "Authorization", testutil.Bearer(token))
	}
	base, adminBase := "http://"+s.Addr(), "http://"+s.AdminAddr()
	for _, c := range []struct {
		method, url, token string
		status             int
	}{
		{"GET", base + "/healthz", "", 200},
		{"GET", base + "/readyz", "", 200},
		{"GET", base + "/metrics", "", 200},
		{"POST", base + "/do/COUNTER/a/increment", "", 200},
		{"POST", base + "/posts/p1/views", "", 202},
		{"GET", adminBase + "/admin/bindings", "", 401},
		{"GET", adminBase + "/admin/bindings", testToken, 200},
		{"POST", adminBase + "/admin/jobs/reconcile-counters", testToken, 200},
		{"GET", adminBase + "/login", "", 200},               // the inspector's login form
		{"GET", adminBase + "/admin/series", testToken, 200}, // its charts, sampled from the server's registry
		{"GET", adminBase + "/ui/app.js", "", 401},           // the rest of it behind the token
	} {
		if st, body := call(c.method, c.url, c.token); st != c.status {
			t.Fatalf("%s %s: %d %s, want %d", c.method, c.url, st, body, c.status)
		}
	}
	if s.Edge() == nil || s.Handler() == nil {
		t.Fatal("no edge API or handler while running")
	}
	client.CloseIdleConnections()
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), time.Second); err == nil {
		t.Fatal("the main listener still accepts after Stop")
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Fatalf("a second Stop: %v", err)
	}
	if err := s.Start(context.Background()); err == nil {
		t.Fatal("a stopped server started again")
	}
}

// TestServerFailedStartLeavesNothingRunning breaks one component at a
// time — the edge API (no way to authenticate users), the admin listener
// and the main listener (their ports taken) — and checks that Start names
// it, that the components started before it were stopped (no goroutine
// left; the data directory opens again), and that the later ones never
// started.
func TestServerFailedStartLeavesNothingRunning(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs plugins")
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenAddr := taken.Addr().String()
	eng := testutil.Engine(t)
	for _, c := range []struct {
		name, want string
		edit       func(string) string
	}{
		{"edge", "start edge: edge: auth", func(s string) string {
			return strings.Replace(s, `trust_user_header = "X-User-Id"`, "", 1)
		}},
		{"admin", "start admin: admin_listen " + takenAddr, func(s string) string {
			return strings.Replace(s, `admin_listen = "127.0.0.1:0"`, `admin_listen = "`+takenAddr+`"`, 1)
		}},
		{"http", "start http: listen " + takenAddr, func(s string) string {
			return strings.Replace(s, `listen = "127.0.0.1:0"`+"\n", `listen = "`+takenAddr+`"`+"\n", 1)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			leaks := goleak.IgnoreCurrent()
			s, err := New(testConfig(t, dir, c.edit), Options{LookupEnv: noEnv, Engine: eng})
			if err != nil {
				t.Fatal(err)
			}
			err = s.Start(context.Background())
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Start: %v, want %q", err, c.want)
			}
			if s.Addr() != "" {
				t.Fatal("the main listener started after an earlier component failed")
			}
			if err := s.Stop(context.Background()); err != nil {
				t.Fatalf("Stop after a failed Start: %v", err)
			}
			goleak.VerifyNone(t, leaks)
			// The host closed its storage and the databases are closed:
			// the same directory serves again.
			again, err := New(testConfig(t, dir, nil), Options{LookupEnv: noEnv, Engine: eng})
			if err != nil {
				t.Fatal(err)
			}
			if err := again.Start(context.Background()); err != nil {
				t.Fatalf("restart on the same data: %v", err)
			}
			if err := again.Stop(context.Background()); err != nil {
				t.Fatal(err)
			}
			goleak.VerifyNone(t, leaks)
		})
	}
}

// TestNewRefusesAnEdgeBindingWithoutItsDatabase: the check happens before
// anything opens.
func TestNewRefusesAnEdgeBindingWithoutItsDatabase(t *testing.T) {
	cfg := parseConfig(t, `listen = "127.0.0.1:0"
[[durable_objects.bindings]]
name = "COUNTER_SHARD"
module = "counters.wasm"
shards = 2
`)
	if _, err := New(cfg, Options{LookupEnv: noEnv}); err == nil || !strings.Contains(err.Error(), `the sql database "DB" is not`) {
		t.Fatalf("New: %v", err)
	}
}

// TestServerSlowBodyAndMetricsPlacement: a client trickling its body is
// cut off at read_timeout (and so cannot delay shutdown); /metrics moves
// to the admin listener behind the admin token, or stays on the main
// listener behind metrics_token.
func TestServerSlowBodyAndMetricsPlacement(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs plugins")
	}
	eng := testutil.Engine(t)
	for _, tc := range []struct {
		name, settings         string
		mainNoToken, mainToken int // /metrics on the main listener, without and with "Bearer m-token"
		admin                  int // /metrics on the admin listener with the admin token
	}{
		{"admin", "metrics = \"admin\"\n", 404, 404, 200},
		{"main with token", "metrics_token = \"m-token\"\n", 401, 200, 404},
		{"off", "metrics = \"off\"\n", 404, 404, 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := testConfig(t, dir, func(s string) string { return "read_timeout = \"1s\"\n" + tc.settings + s })
			s, err := New(cfg, Options{LookupEnv: noEnv, Engine: eng})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			defer s.Stop(context.Background())
			get := func(url, token string) int {
				t.Helper()
				st, _ := testutil.Do(t, "GET", url, "", "Authorization", testutil.Bearer(token))
				return st
			}
			if got := get("http://"+s.Addr()+"/metrics", ""); got != tc.mainNoToken {
				t.Errorf("main /metrics without a token: %d, want %d", got, tc.mainNoToken)
			}
			if got := get("http://"+s.Addr()+"/metrics", "m-token"); got != tc.mainToken {
				t.Errorf("main /metrics with metrics_token: %d, want %d", got, tc.mainToken)
			}
			if got := get("http://"+s.AdminAddr()+"/metrics", testToken); got != tc.admin {
				t.Errorf("admin /metrics with the admin token: %d, want %d", got, tc.admin)
			}
			if tc.admin == 200 {
				if got := get("http://"+s.AdminAddr()+"/metrics", ""); got != 401 {
					t.Errorf("admin /metrics without a token: %d, want 401", got)
				}
			}
			if tc.name != "admin" {
				return
			}
			// A body promised at 100 bytes, sent at one byte per 300 ms.
			conn, err := net.Dial("tcp", s.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "POST /do/COUNTER/slow/increment HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
			t0 := time.Now()
			closed := false
			for i := 0; i < 100 && time.Since(t0) < 10*time.Second; i++ {
				if _, err := conn.Write([]byte("x")); err != nil {
					closed = true
					break
				}
				time.Sleep(300 * time.Millisecond)
			}
			if !closed {
				conn.SetReadDeadline(time.Now().Add(2 * time.Second))
				_, err := conn.Read(make([]byte, 1024))
				closed = err != nil
			}
			if took := time.Since(t0); !closed || took > 8*time.Second {
				t.Fatalf("a trickling client kept its connection %v (read_timeout 1s)", took)
			}
		})
	}
}

// TestServerRefusesAnEmptyDatabaseItHadInitialised: after the edge API's
// SQL database file is deleted, a restart refuses to start (and says why)
// rather than create empty tables; --init-sql initialises it on purpose.
func TestServerRefusesAnEmptyDatabaseItHadInitialised(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs plugins")
	}
	dir := t.TempDir()
	cfg := testConfig(t, dir, nil)
	eng := testutil.Engine(t)
	run := func(opts Options) error {
		opts.LookupEnv, opts.Engine = noEnv, eng
		s, err := New(cfg, opts)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(context.Background()); err != nil {
			return err
		}
		return s.Stop(context.Background())
	}
	if err := run(Options{}); err != nil {
		t.Fatal(err)
	}
	for _, suffix := range []string{"", "-wal", "-shm"} {
		os.Remove(filepath.Join(dir, "d1.db") + suffix)
	}
	err := run(Options{})
	if err == nil || !strings.Contains(err.Error(), "is empty, but") || !strings.Contains(err.Error(), "--init-sql") {
		t.Fatalf("start on a deleted database: %v", err)
	}
	if err := run(Options{InitSQL: true}); err != nil {
		t.Fatalf("start with InitSQL: %v", err)
	}
	if err := run(Options{}); err != nil {
		t.Fatalf("start after initialising: %v", err)
	}
}

// TestInstanceMemoryBudgetReachesTheHost: instance_memory_budget_mb and
// instance_start_wait of the file become the host's settings.
func TestInstanceMemoryBudgetReachesTheHost(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), func(s string) string {
		return "instance_memory_budget_mb = 512\ninstance_start_wait = \"250ms\"\n" + s
	})
	s, err := New(cfg, Options{LookupEnv: noEnv})
	if err != nil {
		t.Fatal(err)
	}
	if hc := s.rt.cfg; hc.InstanceMemoryBudgetMiB != 512 || hc.InstanceStartWait != 250*time.Millisecond {
		t.Fatalf("host config: budget %d MiB, wait %v", hc.InstanceMemoryBudgetMiB, hc.InstanceStartWait)
	}
}

// TestNodeIdentity: a server without node_id runs as the node id its data
// directory keeps (made up on the first start, the same on the next);
// node_id wins; either way the log says which and why.
func TestNodeIdentity(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	run := func(extra string) (string, string) {
		t.Helper()
		cfg := parseConfig(t, fmt.Sprintf("listen = \"127.0.0.1:0\"\nadmin_listen = \"\"\ndata_dir = %q\ncache_dir = %q\n%s", data, testutil.CacheDir(), extra))
		var logs testutil.LogBuffer
		s, err := New(cfg, Options{LookupEnv: noEnv, Logger: zerolog.New(&logs)})
		if err != nil {
			t.Fatal(err)
		}
		if s.NodeID() != "" {
			t.Fatal("a node id before Start")
		}
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		id := s.NodeID()
		if err := s.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
		return id, logs.String()
	}
	first, log1 := run("")
	kept, err := os.ReadFile(filepath.Join(data, "node_id"))
	if err != nil || strings.TrimSpace(string(kept)) != first || !strings.Contains(log1, `"node_id":"`+first+`"`) || !strings.Contains(log1, "made up on first start") {
		t.Fatalf("first start: %q, file %q %v, log:\n%s", first, kept, err, log1)
	}
	if again, log2 := run(""); again != first || !strings.Contains(log2, "kept in data_dir/node_id") {
		t.Fatalf("second start: %q, want %q; log:\n%s", again, first, log2)
	}
	if id, log3 := run(`node_id = "pop-fra"`); id != "pop-fra" || !strings.Contains(log3, "configured") {
		t.Fatalf("node_id set: %q; log:\n%s", id, log3)
	}
}
