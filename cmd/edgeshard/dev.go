package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/edgeshard/edgeshard/conformance"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/host/config"
	"github.com/edgeshard/edgeshard/internal/server"
)

// devOptions are the settings of one `edgeshard dev` session, which runs in
// the project's directory.
type devOptions struct {
	Config   string        // the host config (edgeshard.toml)
	Binding  string        // the binding whose module is built; "" = the config's only one
	Suite    string        // the conformance suite; none if the file does not exist
	Backend  string        // the suite's storage backend
	Listen   string        // overrides the config's listen address when set
	Trace    string        // overrides the config's trace when set
	LogLevel string        // the host log's level (console format, on stderr)
	Interval time.Duration // how often the sources are polled
}

// devQuiet is how long the sources must stay unchanged after a change
// before a rebuild: an editor's save may be several writes.
const devQuiet = 200 * time.Millisecond

// runDev implements `edgeshard dev`: in a project made by `edgeshard new`
// it builds the module, serves it, and on every save rebuilds, hot-swaps
// and reruns the conformance suite, printing one line per rebuild.
func runDev(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("dev", "usage: edgeshard dev [--dir DIR] [--config edgeshard.toml] [--binding NAME] [--suite conformance.json] [--listen ADDR] [--trace SPEC]\n\n"+
		"In a shard project (edgeshard new): builds the module with\n"+
		"GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared, serves it as the config says, and\n"+
		"runs the conformance suite. Then on every change of a .go file, go.mod, go.sum or the\n"+
		"suite it rebuilds, hot-swaps the new module in and reruns the suite, one line each:\n"+
		"  rebuilt in 1.2s, swapped to a1b2c3d4e5f6, conformance 6 passed 0 failed\n"+
		"The host log goes to stderr. Ctrl-C stops.", stderr)
	dir := fs.String("dir", ".", "the project directory (made by edgeshard new)")
	var o devOptions
	fs.StringVar(&o.Config, "config", "edgeshard.toml", "host config, in the project directory")
	fs.StringVar(&o.Binding, "binding", "", "binding whose module the project builds (default: the config's only binding)")
	fs.StringVar(&o.Suite, "suite", defaultSuite, "conformance suite rerun after every rebuild (skipped if the file does not exist)")
	fs.StringVar(&o.Backend, "backend", conformance.BackendMemory, "the suite's storage backend: memory, or badger")
	fs.StringVar(&o.Listen, "listen", "", "serve on this address instead of the config's listen")
	fs.StringVar(&o.Trace, "trace", "", "log every host call of a shard: BINDING/SHARD, BINDING/* or *")
	fs.StringVar(&o.LogLevel, "log", "info", "host log level on stderr: debug, info, warn or error")
	fs.DurationVar(&o.Interval, "interval", 300*time.Millisecond, "how often the project's .go files are polled")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	if o.Backend != conformance.BackendMemory && o.Backend != conformance.BackendBadger {
		fmt.Fprintf(stderr, "edgeshard dev: --backend %q: want %s or %s\n", o.Backend, conformance.BackendMemory, conformance.BackendBadger)
		return 2
	}
	if *dir != "." {
		if err := os.Chdir(*dir); err != nil {
			fmt.Fprintf(stderr, "edgeshard dev: %v\n", err)
			return 1
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := dev(ctx, o, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "edgeshard dev: %v\n", err)
		return 1
	}
	return 0
}

// devSession is one `edgeshard dev` run; its methods run on one goroutine.
type devSession struct {
	o       devOptions
	cfg     *config.File
	binding string
	module  string // the module file the build writes and the config loads
	out     io.Writer
}

// dev runs a session in the current directory until ctx ends.
func dev(ctx context.Context, o devOptions, stdout, stderr io.Writer) error {
	cfg, err := config.Load(o.Config)
	if err != nil {
		return err
	}
	d := &devSession{o: o, cfg: cfg, out: stdout}
	if err := d.pickBinding(); err != nil {
		return err
	}
	if o.Listen != "" {
		cfg.Listen = o.Listen
	}
	if o.Trace != "" {
		cfg.Trace = o.Trace
	}
	cfg.LogFormat, cfg.LogLevel = "console", o.LogLevel
	if cfg.CacheDir == "" {
		cfg.CacheDir = filepath.Join(cfg.DataDir, "cache") // the host's default, shared with the suite's runs
	}

	// The first build: until one succeeds there is nothing to serve.
	seen := d.snapshot()
	var took time.Duration
	for {
		t0 := time.Now()
		err := d.build(ctx)
		took = time.Since(t0)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		fmt.Fprintf(d.out, "build failed in %s:\n%s\n", round(took), indent(err.Error()))
		if seen, err = d.waitForChange(ctx, seen); err != nil {
			return nil // ctx ended
		}
	}

	// The server runs until ctx ends or it fails; either ends the loop.
	ready := make(chan struct{})
	srv, err := server.New(cfg, server.Options{Logger: newLogger(cfg, stderr), Ready: func(string) { close(ready) }})
	if err != nil {
		return err
	}
	serving, stopServing := context.WithCancel(ctx)
	loop, stopLoop := context.WithCancel(serving)
	defer stopLoop()
	done := make(chan error, 1)
	go func() {
		done <- srv.Run(serving)
		stopLoop()
	}()
	select {
	case <-ready:
	case err := <-done:
		stopServing()
		return err
	}
	ns, ok := srv.Host().Namespace(d.binding)
	if !ok {
		stopServing()
		return errors.Join(fmt.Errorf("binding %s is not served", d.binding), <-done)
	}
	defer stopServing()
	fmt.Fprintf(d.out, "built in %s, serving %s at http://%s/do/%s/{name}/, %s\n",
		round(took), ns.Current().Short(), srv.Addr(), d.binding, d.conformance(loop))
	for {
		if seen, err = d.waitForChange(loop, seen); err != nil {
			break
		}
		d.rebuild(loop, ns)
	}
	return <-done
}

// pickBinding chooses the binding whose module the project builds.
func (d *devSession) pickBinding() error {
	bs := d.cfg.DurableObjects.Bindings
	var names []string
	for _, b := range bs {
		names = append(names, b.Name)
		if b.Name == d.o.Binding || d.o.Binding == "" && len(bs) == 1 {
			d.binding, d.module = b.Name, b.Module
		}
	}
	switch {
	case d.binding != "" && d.module == "":
		return fmt.Errorf("binding %s has no module file to build", d.binding)
	case d.binding != "":
		return nil
	case len(bs) == 0:
		return fmt.Errorf("%s has no [[durable_objects.bindings]]", d.o.Config)
	case d.o.Binding != "":
		return fmt.Errorf("--binding %s: %s has %s", d.o.Binding, d.o.Config, strings.Join(names, ", "))
	}
	return fmt.Errorf("%s has several bindings (%s): say which one this project builds with --binding", d.o.Config, strings.Join(names, ", "))
}

// build compiles the project into the binding's module file, replacing it
// only once the build succeeded; the error carries the compiler's output.
func (d *devSession) build(ctx context.Context) error {
	tmp, err := os.CreateTemp(filepath.Dir(d.module), "."+filepath.Base(d.module)+".*.tmp")
	if err != nil {
		return err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	cmd := exec.CommandContext(ctx, "go", "build", "-buildmode=c-shared", "-o", tmp.Name(), ".")
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		msg := strings.TrimSpace(string(out))
		if msg == "" {
			msg = err.Error()
		}
		if strings.Contains(msg, "go mod tidy") || strings.Contains(msg, "missing go.sum entry") {
			msg += "\n(run go mod tidy)"
		}
		return errors.New(msg)
	}
	return os.Rename(tmp.Name(), d.module)
}

// rebuild builds, swaps the new module in and reruns the suite, and prints
// the line that says how it went.
func (d *devSession) rebuild(ctx context.Context, ns *host.Namespace) {
	t0 := time.Now()
	if err := d.build(ctx); err != nil {
		if ctx.Err() == nil {
			fmt.Fprintf(d.out, "build failed in %s, still serving %s:\n%s\n", round(time.Since(t0)), ns.Current().Short(), indent(err.Error()))
		}
		return
	}
	bin, err := os.ReadFile(d.module)
	if err != nil {
		fmt.Fprintf(d.out, "rebuilt in %s, but: %v\n", round(time.Since(t0)), err)
		return
	}
	old := ns.Current().SHA256()
	v, err := ns.Swap(ctx, bin, "edgeshard dev")
	took := time.Since(t0)
	switch {
	case err != nil && ctx.Err() != nil:
		return
	case err != nil:
		fmt.Fprintf(d.out, "rebuilt in %s, refused, still serving %s: %v\n", round(took), ns.Current().Short(), err)
	case v.SHA256() == old:
		fmt.Fprintf(d.out, "rebuilt in %s, unchanged %s, %s\n", round(took), v.Short(), d.conformance(ctx))
	default:
		fmt.Fprintf(d.out, "rebuilt in %s, swapped to %s, %s\n", round(took), v.Short(), d.conformance(ctx))
	}
}

// conformance runs the suite (read again each time: it may have been
// edited) against the module file and summarises it: "conformance 6
// passed 0 failed", then each failure on a line of its own.
func (d *devSession) conformance(ctx context.Context) string {
	suite, err := conformance.LoadSuite(d.o.Suite)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "no " + d.o.Suite
	case err != nil:
		return "conformance: " + err.Error()
	}
	rep := conformance.RunSuite(ctx, d.module, suite, conformance.Options{CacheDir: d.cfg.CacheDir, Backend: d.o.Backend})
	var b strings.Builder
	fmt.Fprintf(&b, "conformance %d passed %d failed", rep.Passed, rep.Failed)
	for _, r := range rep.Results {
		if !r.Passed {
			b.WriteString("\n" + indent(r.String()))
		}
	}
	if rep.Err != nil && rep.Failed == 0 {
		b.WriteString("\n" + indent(rep.Err.Error()))
	}
	return b.String()
}

