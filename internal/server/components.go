package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/edgeshard/edgeshard/internal/httpx"
	"io/fs"
	"net"
	"net/http"
	"net/http/pprof"
	neturl "net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgeshard/edgeshard/edge"
	"github.com/edgeshard/edgeshard/edge/schema"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/host/admin"
	"github.com/edgeshard/edgeshard/host/config"
	"github.com/edgeshard/edgeshard/host/watch"
	"github.com/edgeshard/edgeshard/storage/analytics"
	"github.com/edgeshard/edgeshard/storage/sqldb"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// databases opens the [[d1_databases]] and [[analytics_engine_datasets]]
// of the config. The host and the edge API write to them, so they open
// first and close last.
type databases struct {
	cfg    *config.File
	node   string // the node id: PostgreSQL connections name it
	log    zerolog.Logger
	sql    map[string]*sqldb.DB
	sinks  map[string]host.AnalyticsBinding
	closes []func() error // in opening order
}

func (d *databases) Name() string { return "databases" }

func (d *databases) Start(context.Context) error {
	d.sql, d.sinks = map[string]*sqldb.DB{}, map[string]host.AnalyticsBinding{}
	for _, c := range d.cfg.D1Databases {
		db, err := sqldb.Open(c.URL, sqldb.Options{
			Synchronous:      strings.ToUpper(c.Synchronous),
			MaxOpenConns:     c.MaxConns,
			StatementTimeout: c.StatementTimeout.Duration,
			Password:         c.Password,
			ApplicationName:  appName(d.node),
		})
		if err != nil {
			return errors.Join(fmt.Errorf("d1 database %s: %w", c.Binding, err), d.close())
		}
		d.closes = append(d.closes, db.Close)
		d.sql[c.Binding] = db
		if c.IsPostgres() && !verifiesServer(c.URL) {
			d.log.Warn().Str("sql", c.Binding).Str("url", sqldb.Redact(c.URL)).
				Msg("the PostgreSQL URL does not verify the server (add sslmode=verify-full and sslrootcert=…): traffic may be read or altered on the way")
		}
	}
	for _, a := range d.cfg.Analytics {
		url := a.URL
		if url == "" {
			url = "sqlite://" + filepath.Join(d.cfg.DataDir, "analytics.db")
		}
		sink, err := analytics.OpenSQLite(url, analytics.SinkOptions{SQL: sqldb.Options{Password: a.Password, ApplicationName: appName(d.node)}})
		if err != nil {
			return errors.Join(fmt.Errorf("analytics dataset %s: %w", a.Binding, err), d.close())
		}
		d.closes = append(d.closes, sink.Close)
		ds := a.Dataset
		if ds == "" {
			ds = a.Binding
		}
		d.sinks[a.Binding] = host.AnalyticsBinding{Dataset: ds, Sink: sink}
	}
	return nil
}

func (d *databases) Stop(context.Context) error { return d.close() }

// appName is the application_name of a node's PostgreSQL connections:
// "edgeshard/<node id>", so pg_stat_activity tells the POPs apart.
func appName(node string) string {
	if node == "" {
		return "edgeshard"
	}
	return "edgeshard/" + node
}

