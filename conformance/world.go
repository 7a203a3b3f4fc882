package conformance

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/host/clock"
	"github.com/edgeshard/edgeshard/internal/harness"
	"github.com/edgeshard/edgeshard/internal/hostinternal"
	"github.com/edgeshard/edgeshard/storage/analytics"
	"github.com/edgeshard/edgeshard/storage/shardsql"
	"github.com/edgeshard/edgeshard/storage/sqldb"
	"github.com/rs/zerolog"
)

// StartTime is where every scenario's virtual clock starts.
func StartTime() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }

// Backends a suite can run on.
const (
	BackendMemory = "memory" // in-memory shard storage, SQLite :memory:
	BackendBadger = "badger" // Badger and a SQLite file in a temporary directory
)

const (
	// sqlBindingName and analyticsBindingName name the databases the
	// world's host config offers the binding.
	sqlBindingName       = "DB"
	analyticsBindingName = "AE"
	// maxSettleRounds bounds how often settle fires due alarms at one
	// instant before it gives up (an alarm handler that keeps setting its
	// alarm in the past would otherwise spin forever).
	maxSettleRounds = 1000
	// maxAlarmSteps bounds the alarm firings of one advance.
	maxAlarmSteps = 100_000
)

// world is one scenario's host and everything around it.
type world struct {
	binding Binding
	env     *harness.Env
	clock   *clock.Virtual
	h       *host.Host
	ns      *host.Namespace
	db      *sqldb.DB    // nil unless the binding has SQL
	pgDB    *sqldb.DB    // the scenario's PostgreSQL schema (Options.SQLURL), closed at close
	dropSQL func() error // drops it
	sql     *faultySQL
	rec     *analytics.Recorder
	logs    logRecorder
	logf    func(string, ...any)

	names map[string]bool // per-name shards addressed so far
}

// newWorld builds a fresh world for one scenario: a host of the harness
// with the binding, on the backend the options name (in-memory storage and
// SQLite, or Badger and a SQLite file in a temporary directory).
func newWorld(ctx context.Context, r *runner, sc *Scenario, logf func(string, ...any)) (*world, error) {
	w := &world{binding: r.suite.Binding, rec: &analytics.Recorder{}, logf: logf, names: map[string]bool{}}
	eng, err := harness.SharedEngine(ctx, r.cacheDir)
	if err != nil {
		return nil, fmt.Errorf("wasm engine: %w", err)
	}
	vars := maps.Clone(r.suite.Vars)
	if vars == nil {
		vars = map[string]string{}
	}
	maps.Copy(vars, sc.Vars)
	opts := []harness.Option{
		harness.Context(ctx),
		harness.Engine(eng, r.cacheDir),
		harness.VirtualClock(StartTime()),
		harness.LogLevel(zerolog.DebugLevel),
		harness.Configure(func(c *host.Config) {
			c.Vars = vars
			// Instances live for the whole scenario unless a step restarts them.
			c.IdleTimeout = time.Hour
		}),
	}
	switch r.opts.Backend {
	case "", BackendMemory:
		opts = append(opts, harness.Memory())
	case BackendBadger: // the harness's default
	default:
		return nil, fmt.Errorf("unknown backend %q", r.opts.Backend)
	}
	b := host.Binding{Name: w.binding.name(), ModuleBytes: r.bin, Shards: w.binding.Shards}
	if w.binding.ShardSQL {
		// sql_fail crash_after_commit is the host's injected crash between
		// an event's SQL commit and its storage commit.
		w.sql = &faultySQL{}
		b.SQL = host.ShardSQL
		opts = append(opts, harness.Context(hostinternal.WithShardSQLCrash(ctx, func(string, string) bool {
			return w.sql.use(SQLFailCrashAfterCommit)
		})))
	}
	if w.binding.SQL {
		d := harness.Database{Name: sqlBindingName, Schema: r.opts.Schema,
			Wrap: func(db host.SQLDB) host.SQLDB { w.sql = &faultySQL{db: db}; return w.sql }}
		if r.opts.SQLURL != "" {
			// A PostgreSQL schema of its own for the scenario, dropped at close.
			if d.DB, w.dropSQL, err = openScenarioSchema(ctx, r.opts.SQLURL); err != nil {
				return nil, err
			}
			w.pgDB = d.DB
		}
		opts = append(opts, harness.SQL(d))
		b.SQL = sqlBindingName
	}
	if w.binding.Analytics {
		opts = append(opts, harness.Analytics(analyticsBindingName, w.binding.dataset(), w.rec))
		b.Analytics = analyticsBindingName
	}
	if w.env, err = harness.Start(append(opts, harness.Bindings(b))...); err != nil {
		if w.pgDB != nil {
			w.pgDB.Close()
			w.dropSQL()
		}
		return nil, fmt.Errorf("start host: %w", err)
	}
	w.h, w.clock, w.db, w.logs = w.env.Host, w.env.Clock, w.env.DB, logRecorder{w.env.Logs}
	ns, ok := w.h.Namespace(b.Name)
	if !ok {
		return nil, errors.Join(fmt.Errorf("host has no namespace %q", b.Name), w.close())
	}
	w.ns = ns
	return w, nil
}

