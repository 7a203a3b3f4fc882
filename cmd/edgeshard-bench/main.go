// Command edgeshard-bench is edgeshard's benchmark driver: it measures the
// figures of docs/BENCHMARKS.md — each headline a ratio of two sides run
// alternately in the same process, so a noisy shared machine slows both
// alike — and prints one line per figure:
//
//	BENCH <name> <figure>=<value> [<figure>=<value> ...]
//
// Every figure starts its own host (real Badger storage with fsync, real
// SQLite files with synchronous=FULL, the real plugins built from this
// repository) in a temporary directory, listens on 127.0.0.1 only, and
// stops by itself. Usage:
//
//	go run ./cmd/edgeshard-bench [-quick] [-rounds N] [-only a,b] [-update-docs] [-cpuprofile f [-profile-side name]] [-soak d] [-profile-dir dir]
//
// -quick runs every figure in two to three and a half minutes on two cores; the
// default (make bench) runs longer rounds and more of them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/benchkit"
	"github.com/edgeshard/edgeshard/internal/hostinternal"
)

// sizes are the knobs of one driver run.
type sizes struct {
	Rounds     int           // rounds of each comparison (each side runs once a round)
	Side       time.Duration // one side of one round
	Warmup     time.Duration // before the first round of each side
	Workers    int           // concurrent callers of the throughput figures
	Posts      int           // counters: posts the Zipf distribution draws from
	ZipfS      float64       // counters: Zipf exponent
	Batch      int           // events: events per POST /runtime-events
	Buckets    int           // rate limits: distinct user buckets
	Shards     int           // shards of the sharded bindings
	Hot        int           // shard_events_per_s: concurrent callers of the one shard
	SwapRounds int           // swap: pushes (p99s are noisier than rates: more rounds)
	SwapLoad   time.Duration // swap: steady load before the push
	SwapTail   time.Duration // swap: load after the push
	MemN       int           // mem_per_shard: live per-name shards
	MemLow     int           // mem_per_shard: calls before the first reading
	MemHigh    int           // mem_per_shard: calls before the second reading
	Startups   int           // startup: cold+warm pairs
	MemBuckets int           // mem_rss: rate-limit decisions over as many buckets
	MemObjects int           // mem_rss: per-name objects made live
	SoakFor    time.Duration // edge_soak: how long the mixed load runs
	SoakRate   int           // edge_soak: requests/s offered in all
	SoakConns  int           // edge_soak: connections (paced closed loops)
	WSSockets  int           // ws_idle_mem: idle sockets
	WSRooms    int           // ws_idle_mem: rooms (shards) they are spread over
	WSFan      int           // ws_broadcast: sockets of the room
	WSRounds   int           // ws_broadcast: broadcasts measured

	// FreshSwap makes every pushed version a new build (so every push
	// compiles, as a real deploy); the smoke test pushes cached ones.
	FreshSwap bool
	// NoUnchecked skips the side without termination checks (it needs its
	// own compilation of the plugin).
	NoUnchecked bool
	// MinimalStartup starts the binary with the counter example only.
	MinimalStartup bool
}

// fullSizes is `make bench`.
func fullSizes() sizes {
	return sizes{Rounds: 5, Side: 3 * time.Second, Warmup: 500 * time.Millisecond, Workers: 64,
		Posts: 1000, ZipfS: 1.1, Batch: 1, Buckets: 10000, Shards: 32, Hot: 512,
		SwapRounds: 7, SwapLoad: 3 * time.Second, SwapTail: 1500 * time.Millisecond,
		MemN: 200, MemLow: 10_000, MemHigh: 1_000_000, Startups: 5, FreshSwap: true,
		MemBuckets: 10_000, MemObjects: 10_000, SoakFor: 10 * time.Minute, SoakRate: 4000, SoakConns: 32,
		WSSockets: 10_000, WSRooms: 100, WSFan: 1000, WSRounds: 30}
}

