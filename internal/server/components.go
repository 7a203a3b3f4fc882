package server

import (
	"context"
	"errors"
	"fmt"
	"github.com/edgeshard/edgeshard/internal/httpx"
	"net"
	"net/http"
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
		sink, err := analytics.OpenSQLite(url, analytics.SinkOptions{SQL: sqldb.Options{Password: a.Password}})
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
	cfg edge.Config
	dbs *databases
	rt  *hostRuntime
	log zerolog.Logger
	reg prometheus.Registerer
	api *edge.API
}

func (e *edgeAPI) Name() string { return "edge" }

func (e *edgeAPI) Start(ctx context.Context) error {
	db := e.dbs.sql[e.cfg.SQLBinding]
	rep, err := schema.Migrate(ctx, db)
	if err != nil {
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

// Stop releases the proxy's idle upstream connections; requests in flight
// were drained by the main listener's Stop before.
func (e *edgeAPI) Stop(context.Context) error {
	e.api.Close()
	return nil
}

// reconciler runs the edge API's reconcileCounters job every interval.
type reconciler struct {
	edge     *edgeAPI
	interval time.Duration
	cancel   context.CancelFunc
	done     chan struct{}
}

func (r *reconciler) Name() string { return "reconcile" }

func (r *reconciler) Start(context.Context) error {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan struct{})
	api := r.edge.api
	go func() {
		defer close(r.done)
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
	}()
	return nil
}

// Stop cancels a run in progress and waits for it to return.
func (r *reconciler) Stop(ctx context.Context) error {
	r.cancel()
	return wait(ctx, r.done)
}

// adminAPI serves host/admin on admin_listen. It starts before the main
// listener, so that once /healthz answers the admin API answers too.
type adminAPI struct {
	addr, token string
	readTimeout time.Duration
	metrics     http.Handler // served at /metrics behind the token; nil: none
	rt          *hostRuntime
	edge        *edgeAPI // nil without an edge API: no reconcile job
	log         zerolog.Logger
	srv         *http.Server
	ln          net.Listener
	done        chan struct{}
}

func (a *adminAPI) Name() string { return "admin" }

func (a *adminAPI) Start(context.Context) error {
	opts := admin.Options{Token: a.token, Logger: a.log}
	if a.edge != nil {
		api := a.edge.api
		opts.Reconcile = func(ctx context.Context) (any, error) { return api.ReconcileCounters(ctx) }
	}
	srv, err := admin.New(a.rt.h, opts)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", a.addr)
	if err != nil {
		return fmt.Errorf("admin_listen %s: %w", a.addr, err)
	}
	handler := srv.Handler()
	if a.metrics != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", httpx.RequireBearer(a.token, a.metrics))
		mux.Handle("/", handler)
		handler = mux
	}
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

// Stop lets a push in progress finish within ctx.
func (a *adminAPI) Stop(ctx context.Context) error { return shutdown(ctx, a.srv, a.done) }

// watcher reloads a binding when its module file changes (serve --watch).
type watcher struct {
	targets []watch.Target
	rt      *hostRuntime
	log     zerolog.Logger
	cancel  context.CancelFunc
	done    chan struct{}
}

func (w *watcher) Name() string { return "watch" }

func (w *watcher) Start(context.Context) error {
	wt, err := watch.New(w.rt.h, w.targets, watch.Options{Logger: w.log})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel, w.done = cancel, make(chan struct{})
	go func() { defer close(w.done); wt.Run(ctx) }()
	return nil
}

// Stop ends the polling, waiting for a swap in progress.
func (w *watcher) Stop(ctx context.Context) error {
	w.cancel()
	return wait(ctx, w.done)
}

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
