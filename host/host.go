// Package host runs edgeshard: namespaces of shards, each shard a wasm
// plugin instance with durable storage and one alarm, reached over HTTP at
// /do/{binding}/{key}/... . The machinery lives in host/internal; this
// package wires it together behind a few constructors.
package host

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host/clock"
	"github.com/edgeshard/edgeshard/host/internal/wasm"
	"github.com/edgeshard/edgeshard/internal/hostinternal"
	"github.com/edgeshard/edgeshard/storage"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// SQLDB is the SQL ("D1") binding: a batch runs in one transaction. One
// that also has a method Dialect() string (sqldb.DB: "sqlite" or
// "postgres") tells its guests through the reserved var
// edgeshard.sql_dialect (VarSQLDialect).
type SQLDB interface {
	Batch(ctx context.Context, stmts []abi.Statement) ([]abi.Result, error)
}

// AnalyticsSink receives analytics data points.
type AnalyticsSink interface {
	Write(dataset string, p abi.DataPoint) error
}

// Binding configures one namespace.
type Binding struct {
	// Name is the binding name (e.g. "COUNTER"), used in /do/{name}/...
	Name string
	// Module is the path of the plugin's .wasm file; ModuleBytes, when set,
	// is used instead.
	Module      string
	ModuleBytes []byte
	// Shards is the number of shards of a sharded namespace (keys route by
	// HashToShard(key) % Shards); 0 gives one object per name.
	Shards int
	// SQL names the database in Config.SQL this namespace may use; "" grants
	// none. ShardSQL ("shard") gives each shard its own SQLite database
	// under DataDir/shardsql instead (shardsql.go).
	SQL string
	// Analytics names the dataset binding in Config.Analytics; "" grants none.
	Analytics string
	// Internal keeps the namespace off the HTTP route /do/{binding}/...:
	// only in-process callers (Fetch, the edge API, the admin API) reach
	// it. The shards behind the edge API are internal, so an edge client
	// cannot speak their protocols directly (inject counter deltas or
	// events, reset a rate-limit bucket).
	Internal bool
	// Limits, when set, override Config.Limits for this binding, field by
	// field: a zero field keeps the host's.
	Limits *Limits
	// LogCodes are the code fields of guest log records the host honours:
	// exact codes, or prefixes ending in "*". A code it does not honour is
	// logged as guest_code and counted as "unlisted" (env.go, Log). nil
	// honours every code; an empty list none.
	LogCodes []string
	// Calls names the bindings whose shards this binding's shards may call
	// (shard_call, call.go); empty grants no calls.
	Calls []string
	// Fetch, when set, lets this binding's shards make HTTP(S) requests
	// (http_fetch, fetch.go) to the hosts it allows.
	Fetch *FetchConfig
}

// AnalyticsBinding is a dataset a namespace writes data points to.
type AnalyticsBinding struct {
	Dataset string
	Sink    AnalyticsSink
}

