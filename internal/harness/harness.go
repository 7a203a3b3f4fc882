// Package harness starts an edgeshard host in-process, the way tests and
// conformance scenarios need one: shard storage in a temporary directory
// (Badger) or in memory, the bindings under test, optionally a SQLite
// database (migrated), an analytics sink, a virtual clock, the host's HTTP
// routes and the admin API on 127.0.0.1:0, and every log line in one
// LogBuffer. Start reports any failure once; Env.Close releases what Start
// acquired, in reverse.
//
// Tests reach it through testutil.Host, which adds the test binary's shared
// engine, a t.TempDir and t.Cleanup. The package imports neither testing
// nor the edge API: the conformance runner, which ships in the edgeshard
// binary, starts its hosts here, and so do package edge's own tests, which
// could not import a package that imports edge (their edge API is edge.New
// over Env.Host, in edge's helpers).
package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/host/admin"
	"github.com/edgeshard/edgeshard/host/clock"
	"github.com/edgeshard/edgeshard/storage"
	"github.com/edgeshard/edgeshard/storage/analytics"
	"github.com/edgeshard/edgeshard/storage/sqldb"
	"github.com/rs/zerolog"
)

// Env is a running host and what it was started with.
type Env struct {
	Host *host.Host
	// Config is the configuration host.New was given. A restart starts
	// another Env with the same options and Dir(env.Dir).
	Config host.Config
	// Dir is the data directory: Config.DataDir, a temporary directory
	// that Close removes unless Dir or HostConfig named one.
	Dir string
	// Clock is the virtual clock given by VirtualClock or Clock; nil for
	// the real clock.
	Clock *clock.Virtual
	// DB is the database of the SQL option; SQL is what the host's
	// bindings use (DB, or Database.Wrap's wrapper). Both nil without SQL.
	DB  *sqldb.DB
	SQL host.SQLDB
	// Recorder keeps every data point written to an Analytics dataset
	// given no sink of its own.
	Recorder *analytics.Recorder
	// Logs holds the host's log (and the admin API's), one JSON record a
	// line.
	Logs *LogBuffer
	// HTTP serves the host's routes (/do, /healthz) when HTTP was given;
	// Admin serves the admin API when Admin was given.
	HTTP  *Server
	Admin *Server

	ownDir   bool
	ownDB    bool
	once     sync.Once
	closeErr error
}

// Option configures Start. Options apply in order; a later one wins.
type Option func(*settings)

type settings struct {
	ctx        context.Context
	cfg        host.Config
	clock      *clock.Virtual
	memory     bool
	level      zerolog.Level
	sql        *Database
	analytics  []analyticsSpec
	configure  []func(*host.Config)
	http       bool
	admin      *admin.Options
	needsStart []string // options Config cannot honour
}

type analyticsSpec struct {
	name, dataset string
	sink          host.AnalyticsSink
}

// Database is the SQLite database an Env offers its bindings.
type Database struct {
	// Name is its name in host.Config.SQL, which a binding grants with
	// host.Binding.SQL; default "DB".
	Name string
	// URL is the database to open: by default the file d1.db in the data
	// directory, or an in-memory database with Memory storage.
	URL string
	// Schema is migrated at Start (for the edge API's, testutil.EdgeSchema).
	Schema []sqldb.Migration
	// DB, when set, is used instead of opening URL (a restart on the same
	// database); Close leaves it open.
	DB *sqldb.DB
	// Wrap, when set, returns what the host gets instead of the database
	// (a fault-injecting wrapper).
	Wrap func(host.SQLDB) host.SQLDB
}

// HostConfig starts from cfg instead of host.DefaultConfig(); its DataDir,
// if set, is the data directory, and its clock, if virtual, is Env.Clock.
// Give it before the options it should not undo.
func HostConfig(cfg host.Config) Option {
	return func(s *settings) {
		s.cfg = cfg
		s.clock, _ = cfg.Clock.(*clock.Virtual)
	}
}

// Context is the context host.New starts with (it may carry the hooks of
// internal/hostinternal); context.Background() by default.
func Context(ctx context.Context) Option { return func(s *settings) { s.ctx = ctx } }

