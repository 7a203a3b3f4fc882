// Command edgeshard-crashtest kills the real edgeshard host with SIGKILL
// under load, again and again, and proves that nothing it acknowledged is
// lost or counted twice.
//
// It starts `edgeshard serve` on loopback (free ports, a fresh data
// directory, the runtime-event and counter plugins), drives steady load
// from several clients — views and runs (counter increments), likes and
// unlikes by distinct users, runtime events with client-chosen ids — and
// kills the host at chosen points: right after a shard logs a flush (its
// SQL transaction committed, its own storage cleanup maybe not), just
// after boot (while overdue alarms flush), around the first 5 s alarm
// period, and at random. After every kill it restarts the host on the same
// data. At the end it stops the load, waits until every shard has flushed,
// stops the host with SIGTERM, reads the SQLite file and compares it with
// the clients' ledger:
//
//	acknowledged ≤ counted ≤ acknowledged + unknown
//
// where "unknown" are requests that got no answer because of a kill (they
// may or may not have happened). For events the ledger knows every id:
// an acknowledged id must be stored, no id twice, no id that was never
// sent. It prints one line per stream,
//
//	stream=views acknowledged=N unknown=U counted=C lost=0 duplicated=0
//
// and exits 1 if any is off. Then it restarts the host once more, checks
// that nothing moves, runs reconcileCounters through the admin API, and
// checks that every likes counter equals its source rows.
//
// Each mode runs in turn: primary (default), counter-shadow
// (COUNTER_DO_MODE=shadow in the environment) and event-shadow
// (RUNTIME_EVENT_DO_MODE=shadow); the config's [vars] say primary, so the
// environment must win. The fleet mode (fleet.go, not in the default list)
// runs three hosts with distinct node ids on one throwaway PostgreSQL,
// spreads the clients (follows and unfollows too) over them, runs
// reconcileCounters on random hosts, kills hosts at random, drains each at
// the end and compares PostgreSQL with the ledger the same way. The
// cluster mode (cluster.go, not in the default list either) runs three
// hosts of one POP on an etcd it starts in process and one PostgreSQL,
// adds per-name page views (the tutorial) to the load, and kills, freezes
// (SIGSTOP past the lease) and drains (SIGTERM, or cluster leave) hosts
// at random; besides the streams, no page number may be acknowledged
// twice and no shard's logged ownership intervals may overlap.
//
// Usage (or `make crash-test`, `make crash-test-fleet`, `make
// crash-test-cluster`; the defaults take 30-60 s per mode):
//
//	go run ./cmd/edgeshard-crashtest [-cycles 5] [-duration 3s] [-clients 8] [-modes primary,counter-shadow,event-shadow,fleet,cluster]
//
// Environment knobs for longer soaks: CYCLES, DURATION, CLIENTS, MODES,
// SHARDS, SEED.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/edgeshard/edgeshard/internal/testutil"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func envString(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("edgeshard-crashtest", flag.ContinueOnError)
	bin := fs.String("bin", "", "edgeshard binary (default: go build ./cmd/edgeshard into a temp dir)")
	eventsMod := fs.String("events-module", "", "runtimeevents.wasm (default: built from plugins/runtimeevents)")
	countersMod := fs.String("counters-module", "", "counters.wasm (default: built from plugins/counters)")
	pageMod := fs.String("page-module", "", "tutorial.wasm, the cluster mode's per-name counters (default: built from examples/tutorial)")
	cache := fs.String("cache", testutil.CacheDir(), "wazero compilation cache")
	work := fs.String("dir", "", "work directory (default: a temp dir, removed when every check passes)")
	keep := fs.Bool("keep", false, "keep the work directory")
	modeList := fs.String("modes", envString("MODES", "primary,counter-shadow,event-shadow"), "modes to run, comma-separated: primary, counter-shadow, event-shadow, fleet, cluster (env MODES)")
	cycles := fs.Int("cycles", envInt("CYCLES", 5), "kill -9 + restart cycles per mode (env CYCLES)")
	duration := fs.Duration("duration", envDuration("DURATION", 3*time.Second), "longest stretch of load before a random kill (env DURATION)")
	clients := fs.Int("clients", envInt("CLIENTS", 8), "concurrent clients (env CLIENTS)")
	interval := fs.Duration("interval", 2*time.Millisecond, "pause between two requests of one client")
	shards := fs.Int("shards", envInt("SHARDS", 16), "shards per binding (env SHARDS)")
	posts := fs.Int("posts", 24, "distinct posts")
	seed := fs.Uint64("seed", uint64(envInt("SEED", int(time.Now().UnixNano()%1e9))), "random seed (env SEED)")
	timeout := fs.Duration("timeout", 0, "give up after this long (default: generous for the cycles asked)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	o := Options{
		Bin: *bin, EventsModule: *eventsMod, CounterModule: *countersMod, PageModule: *pageMod, CacheDir: *cache,
		WorkDir: *work, Keep: *keep, Cycles: *cycles, CycleMax: *duration, Clients: *clients,
		Interval: *interval, Shards: *shards, Posts: *posts, Seed: *seed, Out: os.Stdout,
	}
	for _, m := range strings.Split(*modeList, ",") {
		if m = strings.TrimSpace(m); m != "" {
			o.Modes = append(o.Modes, m)
		}
	}
	if *timeout == 0 {
		perMode := time.Duration(o.Cycles)*(o.CycleMax+20*time.Second) + 4*time.Minute
		*timeout = time.Duration(len(o.Modes)) * perMode
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	t0 := time.Now()
	cleanup, err := prepare(&o)
	defer cleanup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "edgeshard-crashtest:", err)
		return 1
	}
	fmt.Printf("built in %.1fs\n", time.Since(t0).Seconds())
	results, err := Run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "edgeshard-crashtest:", err)
		return 1
	}
	fmt.Println("== summary")
	ok, kills, freezes, drains := true, 0, 0, 0
	for _, r := range results {
		kills, freezes, drains = kills+r.Kills, freezes+r.Freezes, drains+r.Drains
		for _, s := range r.Streams {
			fmt.Printf("mode=%s %s\n", r.Mode, s)
		}
		for _, f := range r.Failed {
			fmt.Printf("mode=%s FAIL %s\n", r.Mode, f)
		}
		ok = ok && r.OK()
	}
	verdict := "PASS"
	if !ok {
		verdict = "FAIL"
	}
	fmt.Printf("crash-test %s: %d modes, %d kills, %d freezes, %d drains, %.1fs\n", verdict, len(results), kills, freezes, drains, time.Since(t0).Seconds())
	if !ok {
		return 1
	}
	return 0
}

