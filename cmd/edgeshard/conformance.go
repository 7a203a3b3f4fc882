package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/edgeshard/edgeshard/conformance"
	"github.com/edgeshard/edgeshard/edge/schema"
	"github.com/edgeshard/edgeshard/storage/sqldb"
)

// builtinSuites maps the names --suite accepts to suite files, relative to
// the repository root (the current directory).
func builtinSuites() map[string]string {
	return map[string]string{
		"ratelimit":     "plugins/ratelimit/conformance.json",
		"runtimeevents": "plugins/runtimeevents/conformance.json",
		"counters":      "plugins/counters/conformance.json",
		"counter":       "examples/counter/conformance.json",
	}
}

// defaultSuite is the suite used without --suite, in the current directory.
const defaultSuite = "conformance.json"

// runConformance runs a conformance suite against a plugin. Exit status: 0
// when every scenario passed, 1 when one failed (or none ran), 2 on usage
// errors (flags, a missing plugin or suite file, an invalid suite).
func runConformance(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("conformance", "usage: edgeshard conformance --plugin FILE.wasm [--suite NAME|FILE] [--backend memory|badger] [--schema DIR] [--sql-url postgres://…] [--run SUBSTR] [-v]", stderr)
	plugin := fs.String("plugin", "", "plugin module (.wasm) to test (required)")
	suite := fs.String("suite", "", "suite: a built-in name (counter, counters, ratelimit, runtimeevents) or a JSON file (default ./"+defaultSuite+")")
	backend := fs.String("backend", conformance.BackendMemory, "storage backend: memory, or badger (Badger and a SQLite file, as the real host)")
	filter := fs.String("run", "", "run only the scenarios whose name contains this")
	schemaDir := fs.String("schema", "", "directory of NNNN_name.sql migrations (or of sqlite/ and postgres/ ones) for the scenarios' SQL database (default: the edge API's schema, which the bundled plugins use)")
	sqlURL := fs.String("sql-url", "", "PostgreSQL database (postgres://…) for the scenarios' SQL, a schema per scenario, instead of SQLite")
	verbose := fs.Bool("v", false, "trace every step, and print the host log of failed scenarios")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "edgeshard conformance: "+format+"\n", a...)
		return 2
	}
	switch {
	case fs.NArg() > 0:
		return usageErr("unexpected arguments %q", fs.Args())
	case *plugin == "":
		fs.Usage()
		return 2
	case *backend != conformance.BackendMemory && *backend != conformance.BackendBadger:
		return usageErr("--backend %q: want %s or %s", *backend, conformance.BackendMemory, conformance.BackendBadger)
	}
	if _, err := os.Stat(*plugin); err != nil {
		return usageErr("--plugin: %v", err)
	}
	suitePath, err := resolveSuite(*suite)
	if err != nil {
		return usageErr("%v", err)
	}
	s, err := conformance.LoadSuite(suitePath)
	if err != nil {
		return usageErr("%v", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	migrations, err := loadSchema(*schemaDir)
	if err != nil {
		return usageErr("--schema: %v", err)
	}
	opts := conformance.Options{CacheDir: defaultCacheDir(), Backend: *backend, Filter: *filter, Schema: migrations, SQLURL: *sqlURL}
	if *verbose {
		opts.Logf = func(format string, a ...any) { fmt.Fprintf(stdout, "    "+format+"\n", a...) }
		fmt.Fprintf(stdout, "suite %s (%s), plugin %s, backend %s\n", s.Name, suitePath, *plugin, *backend)
	}
	rep := conformance.RunSuite(ctx, *plugin, s, opts)
	for _, r := range rep.Results {
		fmt.Fprintln(stdout, r)
		if *verbose && !r.Passed && len(r.Logs) > 0 {
			fmt.Fprintf(stdout, "    host log (%d lines):\n      %s\n", len(r.Logs), strings.Join(r.Logs, "\n      "))
		}
	}
	if rep.Err != nil && rep.Failed == 0 {
		fmt.Fprintf(stderr, "edgeshard conformance: %v\n", rep.Err)
	}
	fmt.Fprintf(stdout, "%d passed, %d failed\n", rep.Passed, rep.Failed)
	switch {
	case rep.Failed > 0, rep.Err != nil:
		return 1
	case rep.Passed == 0:
		fmt.Fprintf(stderr, "edgeshard conformance: no scenario of %s matches --run %q\n", suitePath, *filter)
		return 1
	}
	return 0
}

// loadSchema reads the migrations in dir, or returns the edge API's schema
// when dir is empty.
func loadSchema(dir string) ([]sqldb.Migration, error) {
	if dir == "" {
		return schema.Migrations()
	}
	return sqldb.LoadMigrations(os.DirFS(dir))
}

// resolveSuite turns --suite into a file path: a built-in name, a path as
// is, or ./conformance.json when empty.
func resolveSuite(name string) (string, error) {
	path := name
	if name == "" {
		path = defaultSuite
	} else if p, ok := builtinSuites()[name]; ok {
		path = filepath.FromSlash(p)
	}
	if _, err := os.Stat(path); err != nil {
		switch {
		case name == "" && errors.Is(err, os.ErrNotExist):
			return "", fmt.Errorf("no --suite given and no %s in the current directory", defaultSuite)
		case path != name && errors.Is(err, os.ErrNotExist):
			return "", fmt.Errorf("--suite %s: built-in suite %s not found; run from the repository root or give the file's path", name, path)
		case errors.Is(err, os.ErrNotExist):
			return "", fmt.Errorf("--suite %s: no such file, and not a built-in suite (%s)", name, strings.Join(slices.Sorted(maps.Keys(builtinSuites())), ", "))
		}
		return "", fmt.Errorf("--suite: %w", err)
	}
	return path, nil
}