// Config configures a Host. Zero values take the defaults noted.
type Config struct {
	// DataDir holds shard storage (DataDir/shards) and the compilation
	// cache (DataDir/cache) unless Storage or CacheDir say otherwise.
	DataDir  string
	CacheDir string
	// NodeID names this host among the hosts that share a SQL database
	// (abi.ValidNodeID); shards read it as the reserved var edgeshard.node
	// (VarNodeID). Empty: the var is unset. LoadNodeID gives a stable one
	// kept in DataDir.
	NodeID string
	// Placement, when set, makes the host one of several in a POP: it
	// runs a shard only under the claim Placement gives and forwards the
	// other requests to their owners (placement.go). nil: the host runs
	// every shard itself.
	Placement Placement
	// Storage overrides the Badger backend (e.g. storage.NewMemory()).
	Storage storage.Backend
	// Badger configures the Badger backend (when Storage is nil): the host
	// sets Dir (DataDir/shards) and SyncWrites, and Logger unless set.
	Badger storage.BadgerOptions
	// ShardCacheBytes bounds the storage read caches of all live shards
	// together (default 32 MiB): each shard caches at most 4 MiB and its
	// share of this. Negative: no read caches.
	ShardCacheBytes int
	// SyncWrites makes every commit fsync (default true via DefaultConfig).
	SyncWrites bool
	Bindings   []Binding
	Vars       map[string]string
	SQL        map[string]SQLDB
	Analytics  map[string]AnalyticsBinding
	// EventTimeout bounds one fetch or alarm call (default 10s).
	EventTimeout time.Duration
	// IdleTimeout evicts an instance after this long without events
	// (default 2m).
	IdleTimeout time.Duration
	// InstanceMemoryBudgetMiB bounds the memory of live instances, all
	// bindings together: each instance's linear memory plus a fixed
	// overhead (256 KiB). Past it the least recently used idle instances
	// are evicted before a new one starts; when none is idle the start
	// waits up to InstanceStartWait, then fails with ErrOverloaded. 0
	// takes half of the machine's memory (the smaller of physical memory
	// and the cgroup limit; 1 GiB when unknown); negative sets no budget.
	InstanceMemoryBudgetMiB int
	// InstanceStartWait bounds how long an instance start waits for room
	// in the memory budget (default 5s).
	InstanceStartWait time.Duration
	// QueueDepth bounds each shard's queue of waiting events (default 1024).
	QueueDepth int
	// FetchBatch bounds how many queued requests a shard whose module
	// exports edgeshard_fetch_batch receives in one call when it has a
	// backlog (default 16; batch.go); 1 delivers every request on its own.
	FetchBatch int
	// MemoryLimitMiB caps each instance's memory (default 128).
	MemoryLimitMiB int
	// MaxBodyBytes caps request bodies at /do (default 1 MiB).
	MaxBodyBytes int64
	// AlarmRetries and AlarmBackoff govern failing alarm handlers
	// (defaults 6 and 2s, doubling).
	AlarmRetries int
	AlarmBackoff time.Duration
	// Limits bound what each plugin may make the host do, per event and
	// per shard (zero fields: DefaultLimits); Binding.Limits override them.
	Limits Limits
	Clock  clock.Clock
	Logger zerolog.Logger
	// TraceShard, "binding/shard", logs every host call that shard makes.
	TraceShard string
	// Registerer receives the host's Prometheus metrics; nil keeps them
	// unregistered.
	Registerer prometheus.Registerer
	// Migrations rename and delete bindings' data, each once, at New
	// (migrations.go).
	Migrations []Migration
	// ShardStates are per-shard state outside shard storage (a per-shard
	// database) that shard snapshots and backups carry (snapshot.go).
	ShardStates []ShardState
	// WebSocket bounds the host's WebSockets (websocket.go).
	WebSocket WebSocketLimits
	// Calls, when set, routes shard_call requests: it gets the host's own
	// router (Host.RouteCall, which delivers to this host's shards) and
	// returns the one to use — e.g. one that forwards a call for a shard
	// owned by another host (CallRouter).
	Calls func(local CallRouter) CallRouter
	// Engine, when set, is a shared engine the host uses (and does not
	// close) instead of starting its own; CacheDir is then the engine's,
	// and MemoryLimitMiB must be 0 or the engine's (New refuses another).
	Engine *Engine
}

// DefaultConfig returns a configuration with durable defaults.
func DefaultConfig() Config {
	return Config{SyncWrites: true, DataDir: "./data"}
}