// verifiesServer reports whether a PostgreSQL URL makes TLS verify the
// server's certificate (sslmode verify-ca or verify-full), or connects to
// the loopback or a Unix socket, where there is no network to guard.
func verifiesServer(raw string) bool {
	u, err := neturl.Parse(raw)
	if err != nil {
		return false
	}
	mode := u.Query().Get("sslmode")
	if mode == "" {
		mode = os.Getenv("PGSSLMODE")
	}
	switch mode {
	case "verify-ca", "verify-full":
		return true
	}
	host := u.Query().Get("host")
	if host == "" {
		host = u.Hostname()
	}
	if host == "localhost" || strings.HasPrefix(host, "/") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// close closes what is open, last opened first.
func (d *databases) close() error {
	var errs []error
	for i := len(d.closes) - 1; i >= 0; i-- {
		errs = append(errs, d.closes[i]())
	}
	d.closes = nil
	return errors.Join(errs...)
}

// hostRuntime is the shard runtime: host.New on Start (open shard
// storage, compile or load every binding's module, restore alarms),
// Host.Close on Stop (drain queued events, commit storage).
type hostRuntime struct {
	cfg host.Config // without the SQL and analytics bindings, which dbs opens
	dbs *databases
	h   *host.Host
}

func (r *hostRuntime) Name() string { return "host" }

func (r *hostRuntime) Start(ctx context.Context) error {
	cfg := r.cfg
	cfg.SQL = map[string]host.SQLDB{}
	for name, db := range r.dbs.sql {
		cfg.SQL[name] = db
	}
	cfg.Analytics = r.dbs.sinks
	h, err := host.New(ctx, cfg)
	if err != nil {
		return err
	}
	r.h = h
	return nil
}

func (r *hostRuntime) Stop(ctx context.Context) error { return r.h.Close(ctx) }

// edgeAPI is the edge application: it migrates its schema in the SQL
// database its config names, then serves its routes over the host's
// namespaces (Server.Handler).
type edgeAPI struct {
	cfg     edge.Config
	dataDir string
	initSQL bool // Options.InitSQL
	dbs     *databases
	rt      *hostRuntime
	log     zerolog.Logger
	reg     prometheus.Registerer
	api     *edge.API
}

func (e *edgeAPI) Name() string { return "edge" }

func (e *edgeAPI) Start(ctx context.Context) error {
	db := e.dbs.sql[e.cfg.SQLBinding]
	if err := e.refuseEmptyDatabase(ctx, db); err != nil {
		return err
	}
	rep, err := schema.Migrate(ctx, db)
	if err != nil {
		return fmt.Errorf("d1 database %s: %w", e.cfg.SQLBinding, err)
	}
	if err := e.markInitialised(rep.Version); err != nil {
		return fmt.Errorf("d1 database %s: %w", e.cfg.SQLBinding, err)
	}
	if len(rep.Applied) > 0 {
		e.log.Info().Str("sql", e.cfg.SQLBinding).Ints("applied", rep.Applied).Int("version", rep.Version).Msg("edge API schema migrated")
	}
	api, err := edge.New(e.cfg, edge.Deps{Host: e.rt.h, DB: db, Logger: e.log, Registerer: e.reg})
	if err != nil {
		return err
	}
	e.api = api
	return nil
}

// sqlMarker is the file in data_dir recording that the edge API's
// database was initialised, and to which schema version.
func (e *edgeAPI) sqlMarker() string {
	return filepath.Join(e.dataDir, "edge-sql-"+e.cfg.SQLBinding+".json")
}

// refuseEmptyDatabase refuses to start on an empty SQL database when
// data_dir shows this host had initialised one: the database was deleted,
// replaced or pointed elsewhere, and starting would silently create empty
// tables (every counter reads 0, flushes land in the wrong place) — unless
// told to initialise (serve --init-sql).
func (e *edgeAPI) refuseEmptyDatabase(ctx context.Context, db *sqldb.DB) error {
	b, err := os.ReadFile(e.sqlMarker())
	if errors.Is(err, fs.ErrNotExist) || e.initSQL {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", e.sqlMarker(), err)
	}
	var m struct {
		Version int       `json:"schema_version"`
		At      time.Time `json:"initialised_at"`
	}
	json.Unmarshal(b, &m)
	if err := db.SQL().PingContext(ctx); err != nil {
		return fmt.Errorf("d1 database %s: %w", e.cfg.SQLBinding, err)
	}
	var v int
	if err := db.SQL().QueryRowContext(ctx, "SELECT version FROM schema_migrations LIMIT 1").Scan(&v); err == nil {
		return nil // it has a schema
	}
	return fmt.Errorf("d1 database %s is empty, but %s says this host initialised it (schema version %d, %s): "+
		"it was deleted, replaced or its url changed; restore it, or start with --init-sql (EDGESHARD_INIT_SQL=1) to initialise an empty one",
		e.cfg.SQLBinding, e.sqlMarker(), m.Version, m.At.Format(time.RFC3339))
}

// markInitialised records the database's schema version in data_dir.
func (e *edgeAPI) markInitialised(version int) error {
	b, _ := json.Marshal(map[string]any{"schema_version": version, "initialised_at": time.Now().UTC()})
	return os.WriteFile(e.sqlMarker(), b, 0o644)
}

// Stop releases the proxy's idle upstream connections; requests in flight
// were drained by the main listener's Stop before.
func (e *edgeAPI) Stop(context.Context) error {
	e.api.Close()
	return nil
}

// background is a component's goroutine: run starts it with a context
// that stop cancels, and stop waits for it to return.
type background struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func (b *background) run(f func(ctx context.Context)) {
	ctx, cancel := context.WithCancel(context.Background())
	b.cancel, b.done = cancel, make(chan struct{})
	go func() { defer close(b.done); f(ctx) }()
}

func (b *background) stop(ctx context.Context) error {
	b.cancel()
	return wait(ctx, b.done)
}

// reconciler runs the edge API's reconcileCounters job every interval.
type reconciler struct {
	edge     *edgeAPI
	interval time.Duration
	background
}

func (r *reconciler) Name() string { return "reconcile" }

func (r *reconciler) Start(context.Context) error {
	api := r.edge.api
	r.run(func(ctx context.Context) {
		t := time.NewTicker(r.interval)
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
	})
	return nil
}

// Stop cancels a run in progress and waits for it to return.
func (r *reconciler) Stop(ctx context.Context) error { return r.stop(ctx) }

// adminAPI serves host/admin (the admin API and the inspector) on
// admin_listen. It starts before the main listener, so that once /healthz
// answers the admin API answers too.
type adminAPI struct {
	addr, token string
	readTimeout time.Duration
	metrics     http.Handler // served at /metrics behind the token; nil: none
	rt          *hostRuntime
	edge        *edgeAPI // nil without an edge API: no reconcile job
	log         zerolog.Logger
	reg         prometheus.Gatherer // the inspector's charts sample it
	fallbacks   map[string]string   // edge fallback pipeline → binding, for the charts
	cluster     *clusterNode        // nil: no /admin/cluster
	api         *admin.Server
	srv         *http.Server
	ln          net.Listener
	done        chan struct{}
}

func (a *adminAPI) Name() string { return "admin" }

func (a *adminAPI) Start(context.Context) error {
	opts := admin.Options{Token: a.token, Logger: a.log, Metrics: a.reg, FallbackBindings: a.fallbacks}
	if a.edge != nil {
		api := a.edge.api
		opts.Reconcile = func(ctx context.Context) (any, error) {
			rep, err := api.ReconcileCounters(ctx)
			if errors.Is(err, edge.ErrReconcileBusy) {
				err = fmt.Errorf("%w: %w", admin.ErrJobBusy, err)
			}
			return rep, err
		}
		opts.Drain = func(ctx context.Context, wait time.Duration) (any, error) { return api.Drain(ctx, wait) }
	}
	if a.cluster != nil {
		opts.Cluster = a.cluster.ops() // POST /admin/jobs/drain leaves the POP
	}
	srv, err := admin.New(a.rt.h, opts)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", a.addr)
	if err != nil {
		srv.Close()
		return fmt.Errorf("admin_listen %s: %w", a.addr, err)
	}
	a.api = srv
	mux := http.NewServeMux()
	if a.metrics != nil {
		mux.Handle("/metrics", httpx.RequireBearer(a.token, a.metrics))
	}
	// Go's profiles (heap, goroutines, CPU, ...), behind the admin token:
	// what docs/OPERATIONS.md "Memory" reads with go tool pprof.
	mux.Handle("/debug/pprof/", httpx.RequireBearer(a.token, http.HandlerFunc(pprof.Index)))
	mux.Handle("/debug/pprof/profile", httpx.RequireBearer(a.token, http.HandlerFunc(pprof.Profile)))
	mux.Handle("/debug/pprof/trace", httpx.RequireBearer(a.token, http.HandlerFunc(pprof.Trace)))
	mux.Handle("/", srv.Handler())
	handler := http.Handler(mux)
	// No WriteTimeout: a push answers only once the module is compiled.
	a.srv = &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: a.readTimeout, IdleTimeout: 2 * time.Minute}
	a.ln, a.done = ln, make(chan struct{})
	go func() {
		defer close(a.done)
		if err := a.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error().Err(err).Msg("admin API stopped")
		}
	}()
	a.log.Info().Str("admin_listen", ln.Addr().String()).Msg("admin API listening")
	return nil
}