// quickSizes is `make bench-quick`: the same figures, shorter.
func quickSizes() sizes {
	s := fullSizes()
	s.Rounds, s.Side, s.Warmup = 3, time.Second, 300*time.Millisecond
	s.SwapRounds, s.SwapLoad, s.SwapTail = 5, 1200*time.Millisecond, 600*time.Millisecond
	s.MemHigh, s.Startups = 100_000, 3
	s.SoakFor = 40 * time.Second
	s.WSRounds = 10
	return s
}

// smokeSizes are the smallest that still exercise every figure's code:
// the CI smoke test (main_test.go), which checks the output format only.
func smokeSizes() sizes {
	return sizes{Rounds: 1, Side: 100 * time.Millisecond, Warmup: 50 * time.Millisecond, Workers: 4,
		Posts: 20, ZipfS: 1.1, Batch: 1, Buckets: 50, Shards: 2, Hot: 8,
		SwapRounds: 1, SwapLoad: 300 * time.Millisecond, SwapTail: 200 * time.Millisecond,
		MemN: 3, MemLow: 20, MemHigh: 60, Startups: 1, NoUnchecked: true, MinimalStartup: true,
		MemBuckets: 100, MemObjects: 50, SoakFor: 5 * time.Second, SoakRate: 200, SoakConns: 4,
		WSSockets: 40, WSRooms: 4, WSFan: 20, WSRounds: 2}
}

// figure is one line of output.
type figure struct {
	name string
	goal string // as the issue states it, for the docs table
	run  func(r *runner, w *scratch) (*result, error)
}

// figures in output order.
var figures = []figure{
	{"counters", "shard/legacy ≥ 20× (in-process and HTTP)", (*runner).counters},
	{"events", "primary/off ≥ 10×", (*runner).events},
	{"ratelimit_wasm_vs_native", "wasm/native ≥ 0.5", (*runner).ratelimitWasmVsNative},
	{"ratelimit_http", "shard/bare ≥ 0.6", (*runner).ratelimitHTTP},
	{"shard_events_per_s", "≥ 100,000/s (100× the DO soft limit)", (*runner).shardEvents},
	{"shard_call", "call/direct ≥ 0.5 (a call costs at most one more event)", (*runner).shardCall},
	{"swap_p99_ratio", "≤ 3, zero errors", (*runner).swap},
	{"startup", "warm ≤ 1 s", (*runner).startup},
	{"mem_per_shard", "≤ 4 MiB; flat", (*runner).memPerShard},
	{"mem_rss", "32 shards ≤ 200 MiB; 10,000 objects ≤ budget + 200 MiB", (*runner).memRSS},
	{"edge_soak", "RSS ≤ 400 MiB under the mixed load", (*runner).edgeSoak},
	{"shard_sql", "per-shard/shared ≥ 1 (a database per shard removes the contention)", (*runner).shardSQL},
	{"ws_idle_mem", "≤ 24 KiB per idle socket, instances evicted", (*runner).wsIdle},
	{"ws_broadcast", "1,000 sockets: last ≤ 50 ms", (*runner).wsBroadcast},
}

// result is a figure's measured values, in output order, and its verdict.
type result struct {
	name     string
	fields   [][2]string
	headline string // the value the docs table shows
	met      bool
	note     string // one line for the docs table
}

func (res *result) add(k string, v any) {
	var s string
	switch v := v.(type) {
	case float64:
		s = benchkit.FormatNum(v)
	case time.Duration:
		s = strconv.FormatFloat(v.Seconds()*1000, 'f', 2, 64) // ms
	default:
		s = fmt.Sprint(v)
	}
	res.fields = append(res.fields, [2]string{k, s})
}

// line renders the BENCH line.
func (res *result) line() string {
	var b strings.Builder
	b.WriteString("BENCH ")
	b.WriteString(res.name)
	for _, f := range res.fields {
		b.WriteString(" ")
		b.WriteString(f[0])
		b.WriteString("=")
		b.WriteString(f[1])
	}
	return b.String()
}

