// Package server wires a running edgeshard from its config file: the
// components `edgeshard serve`, the benchmark driver and the tests start
// alike. Each component has Start and Stop; a Server starts them in order
//
//	databases  the [[d1_databases]] and [[analytics_engine_datasets]]
//	host       the shard runtime (storage, modules, alarms)
//	edge       the edge API (its schema migrated first), unless disabled
//	reconcile  the reconcileCounters ticker, when the edge API runs and [reconcile] interval > 0
//	admin      the admin API on admin_listen, when a token is set
//	watch      the module file watcher (--watch)
//	http       the main listener: /do, the edge routes, /healthz, /readyz, /metrics
//
// and stops them in reverse, each within the config's shutdown_grace. If one
// fails to start, the started ones are stopped in reverse and nothing is
// left running. The admin API starts before the main listener, so once
// /healthz answers the admin API answers too; the main listener stops
// first, so requests in flight drain before the host drains its shards.
package server

import (
	"context"
	"errors"
	"fmt"
	"github.com/edgeshard/edgeshard/storage"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/edgeshard/edgeshard/cluster"
	"github.com/edgeshard/edgeshard/edge"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/host/config"
	"github.com/edgeshard/edgeshard/host/watch"
	"github.com/edgeshard/edgeshard/internal/httpx"
	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// Options are the choices of a run that are not settings of the config
// file.
type Options struct {
	// Logger receives every component's logs; the zero value discards them.
	Logger zerolog.Logger
	// Watch reloads a binding when its module file changes (serve --watch).
	Watch bool
	// LookupEnv reads the environment variables that override the edge
	// API's settings (rollout modes, JWT secret); os.LookupEnv when nil.
	LookupEnv func(string) (string, bool)
	// Engine, when set, is a compilation engine the host shares (tests,
	// benchmarks) and does not close.
	Engine *host.Engine
	// InitSQL lets the edge API initialise an empty SQL database even when
	// data_dir shows it had initialised one before (serve --init-sql).
	InitSQL bool
	// Ready, when set, is called by Run with the main listener's address
	// once it serves.
	Ready func(addr string)
}

// Server is one edgeshard: its components and their state. Create it with
// New, then Run it, or Start and Stop it.
type Server struct {
	cfg      *config.File
	opts     Options
	log      zerolog.Logger
	reg      *prometheus.Registry
	bindings []string

	dbs     *databases
	rt      *hostRuntime
	edge    *edgeAPI // nil when the edge API is off
	admin   *adminAPI
	http    *listener
	cluster *clusterNode // nil: the host runs alone

	mu      sync.Mutex
	group   group
	state   int // stateNew, stateRunning, stateStopped
	handler http.Handler

	shutdownTimeout time.Duration // bounds Stop as a whole (0: none)
}

const (
	stateNew = iota
	stateRunning
	stateStopped
)

// New builds the components cfg describes, without starting any: it checks
// what can be checked before anything opens (tables no one owns, the edge
// API's settings, an edge binding without its SQL database) and logs which
// optional components stay off and why.
func New(cfg *config.File, opts Options) (*Server, error) {
	if err := cfg.CheckExtra(append(edge.ConfigTables(), cluster.Table)...); err != nil {
		return nil, err
	}
	lookup := opts.LookupEnv
	if lookup == nil {
		lookup = os.LookupEnv
	}
	ecfg, edgeOn, err := edge.ConfigFromFile(cfg, lookup)
	if err != nil {
		return nil, err
	}
	ccfg, clustered, err := cluster.ConfigFromFile(cfg, lookup)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	s := &Server{cfg: cfg, opts: opts, log: log, reg: prometheus.NewRegistry()}
	s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if edgeOn {
		edgeOn, err = edgeWanted(cfg, ecfg, log)
		if err != nil {
			return nil, err
		}
	} else {
		log.Info().Msg("edge API disabled ([edge] enabled = false)")
	}

	hc := host.DefaultConfig()
	hc.DataDir = cfg.DataDir
	hc.CacheDir = cfg.CacheDir
	hc.SyncWrites = cfg.SyncWrites == nil || *cfg.SyncWrites
	hc.Vars = cfg.Vars
	hc.EventTimeout = cfg.EventTimeout.Duration
	hc.IdleTimeout = cfg.IdleTimeout.Duration
	hc.QueueDepth = cfg.QueueDepth
	hc.FetchBatch = cfg.FetchBatch
	hc.MemoryLimitMiB = cfg.MemoryLimitMB
	hc.InstanceMemoryBudgetMiB = cfg.InstanceMemoryBudgetMB
	hc.InstanceStartWait = cfg.InstanceStartWait.Duration
	hc.MaxBodyBytes = cfg.MaxBodyBytes
	hc.WebSocket = host.WebSocketLimits{MaxSocketsPerShard: cfg.WebSocket.MaxSocketsPerShard, MaxMessageBytes: cfg.WebSocket.MaxMessageBytes,
		SendQueueBytes: cfg.WebSocket.SendQueueBytes, WriteTimeout: cfg.WebSocket.WriteTimeout.Duration}
	hc.Limits = hostLimits(&cfg.Limits)
	hc.TraceShard = cfg.Trace
	hc.Badger = BadgerOptions(cfg)
	hc.ShardCacheBytes = cfg.Storage.ShardCacheMB << 20
	hc.Migrations = Migrations(cfg)
	hc.Logger = log
	hc.Registerer = s.reg
	hc.Engine = opts.Engine
	for _, b := range cfg.DurableObjects.Bindings {
		hc.Bindings = append(hc.Bindings, hostBinding(b, edgeOn, ecfg))
		s.bindings = append(s.bindings, b.Name)
	}

	s.dbs = &databases{cfg: cfg, log: log}
	s.rt = &hostRuntime{cfg: hc, dbs: s.dbs}
	comps := []Component{s.dbs}
	if clustered {
		s.cluster = &clusterNode{cfg: ccfg, rt: s.rt, log: log, reg: s.reg}
		comps = append(comps, s.cluster)
	}
	comps = append(comps, s.rt)
	if edgeOn {
		s.edge = &edgeAPI{cfg: ecfg, dataDir: cfg.DataDir, initSQL: opts.InitSQL, dbs: s.dbs, rt: s.rt, log: log, reg: s.reg}
		comps = append(comps, s.edge)
		if iv := ecfg.Reconcile.Interval; iv > 0 {
			comps = append(comps, &reconciler{edge: s.edge, interval: iv})
		} else {
			log.Info().Msg("reconcileCounters ticker disabled ([reconcile] interval = 0)")
		}
	}
	switch {
	case cfg.AdminToken == "":
		log.Warn().Msg("admin API disabled: set admin_token or EDGESHARD_ADMIN_TOKEN")
	case cfg.AdminListen == "":
		log.Warn().Msg("admin API disabled: admin_listen is empty")
	default:
		s.admin = &adminAPI{addr: cfg.AdminListen, token: cfg.AdminToken, readTimeout: cfg.ReadTimeout.Duration, rt: s.rt, edge: s.edge, log: log, reg: s.reg}
		if edgeOn {
			// The inspector charts the edge API's fallbacks on the binding
			// each pipeline falls back from.
			s.admin.fallbacks = map[string]string{"ratelimit": ecfg.RateLimitBinding, "runtime_events": ecfg.EventBinding, "counters": ecfg.CounterBinding}
		}
		if cfg.Metrics == "admin" {
			s.admin.metrics = s.metricsHandler()
		}
		s.admin.cluster = s.cluster
		comps = append(comps, s.admin)
	}
	if opts.Watch {
		var targets []watch.Target
		for _, b := range cfg.DurableObjects.Bindings {
			targets = append(targets, watch.Target{Binding: b.Name, Path: b.Module})
		}
		comps = append(comps, &watcher{targets: targets, rt: s.rt, log: log})
	}
	s.http = &listener{addr: cfg.Listen, readTimeout: cfg.ReadTimeout.Duration, handler: s.routes}
	comps = append(comps, s.http)
	if s.cluster != nil {
		comps = append(comps, &clusterJoin{c: s.cluster})
	}
	s.group = group{comps: comps, grace: cfg.ShutdownGrace.Duration, log: log}
	s.shutdownTimeout = cfg.ShutdownTimeout.Duration
	return s, nil
}

// BadgerOptions are the shard storage settings of cfg's [storage] table
// (the host sets Dir, SyncWrites and the logger).
func BadgerOptions(cfg *config.File) storage.BadgerOptions {
	st := cfg.Storage
	return storage.BadgerOptions{MinFreeBytes: int64(st.MinFreeMB) << 20, ValueLogFileSize: int64(st.ValueLogFileMB) << 20,
		MemTableSize: int64(st.MemtableMB) << 20, BlockCacheSize: int64(st.BlockCacheMB) << 20, IndexCacheSize: int64(st.IndexCacheMB) << 20}
}

// Migrations are cfg's [[migrations]] as the host takes them.
func Migrations(cfg *config.File) []host.Migration {
	out := make([]host.Migration, 0, len(cfg.Migrations))
	for _, m := range cfg.Migrations {
		hm := host.Migration{Tag: m.Tag, Deleted: m.DeletedBindings}
		for _, r := range m.RenamedBindings {
			hm.Renamed = append(hm.Renamed, host.BindingRename{From: r.From, To: r.To})
		}
		out = append(out, hm)
	}
	return out
}

// hostBinding is the host binding a config binding becomes.
func hostBinding(b config.Binding, edgeOn bool, ecfg edge.Config) host.Binding {
	// The edge API's bindings are internal: not served at /do, so edge
	// clients reach them only through its authenticated routes.
	hb := host.Binding{Name: b.Name, Module: b.Module, Shards: b.Shards, SQL: b.SQL, Analytics: b.Analytics,
		Internal: edgeOn && isEdgeBinding(ecfg, b.Name), LogCodes: b.LogCodes}
	if b.Limits != nil {
		l := hostLimits(b.Limits)
		hb.Limits = &l
	}
	if hb.LogCodes == nil {
		hb.LogCodes = defaultLogCodes(edgeOn, ecfg, b.Name)
	}
	hb.Calls = b.Calls
	if len(b.FetchHosts) > 0 || len(b.FetchAllowPrivate) > 0 {
		hb.Fetch = &host.FetchConfig{Hosts: b.FetchHosts, AllowPrivate: b.FetchAllowPrivate, MaxResponseBytes: b.FetchMaxResponseBytes}
		if b.FetchTimeout != nil {
			hb.Fetch.Timeout = b.FetchTimeout.Duration
		}
	}
	return hb
}

// HostBinding returns the host binding `serve` makes of the config's
// binding name (its grants, limits and log codes), and the host-wide
// limits, for `edgeshard validate --config`. lookup reads the environment.
func HostBinding(cfg *config.File, name string, lookup func(string) (string, bool)) (host.Binding, host.Limits, error) {
	b, ok := cfg.Binding(name)
	if !ok {
		return host.Binding{}, host.Limits{}, fmt.Errorf("config %s has no binding %q", cfg.Path(), name)
	}
	ecfg, edgeOn, err := edge.ConfigFromFile(cfg, lookup)
	if err != nil {
		return host.Binding{}, host.Limits{}, err
	}
	if edgeOn {
		if edgeOn, err = edgeWanted(cfg, ecfg, zerolog.Nop()); err != nil {
			return host.Binding{}, host.Limits{}, err
		}
	}
	return hostBinding(b, edgeOn, ecfg), hostLimits(&cfg.Limits), nil
}

// edgeWanted reports whether the edge API can run: it needs its SQL
// database. Without one it stays off, unless the config has one of its
// bindings (then the config is wrong, and New fails): a config for other
// shard types only, such as edgeshard.dev-counter.toml, runs without it.
func edgeWanted(cfg *config.File, ecfg edge.Config, log zerolog.Logger) (bool, error) {
	for _, d := range cfg.D1Databases {
		if d.Binding == ecfg.SQLBinding {
			return true, nil
		}
	}
	for _, b := range cfg.DurableObjects.Bindings {
		if isEdgeBinding(ecfg, b.Name) {
			return false, fmt.Errorf("edge API: binding %s is configured but the sql database %q is not: add a [[d1_databases]] entry with binding = %q", b.Name, ecfg.SQLBinding, ecfg.SQLBinding)
		}
	}
	log.Warn().Str("sql", ecfg.SQLBinding).Msg("edge API disabled: the config has no edge bindings and no sql database for it")
	return false, nil
}

// isEdgeBinding reports whether the edge API uses the binding.
func isEdgeBinding(ecfg edge.Config, name string) bool {
	return name == ecfg.RateLimitBinding || name == ecfg.EventBinding || name == ecfg.CounterBinding
}

// Start creates data_dir and starts the components in order; if one fails,
// it stops the started ones in reverse and returns the failure. A Server
// starts at most once.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != stateNew {
		return errors.New("server: started twice")
	}
	s.state = stateStopped // unless everything starts
	t0 := time.Now()
	if err := os.MkdirAll(s.cfg.DataDir, 0o755); err != nil {
		return fmt.Errorf("data_dir %s: %w", s.cfg.DataDir, err)
	}
	if err := s.identify(); err != nil {
		return err
	}
	if err := s.group.start(ctx); err != nil {
		return err
	}
	s.state = stateRunning
	s.log.Info().Str("listen", s.http.ln.Addr().String()).Strs("bindings", s.bindings).Dur("startup_ms", time.Since(t0)).Msg("edgeshard ready")
	return nil
}

