package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/edgeshard/edgeshard/edge"
	"github.com/edgeshard/edgeshard/edge/schema"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/host/config"
	"github.com/edgeshard/edgeshard/internal/httpx"
	"github.com/edgeshard/edgeshard/storage"
	"github.com/edgeshard/edgeshard/storage/analytics"
	"github.com/edgeshard/edgeshard/storage/sqldb"
	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

func runServe(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "edgeshard.toml", "configuration file")
	watchFiles := fs.Bool("watch", false, "reload a binding when its module file changes (debounced; same validation as a push)")
	dev := fs.Bool("dev", false, "development mode: human-readable debug logs")
	trace := fs.String("trace", "", "log every host call of a shard: BINDING/SHARD, BINDING/* or *")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := config.Load(*cfgPath)
	if err == nil && *dev {
		cfg.LogFormat, cfg.LogLevel = "console", "debug"
	}
	if err == nil && *trace != "" {
		cfg.Trace = *trace
	}
	if err != nil {
		fmt.Fprintf(stderr, "edgeshard serve: %v\n", err)
		return 1
	}
	log := newLogger(cfg, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, cfg, log, serveOptions{Watch: *watchFiles}); err != nil {
		log.Error().Err(err).Msg("edgeshard stopped with an error")
		return 1
	}
	return 0
}

func newLogger(cfg *config.File, w io.Writer) zerolog.Logger {
	level, err := zerolog.ParseLevel(cfg.LogLevel)
	if err != nil {
		level = zerolog.InfoLevel
	}
	var out io.Writer = w
	if cfg.LogFormat == "console" {
		out = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339, NoColor: !isTerminal(w)}
	}
	return zerolog.New(out).Level(level).With().Timestamp().Logger()
}

// serve runs the host until ctx is cancelled, then shuts down gracefully:
// stop accepting (edge and admin API, watcher), drain in-flight events,
// commit storage, close SQL.
func serve(ctx context.Context, cfg *config.File, log zerolog.Logger, opts serveOptions) error {
	t0 := time.Now()
	if err := cfg.CheckExtra(edge.ConfigTables()...); err != nil {
		return err
	}
	ecfg, edgeOn, err := edge.ConfigFromFile(cfg, os.LookupEnv)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return fmt.Errorf("data_dir %s: %w", cfg.DataDir, err)
	}
	var closers []func() error
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}()
	dbs := map[string]host.SQLDB{}
	sqlDBs := map[string]*sqldb.DB{}
	for _, d := range cfg.D1Databases {
		db, err := sqldb.Open(d.URL, sqldb.Options{Synchronous: strings.ToUpper(d.Synchronous)})
		if err != nil {
			return fmt.Errorf("d1 database %s: %w", d.Binding, err)
		}
		closers = append(closers, db.Close)
		dbs[d.Binding] = db
		sqlDBs[d.Binding] = db
	}
	sinks := map[string]host.AnalyticsBinding{}
	for _, a := range cfg.Analytics {
		url := a.URL
		if url == "" {
			url = "sqlite://" + filepath.Join(cfg.DataDir, "analytics.db")
		}
		sink, err := analytics.OpenSQLite(url, analytics.SinkOptions{})
		if err != nil {
			return fmt.Errorf("analytics dataset %s: %w", a.Binding, err)
		}
		closers = append(closers, sink.Close)
		ds := a.Dataset
		if ds == "" {
			ds = a.Binding
		}
		sinks[a.Binding] = host.AnalyticsBinding{Dataset: ds, Sink: sink}
	}
	hc := host.DefaultConfig()
	hc.DataDir = cfg.DataDir
	hc.CacheDir = cfg.CacheDir
	hc.SyncWrites = cfg.SyncWrites == nil || *cfg.SyncWrites
	hc.Badger = storage.BadgerOptions{MinFreeBytes: int64(cfg.Storage.MinFreeMB) << 20, ValueLogFileSize: int64(cfg.Storage.ValueLogFileMB) << 20}
	hc.Vars = cfg.Vars
	hc.SQL = dbs
	hc.Analytics = sinks
	hc.EventTimeout = cfg.EventTimeout.Duration
	hc.IdleTimeout = cfg.IdleTimeout.Duration
	hc.QueueDepth = cfg.QueueDepth
	hc.MemoryLimitMiB = cfg.MemoryLimitMB
	hc.MaxBodyBytes = cfg.MaxBodyBytes
	hc.TraceShard = cfg.Trace
	hc.Logger = log
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	hc.Registerer = reg
	for _, b := range cfg.DurableObjects.Bindings {
		hc.Bindings = append(hc.Bindings, host.Binding{Name: b.Name, Module: b.Module, Shards: b.Shards, SQL: b.SQL, Analytics: b.Analytics,
			Internal: edgeOn && isEdgeBinding(ecfg, b.Name)})
	}
	h, err := host.New(ctx, hc)
	if err != nil {
		return err
	}
	hostClosed := false
	closeHost := func() error {
		if hostClosed {
			return nil
		}
		hostClosed = true
		cctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace.Duration)
		defer cancel()
		return h.Close(cctx)
	}
	closers = append(closers, closeHost)

	api, err := newEdgeAPI(ctx, ecfg, edgeOn, h, sqlDBs, log, reg)
	if err != nil {
		return err
	}
	stopReconcile := func() {}
	var reconcile func(context.Context) (any, error)
	if api != nil {
		closers = append(closers, func() error { api.Close(); return nil })
		stopReconcile = startReconcileTicker(api, ecfg.Reconcile.Interval, log)
		closers = append(closers, func() error { stopReconcile(); return nil })
		reconcile = func(ctx context.Context) (any, error) { return api.ReconcileCounters(ctx) }
	}

	r := mux.NewRouter()
	r.NotFoundHandler = httpx.NotFound()
	r.MethodNotAllowedHandler = httpx.MethodNotAllowed()
	h.Routes(r)
	if api != nil {
		api.Routes(r)
	}
	r.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})).Methods(http.MethodGet)
	r.HandleFunc("/readyz", func(w http.ResponseWriter, req *http.Request) {
		if api != nil {
			if err := api.Ready(req.Context()); err != nil {
				httpx.WriteError(w, http.StatusServiceUnavailable, "not_ready", err.Error())
				return
			}
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	}).Methods(http.MethodGet, http.MethodHead)

	// The admin API (and watcher) start before the main listener serves:
	// once /healthz answers, the admin API answers too.
	op, err := startOperator(cfg, h, log, opts, reconcile)
	if err != nil {
		return err
	}
	closers = append(closers, func() error { op.Stop(context.Background()); return nil })
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	srv := &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	var names []string
	for _, b := range hc.Bindings {
		names = append(names, b.Name)
	}
	log.Info().Str("listen", ln.Addr().String()).Strs("bindings", names).Dur("startup", time.Since(t0)).Msg("edgeshard ready")
	if opts.Ready != nil {
		opts.Ready(ln.Addr().String())
	}
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http server: %w", err)
		}
	}
	log.Info().Msg("shutting down: draining in-flight requests and shard events")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace.Duration)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn().Err(err).Msg("http shutdown did not finish in time")
	}
	op.Stop(sctx)
	stopReconcile()
	if err := closeHost(); err != nil {
		return fmt.Errorf("close host: %w", err)
	}
	log.Info().Msg("edgeshard stopped cleanly")
	return nil
}