func (c Config) withDefaults() Config {
	if c.EventTimeout <= 0 {
		c.EventTimeout = 10 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 2 * time.Minute
	}
	if c.InstanceStartWait <= 0 {
		c.InstanceStartWait = 5 * time.Second
	}
	if c.QueueDepth <= 0 {
		c.QueueDepth = 1024
	}
	if c.FetchBatch <= 0 {
		c.FetchBatch = defaultFetchBatch
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.AlarmRetries <= 0 {
		c.AlarmRetries = 6
	}
	if c.AlarmBackoff <= 0 {
		c.AlarmBackoff = 2 * time.Second
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	c.WebSocket = c.WebSocket.withDefaults()
	if c.CacheDir == "" && c.DataDir != "" {
		c.CacheDir = filepath.Join(c.DataDir, "cache")
	}
	return c
}

// Errors callers of Fetch branch on. ErrOverloaded: the shard's queue is
// full, or its instance found no room in the instance memory budget.
var (
	ErrUnknownBinding = errors.New("unknown binding")
	ErrBadKey         = errors.New("bad shard key")
	ErrOverloaded     = errors.New("shard overloaded")
	ErrClosed         = errors.New("host is shutting down")
	ErrUnavailable    = errors.New("shard could not start")
	ErrTimeout        = wasm.ErrTimeout
	ErrTrap           = wasm.ErrTrap
	ErrBadResponse    = wasm.ErrBadResponse
	ErrCommit         = storage.ErrCommitFailed
	ErrInvalidModule  = wasm.ErrInvalidModule
	// ErrNotRun: the event was dropped before it started (its caller's
	// context ended while it was queued); it had no effect.
	ErrNotRun = errors.New("event not run")
	// ErrOutcomeUnknown: a request forwarded to the shard's owner (a host
	// of the POP) got no answer once sent — the owner died, or the
	// connection broke or timed out — so it may or may not have run there.
	// A caller with a fallback must not apply the write again.
	ErrOutcomeUnknown = errors.New("outcome unknown")
)

// ErrEngineMismatch is returned by New for a Config that asks the shared
// Config.Engine for something it was not started with.
var ErrEngineMismatch = errors.New("config conflicts with the shared engine")

// Host runs namespaces of shards.
type Host struct {
	cfg     Config
	log     zerolog.Logger
	engine  *wasm.Engine
	ownEng  bool // the host started engine and closes it
	store   *storage.Engine
	budget  *memBudget
	alarms  *scheduler
	mu      sync.RWMutex
	ns      map[string]*Namespace
	closing chan struct{}
	wg      sync.WaitGroup // actors
	closeMu sync.Mutex
	closed  bool
	started time.Time
	metrics *metrics
	insp    inspection // inspect_shards.go
	// sqlCrash, from hostinternal.WithShardSQLCrash: tests crash a shard
	// between its SQL commit and its key-value commit.
	sqlCrash func(binding, shard string) bool
	ws       wsRegistry // websocket.go
	calls    CallRouter // shard_call's router (call.go)
	waits    waitGraph  // which shard of this host waits on which (call.go)
	outm     *outboundMetrics
}

// New starts a host: opens storage, compiles every binding's module,
// restores persisted alarms. Errors name the binding and the problem.
func New(ctx context.Context, cfg Config) (*Host, error) {
	cfg = cfg.withDefaults()
	h := &Host{cfg: cfg, log: cfg.Logger, ns: map[string]*Namespace{}, closing: make(chan struct{}), started: time.Now(),
		sqlCrash: hostinternal.ShardSQLCrash(ctx)}
	if err := validateBindings(cfg); err != nil {
		return nil, err
	}
	h.calls = h
	if cfg.Calls != nil {
		h.calls = cfg.Calls(h)
	}
	if cfg.NodeID != "" && !abi.ValidNodeID(cfg.NodeID) {
		return nil, fmt.Errorf("node id %q: want 1-%d characters of [A-Za-z0-9._-]", cfg.NodeID, abi.MaxNodeID)
	}
	if e := cfg.Engine; e != nil && cfg.MemoryLimitMiB != 0 && cfg.MemoryLimitMiB != e.memLimit {
		return nil, fmt.Errorf("%w: MemoryLimitMiB %d differs from the shared engine's %d (set it in EngineConfig, or leave it 0)",
			ErrEngineMismatch, cfg.MemoryLimitMiB, e.memLimit)
	}
	if cfg.CacheDir != "" {
		if err := os.MkdirAll(cfg.CacheDir, 0o755); err != nil {
			return nil, fmt.Errorf("compilation cache: %w", err)
		}
	}
	var err error
	if cfg.Engine != nil {
		h.engine = cfg.Engine.e
	} else {
		h.engine, err = wasm.NewEngine(ctx, engineConfig(ctx, cfg.CacheDir, cfg.MemoryLimitMiB))
		if err != nil {
			return nil, err
		}
		h.ownEng = true
	}
	backend := cfg.Storage
	if backend == nil {
		dir := filepath.Join(cfg.DataDir, "shards")
		bo := cfg.Badger
		bo.Dir, bo.SyncWrites = dir, cfg.SyncWrites
		if bo.Logger == nil {
			bo.Logger = &h.log
		}
		backend, err = storage.OpenBadger(bo)
		if err != nil {
			if h.ownEng {
				h.engine.Close(ctx)
			}
			return nil, fmt.Errorf("open shard storage %s: %w", dir, err)
		}
	}
	if err := prepareStorage(backend, cfg, h.log); err != nil {
		backend.Close()
		if h.ownEng {
			h.engine.Close(ctx)
		}
		return nil, err
	}
	// Unconfirmed writes (rate-limit windows) wait up to 1 ms for company
	// before their group commits: fewer fsyncs, and nobody waits on them.
	eo := storage.EngineOptions{UnconfirmedLinger: time.Millisecond, CacheTotalBytes: cfg.ShardCacheBytes}
	if cfg.ShardCacheBytes < 0 {
		eo.CacheBytes = -1
	}
	h.store = storage.NewEngine(backend, eo)
	h.budget = newMemBudget(h.budgetBytes(), cfg.InstanceStartWait)
	h.alarms = newScheduler(h)
	h.metrics = newMetrics(h, cfg.Registerer)
	h.outm = newOutboundMetrics(cfg.Registerer)
	nss, err := h.loadNamespaces(ctx, cfg.Bindings)
	for _, ns := range nss {
		if ns != nil {
			h.ns[ns.name] = ns // so that Close below releases them on error
		}
	}
	if err != nil {
		h.Close(ctx)
		return nil, err
	}
	if err := h.restoreAlarms(); err != nil {
		h.Close(ctx)
		return nil, err
	}
	return h, nil
}

// loadNamespaces reads, validates and compiles (or loads from the cache)
// the bindings' modules concurrently, up to GOMAXPROCS at a time, with
// wazero compiling each module on GOMAXPROCS workers: a warm start is
// bounded by the slowest module rather than by their sum. It returns every
// namespace that loaded and the first error in binding order.
func (h *Host) loadNamespaces(ctx context.Context, bs []Binding) ([]*Namespace, error) {
	ctx = wasm.WithCompileWorkers(ctx, runtime.GOMAXPROCS(0))
	if len(bs) > 0 {
		// A cold start compiles every module to machine code (seconds each
		// for a Go guest); say so rather than stay silent.
		h.log.Info().Int("modules", len(bs)).Str("cache_dir", h.cfg.CacheDir).
			Msg("loading modules: compiling those not in the compilation cache (seconds per module on a cold start)")
	}
	nss := make([]*Namespace, len(bs))
	errs := make([]error, len(bs))
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for i, b := range bs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			t0 := time.Now()
			nss[i], errs[i] = h.newNamespace(ctx, b)
			if errs[i] == nil {
				v := nss[i].Current()
				h.log.Info().Str("binding", b.Name).Str("module", v.Short()).Str("source", v.Source).
					Dur("took_ms", time.Since(t0)).Msg("module ready")
			}
		}()
	}
	wg.Wait()
	return nss, firstErr(errs)
}