// srcStamp is what the poll compares of one source file.
type srcStamp struct {
	mtime time.Time
	size  int64
}

// snapshot stamps the project's sources: every .go file under the
// directory (hidden directories, testdata, vendor and the data directory
// left out), go.mod, go.sum and the suite.
func (d *devSession) snapshot() map[string]srcStamp {
	data, _ := filepath.Abs(d.cfg.DataDir)
	snap := map[string]srcStamp{}
	filepath.WalkDir(".", func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		name := e.Name()
		if e.IsDir() {
			abs, _ := filepath.Abs(path)
			if path != "." && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "vendor" || abs == data) {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(name, ".go") || path == "go.mod" || path == "go.sum" || path == filepath.Clean(d.o.Suite) {
			if fi, err := e.Info(); err == nil {
				snap[path] = srcStamp{fi.ModTime(), fi.Size()}
			}
		}
		return nil
	})
	return snap
}

// waitForChange polls the sources until they differ from seen and then
// stay unchanged for devQuiet, and returns the new snapshot; an error
// only when ctx ends.
func (d *devSession) waitForChange(ctx context.Context, seen map[string]srcStamp) (map[string]srcStamp, error) {
	tick := time.NewTicker(d.o.Interval)
	defer tick.Stop()
	var changed map[string]srcStamp
	var since time.Time
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
		now := d.snapshot()
		switch {
		case changed == nil && !sameSnapshot(now, seen):
			changed, since = now, time.Now()
		case changed != nil && !sameSnapshot(now, changed):
			changed, since = now, time.Now()
		}
		if changed != nil && time.Since(since) >= devQuiet {
			return changed, nil
		}
	}
}

func sameSnapshot(a, b map[string]srcStamp) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || !v.mtime.Equal(w.mtime) || v.size != w.size {
			return false
		}
	}
	return true
}

// round shortens a duration for a line: 1.2s, 850ms.
func round(d time.Duration) time.Duration {
	if d >= time.Second {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(10 * time.Millisecond)
}

// indent indents every line of s by four spaces.
func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ")
}