// Stop lets a push in progress finish within ctx, then stops the
// inspector's sampler.
func (a *adminAPI) Stop(ctx context.Context) error {
	err := shutdown(ctx, a.srv, a.done)
	a.api.Close()
	return err
}

// watcher reloads a binding when its module file changes (serve --watch).
type watcher struct {
	targets []watch.Target
	rt      *hostRuntime
	log     zerolog.Logger
	background
}

func (w *watcher) Name() string { return "watch" }

func (w *watcher) Start(context.Context) error {
	wt, err := watch.New(w.rt.h, w.targets, watch.Options{Logger: w.log})
	if err != nil {
		return err
	}
	w.run(wt.Run)
	return nil
}

// Stop ends the polling, waiting for a swap in progress.
func (w *watcher) Stop(ctx context.Context) error { return w.stop(ctx) }

// listener is the main HTTP listener: the host's routes, the edge API's,
// /readyz and /metrics (Server.routes). It starts last, so that everything
// it routes to is up, and stops first, draining requests in flight.
type listener struct {
	addr        string
	readTimeout time.Duration
	handler     func() http.Handler
	srv         *http.Server
	ln          net.Listener
	done        chan struct{}
	failed      chan error // Serve's error, other than a shutdown
}

func (l *listener) Name() string { return "http" }