// prepare builds what the options leave out: the binary (without -race:
// it is a separate process) and the two plugins.
// It returns a function that removes what it built.
func prepare(o *Options) (cleanup func(), err error) {
	cleanup = func() {}
	root := testutil.RepoRoot()
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return cleanup, fmt.Errorf("run from the repository (no go.mod at %s)", root)
	}
	if o.Bin == "" {
		dir, err := os.MkdirTemp("", "edgeshard-crashtest-bin-")
		if err != nil {
			return cleanup, err
		}
		cleanup = func() { os.RemoveAll(dir) }
		o.Bin = filepath.Join(dir, "edgeshard")
		cmd := exec.Command("go", "build", "-o", o.Bin, "./cmd/edgeshard")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return cleanup, fmt.Errorf("go build ./cmd/edgeshard: %v\n%s", err, out)
		}
	}
	if o.EventsModule == "" {
		if o.EventsModule, err = testutil.BuildPlugin("plugins/runtimeevents"); err != nil {
			return cleanup, err
		}
	}
	if o.CounterModule == "" {
		if o.CounterModule, err = testutil.BuildPlugin("plugins/counters"); err != nil {
			return cleanup, err
		}
	}
	if o.PageModule == "" && slices.Contains(o.Modes, "cluster") {
		if o.PageModule, err = testutil.BuildPlugin("examples/tutorial"); err != nil {
			return cleanup, err
		}
	}
	return cleanup, nil
}
