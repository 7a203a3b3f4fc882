package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/host/admin"
	"github.com/edgeshard/edgeshard/host/config"
	"github.com/edgeshard/edgeshard/host/watch"
	"github.com/rs/zerolog"
)

// serveOptions are the command-line choices of `edgeshard serve` that are
// not configuration settings.
type serveOptions struct {
	// Watch reloads a binding when its module file changes (--watch).
	Watch bool
	// Ready, if set, receives the edge API's bound address once it serves.
	Ready func(addr string)
}

// operator is the operator side of a running host: the admin API listener
// and the module file watcher. Stop ends both; it is safe to call more than
// once.
type operator struct {
	stopOnce sync.Once
	stops    []func(ctx context.Context)
}

// startOperator starts the admin API on cfg.AdminListen when a token is
// configured (and says why not otherwise), and the module watcher when
// opts.Watch is set. reconcile, if non-nil, backs
// POST /admin/jobs/reconcile-counters.
func startOperator(cfg *config.File, h *host.Host, log zerolog.Logger, opts serveOptions, reconcile func(context.Context) (any, error)) (*operator, error) {
	op := &operator{}
	switch {
	case cfg.AdminToken == "":
		log.Warn().Msg("admin API disabled: set admin_token or EDGESHARD_ADMIN_TOKEN")
	case cfg.AdminListen == "":
		log.Warn().Msg("admin API disabled: admin_listen is empty")
	default:
		srv, err := admin.New(h, admin.Options{Token: cfg.AdminToken, Logger: log, Reconcile: reconcile})
		if err != nil {
			return nil, err
		}
		ln, err := net.Listen("tcp", cfg.AdminListen)
		if err != nil {
			return nil, fmt.Errorf("admin_listen %s: %w", cfg.AdminListen, err)
		}
		// No WriteTimeout: a push answers only once the module is compiled.
		hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
		go func() {
			if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error().Err(err).Msg("admin API stopped")
			}
		}()
		log.Info().Str("admin_listen", ln.Addr().String()).Msg("admin API listening")
		op.stops = append(op.stops, func(ctx context.Context) {
			if err := hs.Shutdown(ctx); err != nil {
				log.Warn().Err(err).Msg("admin API shutdown did not finish in time")
			}
		})
	}
	if opts.Watch {
		var targets []watch.Target
		for _, b := range cfg.DurableObjects.Bindings {
			targets = append(targets, watch.Target{Binding: b.Name, Path: b.Module})
		}
		w, err := watch.New(h, targets, watch.Options{Logger: log})
		if err != nil {
			op.Stop(context.Background())
			return nil, err
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); w.Run(ctx) }()
		op.stops = append(op.stops, func(context.Context) { cancel(); <-done })
	}
	return op, nil
}

// Stop shuts the admin API down (letting a push in progress finish within
// ctx) and stops the watcher. Call it before closing the host.
func (op *operator) Stop(ctx context.Context) {
	op.stopOnce.Do(func() {
		for i := len(op.stops) - 1; i >= 0; i-- {
			op.stops[i](ctx)
		}
	})
}
