package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/host/config"
	"github.com/edgeshard/edgeshard/internal/benchkit"
	"github.com/edgeshard/edgeshard/internal/configtext"
	"github.com/edgeshard/edgeshard/internal/loadgen"
	"github.com/edgeshard/edgeshard/internal/server"
	"github.com/rs/zerolog"
)

// builder builds the plugins and the edgeshard binary the figures run, once
// per driver run.
type builder struct {
	root string
	mu   sync.Mutex
	done map[string]string
}

// wasm builds the Go plugin in package dir pkg (relative to the root) for
// wasip1 with the same flags as `make plugins` and internal/testutil (so
// the compilation cache is shared with the tests) and returns its path.
func (b *builder) wasm(pkg string, ldflags ...string) (string, error) {
	key := pkg + "\x00" + strings.Join(ldflags, " ")
	b.mu.Lock()
	defer b.mu.Unlock()
	if p, ok := b.done[key]; ok {
		return p, nil
	}
	name := strings.ReplaceAll(strings.Trim(pkg, "/."), "/", "_")
	if len(ldflags) > 0 {
		name += "-" + strconv.Itoa(len(b.done))
	}
	dir := filepath.Join(b.root, "build", "bench", "wasm")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	out := filepath.Join(dir, name+".wasm")
	args := []string{"build", "-buildmode=c-shared", "-trimpath"}
	if len(ldflags) > 0 {
		args = append(args, "-ldflags", strings.Join(ldflags, " "))
	}
	args = append(args, "-o", out, "./"+pkg)
	cmd := exec.Command("go", args...)
	cmd.Dir = b.root
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
	if o, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, o)
	}
	if b.done == nil {
		b.done = map[string]string{}
	}
	b.done[key] = out
	return out, nil
}

// binary builds cmd/edgeshard (no -race: it runs as its own process).
func (b *builder) binary() (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p, ok := b.done["\x00bin"]; ok {
		return p, nil
	}
	out := filepath.Join(b.root, "build", "bench", "edgeshard")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/edgeshard")
	cmd.Dir = b.root
	if o, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/edgeshard: %v\n%s", err, o)
	}
	if b.done == nil {
		b.done = map[string]string{}
	}
	b.done["\x00bin"] = out
	return out, nil
}

// logSink receives the logs of the hosts and edge APIs a figure starts. It
// counts warnings, errors and the seed's E-VIBECODR codes (a fallback
// during a measurement means the path measured was not the one intended)
// and keeps the first few error lines for the report.
type logSink struct {
	mu     sync.Mutex
	warns  int
	errs   int
	codes  map[string]int
	sample []string
}

var codeRe = regexp.MustCompile(`"code":"(E-VIBECODR-\d+)"`)

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case bytes.Contains(p, []byte(`"level":"warn"`)):
		s.warns++
	case bytes.Contains(p, []byte(`"level":"error"`)):
		s.errs++
		if len(s.sample) < 3 {
			s.sample = append(s.sample, strings.TrimSpace(string(p)))
		}
	}
	if m := codeRe.FindSubmatch(p); m != nil {
		if s.codes == nil {
			s.codes = map[string]int{}
		}
		s.codes[string(m[1])]++
	}
	return len(p), nil
}

// code returns how many log lines carried code.
func (s *logSink) code(code string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.codes[code]
}

// errors returns the count of error lines and a few of them.
func (s *logSink) errors() (int, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.errs, slices.Clone(s.sample)
}

// logger returns a logger writing to the sink (info and above).
func (s *logSink) logger() zerolog.Logger { return zerolog.New(s).Level(zerolog.InfoLevel) }

// scratch is what runAll gives each figure: a working directory of its
// own, a log sink, and the cleanups of what the figure started (run last
// first when it ends, before the directory is removed).
type scratch struct {
	dir      string
	logs     *logSink
	cleanups []func()
}

func newScratch(figure string) (*scratch, error) {
	dir, err := os.MkdirTemp("", "edgeshard-bench-"+figure+"-")
	if err != nil {
		return nil, err
	}
	return &scratch{dir: dir, logs: &logSink{}}, nil
}

// path is a path in the working directory.
func (w *scratch) path(elem ...string) string {
	return filepath.Join(append([]string{w.dir}, elem...)...)
}

// onClose registers a cleanup for the figure's end.
func (w *scratch) onClose(f func()) { w.cleanups = append(w.cleanups, f) }

func (w *scratch) close() {
	for i := len(w.cleanups) - 1; i >= 0; i-- {
		w.cleanups[i]()
	}
	os.RemoveAll(w.dir)
}

// newHost starts a host of cfg that closes when the figure ends.
func (r *runner) newHost(ctx context.Context, w *scratch, cfg host.Config) (*host.Host, error) {
	h, err := host.New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	w.onClose(func() { h.Close(context.Background()) })
	return h, nil
}