// Dir is the data directory, kept by Close (a restart reuses it); by
// default a new temporary directory that Close removes.
func Dir(dir string) Option { return func(s *settings) { s.cfg.DataDir = dir } }

// Bindings adds namespaces.
func Bindings(bs ...host.Binding) Option {
	return func(s *settings) { s.cfg.Bindings = append(s.cfg.Bindings, bs...) }
}

// Memory keeps shard storage in memory (and the SQL database, unless its
// URL says otherwise) instead of Badger in the data directory.
func Memory() Option {
	return func(s *settings) { s.cfg.Storage, s.memory = storage.NewMemory(), true }
}

// Storage is the shard storage backend (fault injection, or one backend
// shared by the hosts of a restart).
func Storage(b storage.Backend) Option { return func(s *settings) { s.cfg.Storage = b } }

// Clock is the host's clock; a *clock.Virtual is also Env.Clock.
func Clock(c clock.Clock) Option {
	return func(s *settings) {
		s.cfg.Clock = c
		s.clock, _ = c.(*clock.Virtual)
	}
}

// VirtualClock gives the host a new virtual clock standing at start.
func VirtualClock(start time.Time) Option { return Clock(clock.NewVirtual(start)) }

// Engine is the compilation engine the host shares (SharedEngine) and
// cacheDir its compilation cache.
func Engine(e *host.Engine, cacheDir string) Option {
	return func(s *settings) { s.cfg.Engine, s.cfg.CacheDir = e, cacheDir }
}

// LogLevel filters what reaches Env.Logs (zerolog.Disabled keeps nothing);
// by default every record does.
func LogLevel(l zerolog.Level) Option { return func(s *settings) { s.level = l } }

// SQL offers the bindings a SQLite database.
func SQL(db Database) Option {
	return func(s *settings) {
		s.sql = &db
		s.needsStart = append(s.needsStart, "SQL")
	}
}

// Analytics offers the bindings the analytics dataset binding name
// (host.Binding.Analytics), writing dataset to sink; a nil sink is
// Env.Recorder.
func Analytics(name, dataset string, sink host.AnalyticsSink) Option {
	return func(s *settings) {
		s.analytics = append(s.analytics, analyticsSpec{name, dataset, sink})
		if sink == nil {
			s.needsStart = append(s.needsStart, "Analytics without a sink")
		}
	}
}

// Configure edits the host configuration last, after every other option.
func Configure(fn func(*host.Config)) Option {
	return func(s *settings) { s.configure = append(s.configure, fn) }
}

// HTTP serves the host's routes on 127.0.0.1:0 (Env.HTTP).
func HTTP() Option {
	return func(s *settings) { s.http, s.needsStart = true, append(s.needsStart, "HTTP") }
}

// Admin serves the admin API on 127.0.0.1:0 (Env.Admin), logging to
// Env.Logs.
func Admin(o admin.Options) Option {
	return func(s *settings) { s.admin, s.needsStart = &o, append(s.needsStart, "Admin") }
}

func apply(opts []Option) *settings {
	s := &settings{ctx: context.Background(), cfg: host.DefaultConfig(), level: zerolog.TraceLevel}
	s.cfg.DataDir = ""
	for _, o := range opts {
		o(s)
	}
	return s
}

// Config returns the host configuration Start would give host.New, for a
// test that calls host.New itself. The options must name the data
// directory (Dir or HostConfig) and need nothing opened (SQL, HTTP,
// Admin, Analytics without a sink); the log is discarded.
func Config(opts ...Option) (host.Config, error) {
	s := apply(opts)
	if len(s.needsStart) > 0 {
		return host.Config{}, fmt.Errorf("harness.Config: %v need Start", s.needsStart)
	}
	if s.cfg.DataDir == "" {
		return host.Config{}, errors.New("harness.Config: no data directory (Dir)")
	}
	for _, a := range s.analytics {
		addAnalytics(&s.cfg, a.name, host.AnalyticsBinding{Dataset: a.dataset, Sink: a.sink})
	}
	for _, fn := range s.configure {
		fn(&s.cfg)
	}
	return s.cfg, nil
}

