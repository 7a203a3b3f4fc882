package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/edgeshard/edgeshard/host/config"
	"github.com/edgeshard/edgeshard/internal/server"
	"github.com/rs/zerolog"
)

func runServe(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("serve", "usage: edgeshard serve [--config edgeshard.toml] [--watch] [--dev] [--trace SPEC] [--init-sql]", stderr)
	cfgPath := fs.String("config", "edgeshard.toml", "configuration file")
	watchFiles := fs.Bool("watch", false, "reload a binding when its module file changes (debounced; same validation as a push)")
	dev := fs.Bool("dev", false, "development mode: human-readable debug logs")
	trace := fs.String("trace", "", "log every host call of a shard: BINDING/SHARD, BINDING/* or *")
	initSQL := fs.Bool("init-sql", os.Getenv("EDGESHARD_INIT_SQL") == "1", "initialise the edge API's SQL database even if it is empty while data_dir shows it had been initialised (env EDGESHARD_INIT_SQL=1)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "edgeshard serve: %v\n", err)
		return 1
	}
	if *dev {
		cfg.LogFormat, cfg.LogLevel = "console", "debug"
	}
	if *trace != "" {
		cfg.Trace = *trace
	}
	log := newLogger(cfg, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, cfg, log, server.Options{Watch: *watchFiles, InitSQL: *initSQL}); err != nil {
		log.Error().Err(err).Msg("edgeshard stopped with an error")
		return 1
	}
	return 0
}

// serve runs the server cfg describes (internal/server) until ctx ends,
// then shuts it down gracefully.
func serve(ctx context.Context, cfg *config.File, log zerolog.Logger, opts server.Options) error {
	opts.Logger = log
	s, err := server.New(cfg, opts)
	if err != nil {
		return err
	}
	return s.Run(ctx)
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

// isTerminal reports whether w is a character device (colours only then).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