// newEdgeAPI builds the edge API over the host's namespaces and the SQL
// database its config names; nil when [edge] enabled = false, or when the
// config has neither that database nor any of the edge bindings (a config
// for other shard types only, such as edgeshard.dev-counter.toml).
func newEdgeAPI(ctx context.Context, ecfg edge.Config, on bool, h *host.Host, dbs map[string]*sqldb.DB, log zerolog.Logger, reg prometheus.Registerer) (*edge.API, error) {
	if !on {
		log.Info().Msg("edge API disabled ([edge] enabled = false)")
		return nil, nil
	}
	db := dbs[ecfg.SQLBinding]
	if db == nil {
		for _, b := range []string{ecfg.RateLimitBinding, ecfg.EventBinding, ecfg.CounterBinding} {
			if _, ok := h.Namespace(b); ok {
				return nil, fmt.Errorf("edge API: binding %s is configured but the sql database %q is not: add a [[d1_databases]] entry with binding = %q", b, ecfg.SQLBinding, ecfg.SQLBinding)
			}
		}
		log.Warn().Str("sql", ecfg.SQLBinding).Msg("edge API disabled: the config has no edge bindings and no sql database for it")
		return nil, nil
	}
	rep, err := schema.Migrate(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("d1 database %s: %w", ecfg.SQLBinding, err)
	}
	if len(rep.Applied) > 0 {
		log.Info().Str("sql", ecfg.SQLBinding).Ints("applied", rep.Applied).Int("version", rep.Version).Msg("edge API schema migrated")
	}
	return edge.New(ecfg, edge.Deps{Host: h, DB: db, Logger: log, Registerer: reg})
}

// isEdgeBinding reports whether the edge API uses the binding. Those are
// internal: not served at /do/{binding}/..., so edge clients reach them
// only through the edge API's authenticated, validated routes.
func isEdgeBinding(ecfg edge.Config, name string) bool {
	return name == ecfg.RateLimitBinding || name == ecfg.EventBinding || name == ecfg.CounterBinding
}

// startReconcileTicker runs reconcileCounters every interval (none when 0)
// and returns a function that stops it and waits for a run in progress.
func startReconcileTicker(api *edge.API, interval time.Duration, log zerolog.Logger) (stop func()) {
	if interval <= 0 {
		log.Info().Msg("reconcileCounters ticker disabled ([reconcile] interval = 0)")
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				// Errors are logged by ReconcileCounters; the next tick retries.
				_, _ = api.ReconcileCounters(ctx)
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { cancel(); <-done }) }
}

// isTerminal reports whether w is a character device (colours only then).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