// close stops the host and removes what the world created.
func (w *world) close() error {
	errs := []error{w.env.Close()}
	if w.pgDB != nil {
		errs = append(errs, w.pgDB.Close())
	}
	if w.dropSQL != nil {
		errs = append(errs, w.dropSQL())
	}
	return errors.Join(errs...)
}

// shard returns the shard key routes to, remembering per-name shards so
// alarms on them are waited for.
func (w *world) shard(key string) (string, error) {
	s, err := w.ns.ShardFor(key)
	if err != nil {
		return "", err
	}
	if w.ns.Shards() == 0 {
		w.names[s] = true
	}
	return s, nil
}

// shards returns every shard that may hold an alarm: those with an actor,
// and the per-name shards steps have addressed.
func (w *world) shards() []string {
	set := map[string]bool{}
	for _, st := range w.ns.Stats() {
		set[st.Shard] = true
	}
	for n := range w.names {
		set[n] = true
	}
	return slices.Sorted(maps.Keys(set))
}

// inspect runs fn on the shard's goroutine between two events.
func (w *world) inspect(ctx context.Context, shard string, fn func(host.StorageView) error) error {
	var ferr error
	if err := w.ns.Inspect(ctx, shard, func(st host.StorageView) { ferr = fn(st) }); err != nil {
		return fmt.Errorf("inspect shard %s: %w", shard, err)
	}
	return ferr
}

// ShardStorage returns a copy of the entries of the shard's storage that
// opts selects, read on the shard's goroutine between two events, as
// expect_storage reads them. Plugin authors' own tests of a plugin on a
// real host can check its storage with it.
func ShardStorage(ctx context.Context, ns *host.Namespace, shard string, opts abi.ListOptions) ([]abi.KV, error) {
	var out []abi.KV
	var lerr error
	if err := ns.Inspect(ctx, shard, func(st host.StorageView) {
		var kvs []abi.KV
		kvs, lerr = st.List(opts)
		for _, kv := range kvs {
			out = append(out, abi.KV{Key: kv.Key, Value: slices.Clone(kv.Value)})
		}
	}); err != nil {
		return nil, fmt.Errorf("inspect shard %s: %w", shard, err)
	}
	return out, lerr
}

// alarm returns the shard's persisted alarm (unix ms) as its next event
// would see it.
func (w *world) alarm(ctx context.Context, shard string) (int64, bool, error) {
	var at int64
	var ok bool
	err := w.inspect(ctx, shard, func(st host.StorageView) error {
		var err error
		at, ok, err = st.GetAlarm()
		return err
	})
	return at, ok, err
}

// settle returns once no shard has an alarm due at the clock's current
// time: it waits for the alarm events the scheduler has queued (an Inspect
// runs after every event queued before it) and fires the clock's timers
// that are due now (a handler may set an alarm in the past, which the
// scheduler arms with a zero delay).
func (w *world) settle(ctx context.Context) error {
	var due []string
	for round := range maxSettleRounds {
		now := w.clock.Now().UnixMilli()
		due = due[:0]
		for _, s := range w.shards() {
			at, ok, err := w.alarm(ctx, s)
			if err != nil {
				return err
			}
			if ok && at <= now {
				due = append(due, s)
			}
		}
		if len(due) == 0 {
			return nil
		}
		w.clock.Set(w.clock.Now())
		if round >= 10 {
			// A clock that runs timers on their own goroutines, or a host
			// that delivers alarms late: give it time.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Millisecond):
			}
		}
	}
	return fmt.Errorf("alarms of shards %v stay due at %s after %d rounds: a handler keeps setting its alarm in the past, or the host does not deliver it",
		due, fmtTime(w.clock.Now()), maxSettleRounds)
}

// nextAlarm returns the earliest alarm the host's scheduler holds.
func (w *world) nextAlarm() (time.Time, bool) {
	var first time.Time
	found := false
	for _, s := range w.shards() {
		if at, ok := w.ns.AlarmAt(s); ok && (!found || at.Before(first)) {
			first, found = at, true
		}
	}
	return first, found
}

// advanceTo moves the clock to target alarm by alarm: it stops at each
// scheduled alarm time on the way, lets the alarms due then run to the end
// (so a handler that sets a new alarm sees the time it fired at, as on a
// real clock), and goes on.
func (w *world) advanceTo(ctx context.Context, target time.Time) error {
	for range maxAlarmSteps {
		next, ok := w.nextAlarm()
		if !ok || next.After(target) {
			w.clock.Set(target)
			return w.settle(ctx)
		}
		if now := w.clock.Now(); next.Before(now) {
			next = now
		}
		w.clock.Set(next)
		if err := w.settle(ctx); err != nil {
			return err
		}
	}
	return fmt.Errorf("more than %d alarm firings before %s", maxAlarmSteps, fmtTime(target))
}