func firstErr(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func validateBindings(cfg Config) error {
	seen := map[string]bool{}
	for _, b := range cfg.Bindings {
		switch {
		case b.Name == "":
			return errors.New("binding with an empty name")
		case strings.ContainsRune(b.Name, 0):
			return fmt.Errorf("binding %q: a name may not contain a NUL byte", b.Name)
		case seen[b.Name]:
			return fmt.Errorf("binding %q is declared twice", b.Name)
		case b.Shards < 0:
			return fmt.Errorf("binding %q: shards must be ≥ 0, got %d", b.Name, b.Shards)
		case b.SQL == ShardSQL && cfg.SQL[ShardSQL] != nil:
			return fmt.Errorf("binding %q: sql = %q is ambiguous: it means a database per shard, and Config.SQL also names a database so", b.Name, ShardSQL)
		case b.SQL == ShardSQL && cfg.Placement != nil:
			return fmt.Errorf("binding %q: sql = %q is not supported on a POP of several hosts ([cluster]): a shard's own database does not move with the shard; use a shared SQL database (fenced) or run the binding on a host alone", b.Name, ShardSQL)
		case b.SQL == ShardSQL && cfg.DataDir == "":
			return fmt.Errorf("binding %q: sql = %q needs a DataDir to keep the shards' databases in", b.Name, ShardSQL)
		case b.SQL != "" && b.SQL != ShardSQL && cfg.SQL[b.SQL] == nil:
			return fmt.Errorf("binding %q: sql database %q is not configured", b.Name, b.SQL)
		case b.Analytics != "" && cfg.Analytics[b.Analytics].Sink == nil:
			return fmt.Errorf("binding %q: analytics dataset %q is not configured", b.Name, b.Analytics)
		}
		if err := checkLogCodes(b.LogCodes); err != nil {
			return fmt.Errorf("binding %q: %w", b.Name, err)
		}
		if err := checkOutbound(cfg, b); err != nil {
			return fmt.Errorf("binding %q: %w", b.Name, err)
		}
		seen[b.Name] = true
	}
	return nil
}

func (h *Host) restoreAlarms() error {
	all, err := h.store.Alarms()
	if err != nil {
		return fmt.Errorf("restore alarms: %w", err)
	}
	n := 0
	for _, a := range all {
		if _, ok := h.namespace(a.Shard.Namespace); !ok {
			h.log.Warn().Str("shard", a.Shard.String()).Msg("persisted alarm for a binding that is not configured; left in place")
			continue
		}
		h.alarms.schedule(a.Shard, a.At, 0)
		n++
	}
	if n > 0 {
		h.log.Info().Int("alarms", n).Msg("restored persisted alarms")
	}
	return nil
}

func (h *Host) namespace(name string) (*Namespace, bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	ns, ok := h.ns[name]
	return ns, ok
}

// Namespace returns the named namespace.
func (h *Host) Namespace(name string) (*Namespace, bool) { return h.namespace(name) }

// Namespaces returns every namespace, sorted by name.
func (h *Host) Namespaces() []*Namespace {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]*Namespace, 0, len(h.ns))
	for _, ns := range h.ns {
		out = append(out, ns)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// Fetch routes req to the shard of key in binding and returns its
// response once every write the event made is durable.
func (h *Host) Fetch(ctx context.Context, binding, key string, req *abi.Request) (*abi.Response, error) {
	ns, ok := h.namespace(binding)
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownBinding, binding)
	}
	return ns.Fetch(ctx, key, req)
}

// Clock returns the host's clock.
func (h *Host) Clock() clock.Clock { return h.cfg.Clock }

// Close stops accepting events, drains the queued ones, commits storage and
// closes everything. It is safe to call more than once.
func (h *Host) Close(ctx context.Context) error {
	h.closeMu.Lock()
	if h.closed {
		h.closeMu.Unlock()
		return nil
	}
	h.closed = true
	close(h.closing)
	h.closeMu.Unlock()
	if h.alarms != nil {
		h.alarms.stop()
	}
	h.ws.closeAll()
	for _, ns := range h.Namespaces() {
		ns.stopActors()
	}
	h.wg.Wait()
	var errs []error
	for _, ns := range h.Namespaces() {
		ns.closeModules()
	}
	if h.store != nil {
		if err := h.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close storage: %w", err))
		}
	}
	if h.engine != nil && h.ownEng {
		if err := h.engine.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (h *Host) isClosing() bool {
	select {
	case <-h.closing:
		return true
	default:
		return false
	}
}