// verdict ends the fields of a figure whose goal is a minimum: its
// rounds, the goal and whether it is met — every value reaches goalMin
// and ok (the figure's other conditions, such as no fallback) holds. The
// goal's number is written once, here, for both the test and the line.
func (res *result) verdict(rounds int, goalMin float64, ok bool, values ...float64) {
	res.met = ok && len(values) > 0
	for _, v := range values {
		res.met = res.met && v >= goalMin
	}
	res.add("rounds", rounds)
	res.add("goal_min", goalMin)
	res.add("met", yesNo(res.met))
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}

// runner runs figures.
type runner struct {
	sz        sizes
	root      string
	cacheDir  string
	build     *builder
	out       io.Writer // BENCH lines
	progress  io.Writer // per-round progress
	unchecked bool      // every figure on an engine without termination checks
	docs      string    // the document -update-docs rewrites ("" without it)
	// profileDir, if set, receives the heap profiles edge_soak takes of
	// the host at the start and under load.
	profileDir string
	// sideProfile takes a CPU profile of each measured round of the
	// comparison sides it names (-profile-side).
	sideProfile sideProfiler

	// engine is the wasm engine every in-process host of the run shares
	// (each module compiled or loaded from the cache once per run).
	engine *host.Engine
	// noChecks is the engine without termination checks, started on first
	// use by uncheckedEngine.
	noChecks *host.Engine
}

// uncheckedEngine returns an engine that compiles modules without the
// interrupt checks (hostinternal.WithoutTerminationChecks).
func (r *runner) uncheckedEngine() (*host.Engine, error) {
	if r.unchecked {
		return r.engine, nil
	}
	if r.noChecks == nil {
		e, err := host.NewEngine(hostinternal.WithoutTerminationChecks(context.Background()), host.EngineConfig{CacheDir: r.cacheDir})
		if err != nil {
			return nil, err
		}
		r.noChecks = e
	}
	return r.noChecks, nil
}

// close releases the run's engines.
func (r *runner) close() {
	for _, e := range []*host.Engine{r.engine, r.noChecks} {
		if e != nil {
			e.Close(context.Background())
		}
	}
}

func (r *runner) logf(format string, args ...any) {
	if r.progress != nil {
		fmt.Fprintf(r.progress, "  "+format+"\n", args...)
	}
}

