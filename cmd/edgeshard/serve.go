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
	"syscall"
	"time"

	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/host/config"
	"github.com/edgeshard/edgeshard/internal/httpx"
	"github.com/edgeshard/edgeshard/storage/analytics"
	"github.com/edgeshard/edgeshard/storage/sqldb"
	"github.com/gorilla/mux"
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
		out = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339}
	}
	return zerolog.New(out).Level(level).With().Timestamp().Logger()
}

// serve runs the host until ctx is cancelled, then shuts down gracefully:
// stop accepting (edge and admin API, watcher), drain in-flight events,
// commit storage, close SQL.
func serve(ctx context.Context, cfg *config.File, log zerolog.Logger, opts serveOptions) error {
	t0 := time.Now()
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
	for _, d := range cfg.D1Databases {
		db, err := sqldb.Open(d.URL, sqldb.Options{Synchronous: strings.ToUpper(d.Synchronous)})
		if err != nil {
			return fmt.Errorf("d1 database %s: %w", d.Binding, err)
		}
		closers = append(closers, db.Close)
		if err := db.Migrate(ctx); err != nil {
			return fmt.Errorf("d1 database %s: migrate: %w", d.Binding, err)
		}
		dbs[d.Binding] = db
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
	for _, b := range cfg.DurableObjects.Bindings {
		hc.Bindings = append(hc.Bindings, host.Binding{Name: b.Name, Module: b.Module, Shards: b.Shards, SQL: b.SQL, Analytics: b.Analytics})
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

	r := mux.NewRouter()
	r.NotFoundHandler = httpx.NotFound()
	r.MethodNotAllowedHandler = httpx.MethodNotAllowed()
	h.Routes(r)
	r.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	}).Methods(http.MethodGet, http.MethodHead)

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
	op, err := startOperator(cfg, h, log, opts, nil)
	if err != nil {
		srv.Close()
		return err
	}
	closers = append(closers, func() error { op.Stop(context.Background()); return nil })
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
	if err := closeHost(); err != nil {
		return fmt.Errorf("close host: %w", err)
	}
	log.Info().Msg("edgeshard stopped cleanly")
	return nil
}