// hostConfig returns a durable host configuration: Badger storage in dir
// with fsync on every group commit, the shared compilation cache.
func (r *runner) hostConfig(dir string, logs *logSink) host.Config {
	cfg := host.DefaultConfig()
	cfg.DataDir = dir
	cfg.CacheDir = r.cacheDir
	cfg.Engine = r.engine
	cfg.SyncWrites = true
	cfg.Logger = logs.logger()
	cfg.IdleTimeout = time.Hour // nothing is evicted mid-measurement
	return cfg
}

// serverConfig is the part of every config a figure's server runs with:
// loopback ports, durable storage (sync_writes, as the default), the shared
// compilation cache, nothing evicted mid-measurement, the edge API trusting
// the user header (as behind an authenticating gateway) and no reconcile
// ticker. The figure appends its bindings, databases and [vars].
const serverConfig = `listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
admin_token = %q
data_dir = %q
cache_dir = %q
sync_writes = true
idle_timeout = "1h"

[auth]
trust_user_header = %q

[reconcile]
interval = "0s"
`

// sqlConfig declares the D1 database DB in a SQLite file with
// synchronous=FULL (the default, spelled out: equal durability with the
// fsync'd shard storage).
func sqlConfig(path string) string {
	return configtext.D1("DB", "sqlite://"+path, `synchronous = "FULL"`)
}

// startServer starts, in w's directory name, the server `edgeshard serve`
// runs (internal/server) from serverConfig plus body, on the runner's
// shared engine, logging to w's sink; it stops when the figure ends. The
// environment is not read: a COUNTER_DO_MODE of the shell must not change
// what a figure measures.
func (r *runner) startServer(w *scratch, name, body string) (*server.Server, error) {
	return r.startServerText(w, name, fmt.Sprintf(serverConfig, adminToken, w.path(name), r.cacheDir, userHeader)+body)
}

// startModeServers starts the two servers of a pipeline's comparison, as
// `edgeshard serve` runs them, each with its own SQL file: "primary", with
// the pipeline's shard config and modeVar = primary, and "off", with
// modeVar = off and no shard.
func (r *runner) startModeServers(w *scratch, modeVar, shardConfig string) (primary, off *server.Server, err error) {
	primary, err = r.startServer(w, "primary", shardConfig+configtext.Vars(modeVar, "primary")+sqlConfig(w.path("shard.db")))
	if err != nil {
		return nil, nil, err
	}
	off, err = r.startServer(w, "off", configtext.Vars(modeVar, "off")+sqlConfig(w.path("legacy.db")))
	return primary, off, err
}

// startServerText starts, in w's directory name, the server of a whole
// config text, as startServer does.
func (r *runner) startServerText(w *scratch, name, text string) (*server.Server, error) {
	dir := w.path(name)
	logs := w.logs
	cfg, err := config.Parse([]byte(text), filepath.Join(dir, "edgeshard.toml"))
	if err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s, err := server.New(cfg, server.Options{Logger: logs.logger(), Engine: r.engine,
		LookupEnv: func(string) (string, bool) { return "", false }})
	if err != nil {
		return nil, err
	}
	if err := s.Start(context.Background()); err != nil {
		return nil, err
	}
	w.onClose(func() { s.Stop(context.Background()) })
	return s, nil
}

// newServer serves h on a fresh 127.0.0.1 port (httptest listens on
// loopback only).
func newServer(h http.Handler) *httptest.Server {
	s := httptest.NewUnstartedServer(h)
	s.Config.ReadHeaderTimeout = 10 * time.Second
	s.Start()
	return s
}

// newClient returns an HTTP client keeping up to conns idle connections to
// one loopback server.
func newClient(conns int) *http.Client {
	return &http.Client{
		Timeout: time.Minute,
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			DisableCompression:  true,
		},
	}
}

// load is the outcome of one closed-loop run.
type load struct {
	OK, Errors int
	Span       time.Duration // first start to last end
	CPU        time.Duration // CPU time of the whole process during the run
	FirstErr   error
	Stats      loadgen.Stats
}

// cpuPerOp returns the process CPU time per acknowledged operation: unlike
// the rate, it barely depends on how much of the machine other tenants
// take.
func (l load) cpuPerOp() time.Duration {
	if l.OK == 0 {
		return 0
	}
	return l.CPU / time.Duration(l.OK)
}

// rate returns acknowledged operations per second over the span plus
// extra (work the side owes after the load, e.g. a final flush).
func (l load) rate(extra time.Duration) float64 {
	d := l.Span + extra
	if d <= 0 {
		return 0
	}
	return float64(l.OK) / d.Seconds()
}

// closedLoop runs op with workers concurrent callers for d.
func closedLoop(workers int, d time.Duration, op loadgen.Op) load {
	c0 := benchkit.SelfCPU()
	run := loadgen.Start(context.Background(), loadgen.Options{Workers: workers}, op)
	time.Sleep(d)
	res := run.Stop()
	st := res.All()
	l := load{OK: st.Requests - st.Errors, Errors: st.Errors, Span: st.Span, CPU: benchkit.SelfCPU() - c0, Stats: st}
	if errs := res.Errors(); len(errs) > 0 {
		l.FirstErr = errs[0].Err
	}
	return l
}