// identify settles the node id — node_id (or EDGESHARD_NODE_ID), else the
// one data_dir keeps (made up on first start) — logs it, and gives it to
// the components that use it: the host (the reserved var edgeshard.node),
// the databases (PostgreSQL's application_name) and the edge API.
func (s *Server) identify() error {
	id, source := s.cfg.NodeID, "configured (node_id or EDGESHARD_NODE_ID)"
	if id == "" {
		var created bool
		var err error
		if id, created, err = host.LoadNodeID(s.cfg.DataDir); err != nil {
			return err
		}
		source = "kept in data_dir/" + host.NodeIDFile
		if created {
			source = "made up on first start, kept in data_dir/" + host.NodeIDFile
		}
	}
	s.rt.cfg.NodeID, s.dbs.node = id, id
	if s.edge != nil {
		s.edge.cfg.NodeID = id
	}
	s.log.Info().Str("node_id", id).Str("source", source).Msg("node identity")
	return nil
}

// NodeID returns the node id the server runs as; "" before Start.
func (s *Server) NodeID() string { return s.rt.cfg.NodeID }

// Stop stops the components in reverse order — the main listener first,
// draining requests in flight, the host late, draining shard events and
// committing storage, the databases last — each within shutdown_grace, and
// returns every failure. It is safe to call more than once, and before or
// instead of Start.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != stateRunning {
		s.state = stateStopped
		return nil
	}
	s.state = stateStopped
	s.log.Info().Dur("shutdown_grace_ms", s.group.grace).Dur("shutdown_timeout_ms", s.shutdownTimeout).Msg("shutting down: draining in-flight requests and shard events")
	if s.shutdownTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.shutdownTimeout)
		defer cancel()
	}
	if err := s.group.stop(ctx); err != nil {
		s.log.Error().Err(err).Msg("edgeshard did not stop cleanly")
		return err
	}
	s.log.Info().Msg("edgeshard stopped cleanly")
	return nil
}