// Start starts a host as opts say. On failure it releases what it had
// acquired and returns the error.
func Start(opts ...Option) (_ *Env, err error) {
	s := apply(opts)
	e := &Env{Clock: s.clock, Logs: &LogBuffer{}}
	defer func() {
		if err != nil {
			err = errors.Join(err, e.Close())
		}
	}()
	cfg := s.cfg
	if cfg.DataDir == "" {
		if cfg.DataDir, err = os.MkdirTemp("", "edgeshard-harness-*"); err != nil {
			return nil, fmt.Errorf("data directory: %w", err)
		}
		e.ownDir = true
	}
	e.Dir = cfg.DataDir
	log := zerolog.New(e.Logs).Level(s.level)
	cfg.Logger = log
	if q := s.sql; q != nil {
		if err := e.openSQL(s.ctx, q, s.memory); err != nil {
			return nil, err
		}
		name := q.Name
		if name == "" {
			name = "DB"
		}
		cfg.SQL = map[string]host.SQLDB{name: e.SQL}
	}
	for _, a := range s.analytics {
		sink := a.sink
		if sink == nil {
			if e.Recorder == nil {
				e.Recorder = &analytics.Recorder{}
			}
			sink = e.Recorder
		}
		addAnalytics(&cfg, a.name, host.AnalyticsBinding{Dataset: a.dataset, Sink: sink})
	}
	for _, fn := range s.configure {
		fn(&cfg)
	}
	if e.Host, err = host.New(s.ctx, cfg); err != nil {
		return nil, err
	}
	e.Config = cfg
	if s.http {
		if e.HTTP, err = Serve(e.Host.Handler()); err != nil {
			return nil, fmt.Errorf("host HTTP: %w", err)
		}
	}
	if o := s.admin; o != nil {
		ao := *o
		ao.Logger = log
		srv, err := admin.New(e.Host, ao)
		if err != nil {
			return nil, fmt.Errorf("admin API: %w", err)
		}
		if e.Admin, err = Serve(srv.Handler()); err != nil {
			return nil, fmt.Errorf("admin API: %w", err)
		}
	}
	return e, nil
}

func (e *Env) openSQL(ctx context.Context, q *Database, memory bool) error {
	e.DB = q.DB
	if e.DB == nil {
		url := q.URL
		switch {
		case url != "":
		case memory:
			url = sqldb.Scheme + ":memory:"
		default:
			url = sqldb.Scheme + filepath.Join(e.Dir, "d1.db")
		}
		db, err := sqldb.Open(url, sqldb.Options{})
		if err != nil {
			return err
		}
		e.DB, e.ownDB = db, true
	}
	if len(q.Schema) > 0 {
		if _, err := e.DB.Migrate(ctx, q.Schema); err != nil {
			return fmt.Errorf("migrate sql database: %w", err)
		}
	}
	e.SQL = e.DB
	if q.Wrap != nil {
		e.SQL = q.Wrap(e.DB)
	}
	return nil
}

func addAnalytics(cfg *host.Config, name string, b host.AnalyticsBinding) {
	if cfg.Analytics == nil {
		cfg.Analytics = map[string]host.AnalyticsBinding{}
	}
	cfg.Analytics[name] = b
}

// Close stops the listeners and the host, closes the database it opened
// and removes the temporary directory it made. It may be called more than
// once; later calls return the first one's result.
func (e *Env) Close() error {
	e.once.Do(func() {
		var errs []error
		if e.Admin != nil {
			e.Admin.Close()
		}
		if e.HTTP != nil {
			e.HTTP.Close()
		}
		if e.Host != nil {
			errs = append(errs, e.Host.Close(context.Background()))
		}
		if e.DB != nil && e.ownDB {
			errs = append(errs, e.DB.Close())
		}
		if e.ownDir {
			errs = append(errs, os.RemoveAll(e.Dir))
		}
		e.closeErr = errors.Join(errs...)
	})
	return e.closeErr
}