// checkedLoop is closedLoop in which every call must succeed: a failure
// is an error naming how many of the calls failed, and the first error.
func checkedLoop(workers int, d time.Duration, op loadgen.Op, calls string) (load, error) {
	l := closedLoop(workers, d, op)
	if l.Errors > 0 {
		return l, fmt.Errorf("%d of %d %s failed; first: %v", l.Errors, l.OK+l.Errors, calls, l.FirstErr)
	}
	return l, nil
}

// measureSample is checkedLoop's rate and CPU per call as a sample (what
// names the calls in an error: "checks", "inserts").
func measureSample(workers int, d time.Duration, op loadgen.Op, what string) (sample, error) {
	l, err := checkedLoop(workers, d, op, what)
	if err != nil {
		return sample{}, err
	}
	return sample{rate: l.rate(0), cpu: l.cpuPerOp(), p99: l.Stats.P99}, nil
}

// sample is one measured run of one side.
type sample struct {
	rate float64       // operations acknowledged per second
	cpu  time.Duration // process CPU time per operation
	p99  time.Duration // 99th percentile latency of the run's requests
}

// side is one side of a comparison: run performs one measured run.
type side struct {
	name string
	run  func() (sample, error)
}

// compare runs the sides in turn, rounds times, rotating which side goes
// first each round (a b, b a, a b, ... for two), so that a slow phase of
// the machine does not always hit the same side. It returns every sample
// of each side, in the order of sides.
func (r *runner) compare(fig string, rounds int, sides ...side) ([][]sample, error) {
	out := make([][]sample, len(sides))
	for i := 0; i < rounds; i++ {
		for k := range sides {
			j := (k + i) % len(sides)
			if len(sides) == 2 && i%2 == 1 {
				j = 1 - k
			}
			s := &sides[j]
			stop := r.sideProfile.start(fig, s.name, i+1, r.logf)
			v, err := s.run()
			stop()
			if err != nil {
				return nil, fmt.Errorf("%s round %d: %w", s.name, i+1, err)
			}
			r.logf("%s round %d: %-8s %8.0f/s  %6.1f µs CPU/op  p99 %.2f ms", fig, i+1, s.name, v.rate, float64(v.cpu)/float64(time.Microsecond), float64(v.p99)/float64(time.Millisecond))
			out[j] = append(out[j], v)
		}
	}
	return out, nil
}

// addComparison adds the figures of a comparison of side a (out[0]) with
// side b (out[1]): each median rate, a's over b's, each CPU time per
// operation; it returns the medians, the ratio and the larger spread of
// the two sides' rounds (added where the figure lists it).
func (res *result) addComparison(out [][]sample, a, b string) (am, bm, ratio, spread float64) {
	ar, br := rates(out[0]), rates(out[1])
	am, bm = benchkit.Median(ar), benchkit.Median(br)
	ratio = am / bm
	res.add(a+"_per_s", am)
	res.add(b+"_per_s", bm)
	res.add("ratio", ratio)
	res.add(a+"_cpu_us", cpuMicros(out[0]))
	res.add(b+"_cpu_us", cpuMicros(out[1]))
	res.add(a+"_p99_ms", p99Millis(out[0]))
	res.add(b+"_p99_ms", p99Millis(out[1]))
	return am, bm, ratio, max(benchkit.Spread(ar), benchkit.Spread(br))
}

// addSide adds a side's median rate (<prefix>_per_s) and CPU per
// operation (<prefix>_cpu_us).
func (res *result) addSide(prefix string, ss []sample) {
	res.add(prefix+"_per_s", benchkit.Median(rates(ss)))
	res.add(prefix+"_cpu_us", cpuMicros(ss))
}

// rates returns the rates of samples.
func rates(ss []sample) []float64 {
	out := make([]float64, len(ss))
	for i, s := range ss {
		out[i] = s.rate
	}
	return out
}

// p99Millis returns the median over samples of their p99 latency, in ms.
func p99Millis(ss []sample) float64 {
	out := make([]float64, len(ss))
	for i, s := range ss {
		out[i] = float64(s.p99) / float64(time.Millisecond)
	}
	return benchkit.Median(out)
}

// cpuMicros returns the median CPU µs per operation of samples.
func cpuMicros(ss []sample) float64 {
	out := make([]float64, len(ss))
	for i, s := range ss {
		out[i] = float64(s.cpu) / float64(time.Microsecond)
	}
	return benchkit.Median(out)
}

// rssBytes returns the process's resident set (VmRSS of /proc/self/status)
// after a full GC that returns freed memory to the OS.
func rssBytes() (uint64, error) {
	runtime.GC()
	debug.FreeOSMemory()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, err
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("no VmRSS in /proc/self/status")
}