// options are the command line.
type options struct {
	quick      bool
	rounds     int
	only       []string
	updateDocs bool
	cpuprofile string
	// profileSide, with cpuprofile, limits the profile to the measured
	// rounds of the comparison sides of that name.
	profileSide string
	docs        string
	verbose     bool
	unchecked   bool
	profileDir  string
	soak        time.Duration
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("edgeshard-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.BoolVar(&o.quick, "quick", false, "short rounds: every figure in 2–3.5 minutes on 2 cores (a 40 s edge_soak)")
	fs.IntVar(&o.rounds, "rounds", 0, "rounds per comparison (default 5, or 3 with -quick)")
	only := fs.String("only", "", "comma-separated figures to run (default all): "+strings.Join(figureNames(), ","))
	fs.BoolVar(&o.updateDocs, "update-docs", false, "rewrite the tables of docs/BENCHMARKS.md with this run")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of the run to this file")
	fs.StringVar(&o.profileSide, "profile-side", "", "with -cpuprofile: profile only the measured rounds of the sides of this name (e.g. primary, shard), not warm-ups, compiles or the other sides")
	fs.StringVar(&o.docs, "docs", "docs/BENCHMARKS.md", "the document -update-docs rewrites (relative to the repository root)")
	fs.BoolVar(&o.verbose, "v", true, "print per-round progress on stderr")
	fs.BoolVar(&o.unchecked, "unchecked", false, "experiment: run every wasm figure without the interrupt checks (unsafe: runaway guests are never interrupted); with -update-docs, only the experiment's table is rewritten")
	fs.StringVar(&o.profileDir, "profile-dir", "", "edge_soak: save the host's heap profiles (start, under load) in this directory")
	fs.DurationVar(&o.soak, "soak", 0, "edge_soak: how long the mixed load runs (default 10m, or 40s with -quick)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *only != "" {
		for _, n := range strings.Split(*only, ",") {
			n = strings.TrimSpace(n)
			if !slices.Contains(figureNames(), n) {
				fmt.Fprintf(stderr, "edgeshard-bench: unknown figure %q (have %s)\n", n, strings.Join(figureNames(), ", "))
				return 2
			}
			o.only = append(o.only, n)
		}
	}
	sz := fullSizes()
	if o.quick {
		sz = quickSizes()
	}
	if o.rounds > 0 {
		sz.Rounds, sz.SwapRounds, sz.Startups = o.rounds, o.rounds, o.rounds
	}
	if o.soak > 0 {
		sz.SoakFor = o.soak
	}
	root, err := benchkit.FindRoot(".")
	if err != nil {
		fmt.Fprintf(stderr, "edgeshard-bench: %v\n", err)
		return 1
	}
	if o.profileSide != "" && o.cpuprofile == "" {
		fmt.Fprintln(stderr, "edgeshard-bench: -profile-side goes with -cpuprofile")
		return 2
	}
	if o.cpuprofile != "" && o.profileSide == "" {
		f, err := os.Create(o.cpuprofile)
		if err != nil {
			fmt.Fprintf(stderr, "edgeshard-bench: %v\n", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "edgeshard-bench: %v\n", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	r := &runner{sz: sz, root: root, cacheDir: cacheDir(root), build: &builder{root: root}, out: stdout, unchecked: o.unchecked, profileDir: o.profileDir, sideProfile: sideProfiler{side: o.profileSide, path: o.cpuprofile}}
	if o.verbose {
		r.progress = stderr
	}
	if o.updateDocs && !o.unchecked {
		r.docs = o.docs
	}
	ectx := context.Background()
	if o.unchecked {
		ectx = hostinternal.WithoutTerminationChecks(ectx)
	}
	r.engine, err = host.NewEngine(ectx, host.EngineConfig{CacheDir: r.cacheDir})
	if err != nil {
		fmt.Fprintf(stderr, "edgeshard-bench: %v\n", err)
		return 1
	}
	defer r.close()
	env := captureEnv(root, args)
	results, failed := r.runAll(o.only, stderr)
	if o.updateDocs {
		if err := updateDocs(root, o.docs, env, results, o.quick, o.unchecked, sz); err != nil {
			fmt.Fprintf(stderr, "edgeshard-bench: update docs: %v\n", err)
			return 1
		}
		fmt.Fprintf(stderr, "edgeshard-bench: updated %s\n", o.docs)
	}
	if failed {
		return 1
	}
	return 0
}

func figureNames() []string {
	var names []string
	for _, f := range figures {
		names = append(names, f.name)
	}
	return names
}

// cacheDir is the shared wazero compilation cache of the tests
// (internal/testutil.CacheDir): $EDGESHARD_TEST_CACHE or
// build/test-cache/wazero.
func cacheDir(root string) string {
	if d := os.Getenv("EDGESHARD_TEST_CACHE"); d != "" {
		return d
	}
	return root + "/build/test-cache/wazero"
}

// runAll runs the selected figures (all when only is empty), printing each
// BENCH line as soon as it is known.
func (r *runner) runAll(only []string, stderr io.Writer) (results []*result, failed bool) {
	for _, f := range figures {
		if len(only) > 0 && !slices.Contains(only, f.name) {
			continue
		}
		t0 := time.Now()
		r.logf("%s: running", f.name)
		res, err := r.runFigure(f)
		if err == nil && res == nil {
			err = errors.New("no result")
		}
		if err != nil {
			fmt.Fprintf(stderr, "edgeshard-bench: %s: %v\n", f.name, err)
			res = &result{name: f.name, headline: "error", note: firstLine(err.Error())}
			res.add("status", "error")
			failed = true
		}
		if r.unchecked {
			res.add("checks", "off")
		}
		fmt.Fprintln(r.out, res.line())
		r.logf("%s: done in %v", f.name, time.Since(t0).Round(100*time.Millisecond))
		results = append(results, res)
	}
	return results, failed
}

// runFigure runs f in a scratch of its own, released when it ends.
func (r *runner) runFigure(f figure) (*result, error) {
	w, err := newScratch(f.name)
	if err != nil {
		return nil, err
	}
	defer w.close()
	return f.run(r, w)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