// Run starts the server, serves until ctx ends or the main listener fails,
// then stops it.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Start(ctx); err != nil {
		return err
	}
	if s.opts.Ready != nil {
		s.opts.Ready(s.Addr())
	}
	var runErr error
	select {
	case <-ctx.Done():
	case err := <-s.http.failed:
		runErr = fmt.Errorf("http server: %w", err)
	}
	return errors.Join(runErr, s.Stop(context.Background()))
}

// routes returns the main listener's handler: the host's routes, the edge
// API's, /metrics and /readyz.
func (s *Server) routes() http.Handler {
	r := mux.NewRouter()
	r.NotFoundHandler = httpx.NotFound()
	r.MethodNotAllowedHandler = httpx.MethodNotAllowed()
	s.rt.h.Routes(r)
	if s.cluster != nil {
		r.Handle(cluster.PeerPath, s.cluster.node.PeerHandler(s.rt.h)).Methods(http.MethodPost)
		r.Handle(cluster.ReceivePath, s.cluster.node.ReceiveHandler(s.rt.h)).Methods(http.MethodPost)
	}
	var api *edge.API
	if s.edge != nil {
		api = s.edge.api
		api.Routes(r)
	}
	if s.cfg.Metrics == "main" {
		m := s.metricsHandler()
		if s.cfg.MetricsToken != "" {
			m = httpx.RequireBearer(s.cfg.MetricsToken, m)
		}
		r.Handle("/metrics", m).Methods(http.MethodGet)
	}
	r.HandleFunc("/readyz", func(w http.ResponseWriter, req *http.Request) {
		if api != nil {
			if err := api.Ready(req.Context()); err != nil {
				httpx.WriteError(w, http.StatusServiceUnavailable, "not_ready", err.Error())
				return
			}
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	}).Methods(http.MethodGet, http.MethodHead)
	s.handler = r
	return r
}

// metricsHandler serves the host's Prometheus metrics.
func (s *Server) metricsHandler() http.Handler {
	return promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg})
}

// Host returns the running host; nil before Start.
func (s *Server) Host() *host.Host { return s.rt.h }

// Edge returns the running edge API; nil before Start or when it is off.
func (s *Server) Edge() *edge.API {
	if s.edge == nil {
		return nil
	}
	return s.edge.api
}

// Handler returns the main listener's handler, to call in-process; nil
// before Start.
func (s *Server) Handler() http.Handler { return s.handler }

// Addr returns the main listener's bound address; "" before Start.
func (s *Server) Addr() string {
	if s.http.ln == nil {
		return ""
	}
	return s.http.ln.Addr().String()
}

// AdminAddr returns the admin API's bound address; "" before Start or when
// the admin API is off.
func (s *Server) AdminAddr() string {
	if s.admin == nil || s.admin.ln == nil {
		return ""
	}
	return s.admin.ln.Addr().String()
}

// components returns the names of the components in start order.
func (s *Server) components() []string {
	names := make([]string, len(s.group.comps))
	for i, c := range s.group.comps {
		names[i] = c.Name()
	}
	return names
}