// fmtTime formats a virtual time with its offset from the start.
func fmtTime(t time.Time) string {
	return fmt.Sprintf("%s (start+%s)", t.UTC().Format(time.RFC3339Nano), t.Sub(StartTime()))
}

// openScenarioSchema creates a schema of its own for a scenario in the
// PostgreSQL database at url and opens the database with that schema first
// on its search_path; drop drops the schema and all in it.
func openScenarioSchema(ctx context.Context, url string) (db *sqldb.DB, drop func() error, err error) {
	var b [8]byte
	rand.Read(b[:])
	name := "edgeshard_conformance_" + hex.EncodeToString(b[:])
	admin, err := sqldb.Open(url, sqldb.Options{MaxOpenConns: 1})
	if err != nil {
		return nil, nil, err
	}
	defer admin.Close()
	if _, err := admin.SQL().ExecContext(ctx, "CREATE SCHEMA "+name); err != nil {
		return nil, nil, fmt.Errorf("create schema %s: %w", name, err)
	}
	drop = func() error {
		admin, err := sqldb.Open(url, sqldb.Options{MaxOpenConns: 1})
		if err != nil {
			return err
		}
		defer admin.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.SQL().ExecContext(ctx, "DROP SCHEMA "+name+" CASCADE"); err != nil {
			return fmt.Errorf("drop schema %s: %w", name, err)
		}
		return nil
	}
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	db, err = sqldb.Open(url+sep+"search_path="+name, sqldb.Options{})
	if err != nil {
		return nil, nil, errors.Join(err, drop())
	}
	return db, drop, nil
}

// errInjectedSQL is the error SQL calls fail with in sql_fail mode "error".
var errInjectedSQL = errors.New("conformance: injected SQL failure")

// faultySQL wraps the world's database to inject the failures of sql_fail.
type faultySQL struct {
	db host.SQLDB

	mu       sync.Mutex
	mode     string // "" is off
	left     int    // SQL calls the mode still affects; < 0 unlimited
	injected int    // failures injected so far
}

// set switches the failure mode.
func (f *faultySQL) set(mode string, times int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch mode {
	case SQLFailOff:
		f.mode, f.left = "", 0
	case SQLFailCrashAfterCommit:
		f.mode, f.left = mode, max(times, 1)
	default:
		f.mode, f.left = mode, times
		if times == 0 {
			f.left = -1
		}
	}
}

// use consumes one affected call of mode, if mode is still on.
func (f *faultySQL) use(mode string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mode != mode || f.left == 0 {
		return false
	}
	if f.left > 0 {
		f.left--
		if f.left == 0 {
			f.mode = ""
		}
	}
	f.injected++
	return true
}

func (f *faultySQL) current() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mode
}

// Batch runs the batch, failing it as the current mode says.
func (f *faultySQL) Batch(ctx context.Context, stmts []abi.Statement) ([]abi.Result, error) {
	switch f.current() {
	case SQLFailError:
		if f.use(SQLFailError) {
			return nil, fmt.Errorf("sql_fail mode %q: %w", SQLFailError, errInjectedSQL)
		}
	case SQLFailCrashAfterCommit:
		res, err := f.db.Batch(ctx, stmts)
		if err != nil || !f.use(SQLFailCrashAfterCommit) {
			return res, err
		}
		return nil, fmt.Errorf("sql_fail mode %q: the SQL batch committed, then the shard crashed: %w",
			SQLFailCrashAfterCommit, hostinternal.ErrInjectedCrash)
	}
	return f.db.Batch(ctx, stmts)
}

// sortedHeaders turns a header map into ABI headers in name order.
func sortedHeaders(m map[string]string) []abi.Header {
	names := slices.Sorted(maps.Keys(m))
	out := make([]abi.Header, 0, len(m))
	for _, n := range names {
		out = append(out, abi.Header{Name: n, Value: m[n]})
	}
	return out
}

// Dialect passes on the database's dialect (the reserved var
// edgeshard.sql_dialect).
func (f *faultySQL) Dialect() string {
	if d, ok := f.db.(interface{ Dialect() string }); ok {
		return d.Dialect()
	}
	return ""
}

var _ host.SQLDB = (*faultySQL)(nil)

// shardQuery runs st in the own database of the shard key routes to
// (shard_sql), in a transaction it rolls back.
func (w *world) shardQuery(ctx context.Context, key string, st abi.Statement) ([]abi.Result, error) {
	shard, err := w.shard(key)
	if err != nil {
		return nil, err
	}
	path := shardsql.Path(w.env.Dir, w.binding.name(), shard)
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("shard %s has no database (it ran no SQL): %w", shard, err)
	}
	db, err := shardsql.Open(path, shardsql.Options{})
	if err != nil {
		return nil, err
	}
	defer db.Close()
	return db.Batch(ctx, []abi.Statement{st})
}
