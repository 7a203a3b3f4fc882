//go:build !wasip1

// Package plugintest runs one of the repository's plugins on the real host
// for the plugins' native tests: in-memory (or Badger) shard storage, a
// migrated in-memory SQLite database behind a fault-injecting wrapper, an
// analytics recorder, a virtual clock and a captured JSON log.
package plugintest

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/conformance"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/host/clock"
	"github.com/edgeshard/edgeshard/internal/harness"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/edgeshard/edgeshard/storage/analytics"
	"github.com/edgeshard/edgeshard/storage/sqldb"
	"github.com/rs/zerolog"
)

// Start is where every fixture's virtual clock starts: 2026-01-01T00:00:00Z.
var Start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Options choose the plugin and its bindings.
type Options struct {
	Plugin    string // package dir relative to the repository, e.g. "plugins/counters"
	Binding   string // binding name
	Shards    int    // default 32
	SQL       bool
	Analytics bool
	Dataset   string // analytics dataset (default "runtime_events")
	Badger    bool   // Badger in a temp dir instead of in-memory storage
	// DataDir, with Badger, reuses a directory (restart tests).
	DataDir string
	// DB reuses a database (restart tests).
	DB *sqldb.DB
	// Node is the host's node id (the reserved var edgeshard.node); ""
	// runs a host without one.
	Node string
}

// Fixture is a running host with one binding.
type Fixture struct {
	Opts  Options
	H     *host.Host
	NS    *host.Namespace
	Clock *clock.Virtual
	DB    *sqldb.DB
	SQL   *testutil.FaultDB
	AE    *analytics.Recorder
	Logs  *testutil.LogBuffer
	env   *harness.Env
}

// New starts a host running the plugin (testutil.Host); it closes with the
// test.
func New(t testing.TB, o Options) *Fixture {
	t.Helper()
	if o.Shards == 0 {
		o.Shards = 32
	}
	if o.Dataset == "" {
		o.Dataset = "runtime_events"
	}
	f := &Fixture{Opts: o, AE: &analytics.Recorder{}}
	opts := []harness.Option{harness.VirtualClock(Start), harness.LogLevel(zerolog.DebugLevel),
		harness.Configure(func(c *host.Config) { c.IdleTimeout, c.NodeID = time.Hour, o.Node })}
	switch {
	case !o.Badger:
		opts = append(opts, harness.Memory())
	case o.DataDir != "":
		opts = append(opts, harness.Dir(o.DataDir))
	}
	b := host.Binding{Name: o.Binding, Module: testutil.Plugin(t, o.Plugin), Shards: o.Shards}
	if o.SQL {
		// The database outlives Close: a restart test hands it to the
		// next fixture.
		if o.DB == nil {
			o.DB = testutil.SQL(t, sqldb.Scheme+":memory:", Schema(t))
		}
		f.SQL = &testutil.FaultDB{DB: o.DB}
		opts = append(opts, harness.SQL(harness.Database{DB: o.DB, Wrap: func(host.SQLDB) host.SQLDB { return f.SQL }}))
		b.SQL = "DB"
	}
	if o.Analytics {
		opts = append(opts, harness.Analytics("AE", o.Dataset, f.AE))
		b.Analytics = "AE"
	}
	f.env = testutil.Host(t, append(opts, harness.Bindings(b))...)
	f.H, f.Clock, f.DB, f.Logs = f.env.Host, f.env.Clock, f.env.DB, f.env.Logs
	if o.Badger {
		f.Opts.DataDir = f.env.Dir
	}
	f.NS, _ = f.H.Namespace(o.Binding)
	return f
}

// Close stops the host (idempotent).
func (f *Fixture) Close() { f.env.Close() }

// Resp is a decoded response.
type Resp struct {
	Status int
	Body   string
	JSON   map[string]any
}

// Int returns a top-level JSON number field.
func (r Resp) Int(name string) int64 {
	v, _ := r.JSON[name].(float64)
	return int64(v)
}

