package harness_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/host/admin"
	"github.com/edgeshard/edgeshard/internal/harness"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/edgeshard/edgeshard/storage/sqldb"
	"go.uber.org/goleak"
)

var start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func get(t *testing.T, url, token string) (int, string) {
	t.Helper()
	return testutil.Do(t, "GET", url, "", "Authorization", testutil.Bearer(token))
}

// TestStartServesAndCloseReleasesEverything starts every part — memory
// storage, a virtual clock, a migrated in-memory database behind a
// wrapper, a recorded analytics dataset, the HTTP and admin listeners —
// checks each answers, then that Close stops every goroutine, removes the
// temporary directory and may be called again.
func TestStartServesAndCloseReleasesEverything(t *testing.T) {
	counter := testutil.Plugin(t, "examples/counter", "-X main.version=test")
	eng := testutil.Engine(t)
	http.DefaultClient.CloseIdleConnections()
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	schema := []sqldb.Migration{{Version: 1, Name: "t", SQL: "CREATE TABLE t (n INTEGER)"}}
	wrapped := 0
	env, err := harness.Start(harness.Engine(eng, testutil.CacheDir()), harness.Memory(), harness.VirtualClock(start),
		harness.SQL(harness.Database{Schema: schema, Wrap: func(db host.SQLDB) host.SQLDB { wrapped++; return db }}),
		harness.Analytics("AE", "events", nil),
		harness.HTTP(), harness.Admin(admin.Options{Token: "tok"}),
		harness.Bindings(host.Binding{Name: "COUNTER", Module: counter, SQL: "DB", Analytics: "AE"}))
	if err != nil {
		t.Fatal(err)
	}
	if env.Clock == nil || !env.Clock.Now().Equal(start) || env.Recorder == nil || env.DB == nil || wrapped != 1 {
		t.Fatalf("env: clock %v, recorder %v, db %v, wrapped %d", env.Clock, env.Recorder, env.DB, wrapped)
	}
	if _, err := env.DB.SQL().Exec("INSERT INTO t VALUES (1)"); err != nil {
		t.Fatalf("the schema was not migrated: %v", err)
	}
	if _, err := env.Host.Fetch(context.Background(), "COUNTER", "a", &abi.Request{Method: "POST", Path: "/increment"}); err != nil {
		t.Fatal(err)
	}
	if st, body := get(t, env.HTTP.URL+"/do/COUNTER/a/", ""); st != 200 || !strings.Contains(body, `"count":1`) {
		t.Fatalf("host HTTP: %d %s", st, body)
	}
	if st, body := get(t, env.Admin.URL+"/admin/bindings", "tok"); st != 200 || !strings.Contains(body, "COUNTER") {
		t.Fatalf("admin API: %d %s", st, body)
	}
	if env.Logs.String() == "" {
		t.Fatal("nothing logged")
	}
	http.DefaultClient.CloseIdleConnections()
	if err := env.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(env.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temporary directory %s left: %v", env.Dir, err)
	}
	if err := env.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestRestartOnTheSameDirectory: a host started on Dir keeps its data for
// the next one; the database file in it too.
func TestRestartOnTheSameDirectory(t *testing.T) {
	dir := t.TempDir()
	opts := []harness.Option{harness.Dir(dir), harness.SQL(harness.Database{}),
		harness.Bindings(host.Binding{Name: "COUNTER", Module: testutil.Plugin(t, "examples/counter", "-X main.version=test"), SQL: "DB"})}
	first := testutil.Host(t, opts...)
	first.Host.Fetch(context.Background(), "COUNTER", "a", &abi.Request{Method: "POST", Path: "/increment"})
	if _, err := first.DB.SQL().Exec("CREATE TABLE kept (n INTEGER)"); err != nil {
		t.Fatal(err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	second := testutil.Host(t, opts...)
	resp, err := second.Host.Fetch(context.Background(), "COUNTER", "a", &abi.Request{Method: "GET", Path: "/"})
	if err != nil || !strings.Contains(string(resp.Body), `"count":1`) {
		t.Fatalf("after restart: %v %v", resp, err)
	}
	if _, err := second.DB.SQL().Exec("INSERT INTO kept VALUES (1)"); err != nil {
		t.Fatalf("database not kept: %v", err)
	}
	if second.Dir != dir || second.Config.DataDir != dir {
		t.Fatalf("dir %s, config %s, want %s", second.Dir, second.Config.DataDir, dir)
	}
}

// TestStartFailureReleasesWhatItOpened: a binding that cannot load fails
// Start, which closes the database it had opened.
func TestStartFailureReleasesWhatItOpened(t *testing.T) {
	var db host.SQLDB
	_, err := harness.Start(harness.Engine(testutil.Engine(t), testutil.CacheDir()),
		harness.SQL(harness.Database{Wrap: func(d host.SQLDB) host.SQLDB { db = d; return d }}),
		harness.Bindings(host.Binding{Name: "BAD", ModuleBytes: []byte("not wasm")}))
	if err == nil || !strings.Contains(err.Error(), "BAD") {
		t.Fatalf("Start: %v, want an error naming the binding", err)
	}
	if _, err := db.(*sqldb.DB).SQL().Exec("SELECT 1"); err == nil {
		t.Fatal("the database Start opened is still open")
	}
}

// TestConfigRefusesWhatNeedsStart: Config opens nothing, so it refuses
// the options that would.
func TestConfigRefusesWhatNeedsStart(t *testing.T) {
	if _, err := harness.Config(harness.Dir(t.TempDir()), harness.SQL(harness.Database{}), harness.HTTP()); err == nil ||
		!strings.Contains(err.Error(), "SQL") || !strings.Contains(err.Error(), "HTTP") {
		t.Fatalf("Config: %v", err)
	}
	if _, err := harness.Config(harness.Memory()); err == nil {
		t.Fatal("Config without a directory")
	}
	cfg := testutil.HostConfig(t, harness.Memory(), harness.VirtualClock(start),
		harness.Configure(func(c *host.Config) { c.QueueDepth = 7 }))
	if cfg.DataDir == "" || cfg.Engine == nil || cfg.Storage == nil || cfg.Clock == nil || cfg.QueueDepth != 7 {
		t.Fatalf("config %+v", cfg)
	}
}

// TestLogBuffer reads a log as lines, codes and records.
func TestLogBuffer(t *testing.T) {
	var l harness.LogBuffer
	l.Write([]byte(`{"level":"warn","code":"E-1","n":1}` + "\n"))
	l.Write([]byte("\n" + `{"code":"E-2"}` + "\n" + `{"code":"E-1","n":2}` + "\n"))
	if got := l.Lines(); len(got) != 3 {
		t.Fatalf("lines %q", got)
	}
	if l.Count("E-1") != 2 || l.Count("E-3") != 0 {
		t.Fatalf("counts %d %d", l.Count("E-1"), l.Count("E-3"))
	}
	recs := l.WithCode("E-1")
	if len(recs) != 2 || recs[1]["n"] != float64(2) {
		t.Fatalf("records %v", recs)
	}
}