func (l *listener) Start(context.Context) error {
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", l.addr, err)
	}
	// ReadTimeout bounds a whole request, body included: a client trickling
	// its body cannot hold a connection (or delay shutdown) longer.
	l.srv = &http.Server{Handler: l.handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: l.readTimeout, IdleTimeout: 2 * time.Minute}
	l.ln, l.done, l.failed = ln, make(chan struct{}), make(chan error, 1)
	go func() {
		defer close(l.done)
		if err := l.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			l.failed <- err
		}
	}()
	return nil
}

// Stop stops accepting and waits, within ctx, for requests in flight.
func (l *listener) Stop(ctx context.Context) error { return shutdown(ctx, l.srv, l.done) }

// shutdown drains srv within ctx; past ctx it closes the connections left,
// so that nothing of srv keeps running, and reports the drain unfinished.
func shutdown(ctx context.Context, srv *http.Server, done <-chan struct{}) error {
	err := srv.Shutdown(ctx)
	if err != nil {
		srv.Close()
		err = fmt.Errorf("requests still in flight: %w", err)
	}
	<-done
	return err
}

// wait waits for done within ctx.
func wait(ctx context.Context, done <-chan struct{}) error {
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Interface guards.
var (
	_ Component = (*databases)(nil)
	_ Component = (*hostRuntime)(nil)
	_ Component = (*edgeAPI)(nil)
	_ Component = (*reconciler)(nil)
	_ Component = (*adminAPI)(nil)
	_ Component = (*watcher)(nil)
	_ Component = (*listener)(nil)
)

// hostLimits converts [limits] (or a binding's limits) to host.Limits: an
// absent setting stays 0 (the default, or for a binding the [limits]
// value), and 0, which in the file removes a limit, becomes -1.
func hostLimits(l *config.Limits) host.Limits {
	n := func(p *int64) int64 {
		switch {
		case p == nil:
			return 0
		case *p == 0:
			return -1
		}
		return *p
	}
	h := host.Limits{
		EventWriteBytes:   n(l.EventWriteBytes),
		EventWriteKeys:    n(l.EventWriteKeys),
		EventLogLines:     n(l.EventLogLines),
		EventLogBytes:     n(l.EventLogBytes),
		StorageQuotaBytes: n(l.StorageQuotaBytes),
		ShardSQLBytes:     n(l.ShardSQLBytes),
	}
	if d := l.AlarmRearmInterval; d != nil {
		h.AlarmRearmInterval = d.Duration
		if d.Duration == 0 {
			h.AlarmRearmInterval = -1
		}
	}
	if b := l.AlarmRearmBurst; b != nil {
		h.AlarmRearmBurst = *b
	}
	return h
}

// edgeShardLogCodes are the codes the edge API's shard plugins log
// (docs/OPERATIONS.md, "Fallback order and log codes"), which its runbook
// alerts on.
var edgeShardLogCodes = map[string][]string{
	"events":   {"E-VIBECODR-2130", "E-VIBECODR-2131"},
	"counters": {"E-VIBECODR-2140", "E-VIBECODR-2141"},
}

// defaultLogCodes are the log codes a binding without log_codes honours:
// the documented flush codes for the edge API's event and counter shards,
// none for any other binding (its plugin's codes are logged as guest_code).
func defaultLogCodes(edgeOn bool, ecfg edge.Config, binding string) []string {
	if edgeOn {
		switch binding {
		case ecfg.EventBinding:
			return edgeShardLogCodes["events"]
		case ecfg.CounterBinding:
			return edgeShardLogCodes["counters"]
		}
	}
	return []string{}
}