// Code returns the error code of an error body.
func (r Resp) Code() string {
	e, _ := r.JSON["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

// Fetch sends a request to the shard key routes to; a host error fails
// the test.
func (f *Fixture) Fetch(t testing.TB, key, method, path, body string) Resp {
	t.Helper()
	r, err := f.TryFetch(key, method, path, body)
	if err != nil {
		t.Fatalf("%s %s (key %q): %v", method, path, key, err)
	}
	return r
}

// TryFetch is Fetch returning the host's error.
func (f *Fixture) TryFetch(key, method, path, body string) (Resp, error) {
	resp, err := f.H.Fetch(context.Background(), f.Opts.Binding, key, &abi.Request{Method: method, Path: path, Body: []byte(body)})
	if err != nil {
		return Resp{}, err
	}
	r := Resp{Status: resp.Status, Body: string(resp.Body)}
	_ = json.Unmarshal(resp.Body, &r.JSON)
	return r, nil
}

// Shard returns the shard name key routes to.
func (f *Fixture) Shard(t testing.TB, key string) string {
	t.Helper()
	s, err := f.NS.ShardFor(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Storage returns every key of the shard key routes to, as the next event
// would see it.
func (f *Fixture) Storage(t testing.TB, key string) map[string]string {
	t.Helper()
	kvs, err := conformance.ShardStorage(context.Background(), f.NS, f.Shard(t, key), abi.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		out[kv.Key] = string(kv.Value)
	}
	return out
}

// Refusal is a request body a plugin must refuse: 400 with Code, and a
// body that mentions Where (a line number, say; "" for anywhere).
type Refusal struct{ Body, Code, Where string }

// WantRefused POSTs each body to path on the shard key routes to and wants
// it refused as its Refusal says.
func (f *Fixture) WantRefused(t testing.TB, key, path string, cases []Refusal) {
	t.Helper()
	for _, c := range cases {
		r := f.Fetch(t, key, "POST", path, c.Body)
		if r.Status != 400 || r.Code() != c.Code || !strings.Contains(r.Body, c.Where) {
			t.Errorf("POST %s %q: %d %s, want 400 %s mentioning %q", path, c.Body, r.Status, r.Body, c.Code, c.Where)
		}
	}
}

// CountPrefix counts the shard's keys with prefix.
func (f *Fixture) CountPrefix(t testing.TB, key, prefix string) int {
	t.Helper()
	n := 0
	for k := range f.Storage(t, key) {
		if strings.HasPrefix(k, prefix) {
			n++
		}
	}
	return n
}

// Alarm returns the shard's persisted alarm.
func (f *Fixture) Alarm(t testing.TB, key string) (time.Time, bool) {
	t.Helper()
	var at int64
	var ok bool
	var aerr error
	err := f.NS.Inspect(context.Background(), f.Shard(t, key), func(st host.StorageView) {
		at, ok, aerr = st.GetAlarm()
	})
	if err == nil {
		err = aerr
	}
	if err != nil {
		t.Fatal(err)
	}
	return time.UnixMilli(at), ok
}

// AlarmIn returns how long from now the shard's alarm is, or -1 if none.
func (f *Fixture) AlarmIn(t testing.TB, key string) time.Duration {
	t.Helper()
	at, ok := f.Alarm(t, key)
	if !ok {
		return -1
	}
	return at.Sub(f.Clock.Now())
}

// Settle waits until the shard of key has no alarm due at the current
// virtual time: it lets queued alarm events finish and fires timers set in
// the past (handlers that set their alarm to now).
func (f *Fixture) Settle(t testing.TB, key string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		at, ok := f.Alarm(t, key)
		if !ok || at.After(f.Clock.Now()) {
			return
		}
		f.Clock.Set(f.Clock.Now())
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("alarm of %q stays due", key)
}

// Advance moves the virtual clock by d and settles the shard of key.
func (f *Fixture) Advance(t testing.TB, key string, d time.Duration) {
	t.Helper()
	f.Clock.Advance(d)
	f.Settle(t, key)
}

// WaitFor polls cond until it holds (alarms run asynchronously).
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, 30*time.Second, what, cond)
}

// QueryInt runs a query returning one integer (or -1 for no row).
func (f *Fixture) QueryInt(t testing.TB, q string, args ...any) int64 {
	t.Helper()
	var n int64
	err := f.DB.SQL().QueryRow(q, args...).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return -1
	}
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// OpenDB returns a private in-memory SQLite database migrated to the edge
// API's schema; it closes with the test.
func OpenDB(t testing.TB) *sqldb.DB {
	t.Helper()
	return testutil.SQL(t, sqldb.Scheme+":memory:", Schema(t))
}

// Schema returns the edge API's SQL schema, which the plugins write to.
func Schema(t testing.TB) []sqldb.Migration {
	t.Helper()
	return testutil.EdgeSchema(t)
}
