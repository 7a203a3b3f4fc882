package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgeshard/edgeshard/internal/benchkit"
	"github.com/edgeshard/edgeshard/internal/childproc"
	"github.com/edgeshard/edgeshard/internal/configtext"
	"github.com/edgeshard/edgeshard/internal/loopback"
)

// startupConfig is the default configuration's shape (the three pipelines,
// the counter example, SQL, analytics, the edge API) with paths filled in.
var startupConfig = `listen = "{{LISTEN}}"
data_dir = "{{DATA}}"
cache_dir = "{{CACHE}}"
log_level = "warn"
` + pipelinesConfig + `
[auth]
trust_user_header = "X-User-Id"
`

// pipelinesConfig is the bindings, database and dataset of `make run`'s
// configuration (edgeshard.toml): the three pipelines' shards and the
// counter example, SQLite and analytics in the data directory. Module
// paths are placeholders, filled from pipelineModules.
var pipelinesConfig = rateLimitBinding +
	configtext.Pipelines("{{EVENTS}}", "{{COUNTERS}}", 32, "sqlite://{{DATA}}/analytics.db") +
	counterBinding + configtext.D1("DB", "sqlite://{{DATA}}/d1.db")

// rateLimitBinding is the rate-limit binding of 32 shards, counterBinding
// the counter example, one object per name.
var (
	rateLimitBinding = configtext.Binding("RATE_LIMIT_SHARD", "{{RATELIMIT}}", 32, "", "")
	counterBinding   = configtext.Binding("COUNTER", "{{COUNTER}}", 0, "", "")
)

// pipelineModules are the packages of pipelinesConfig's placeholders.
var pipelineModules = map[string]string{"RATELIMIT": "plugins/ratelimit", "EVENTS": "plugins/runtimeevents",
	"COUNTERS": "plugins/counters", "COUNTER": "examples/counter"}

// minimalStartupConfig is the smoke test's: the counter example only.
const minimalStartupConfig = `listen = "{{LISTEN}}"
data_dir = "{{DATA}}"
cache_dir = "{{CACHE}}"
log_level = "warn"

[[durable_objects.bindings]]
name = "COUNTER"
module = "{{COUNTER}}"
shards = 0
`

// startup: start-to-ready of the real binary — from exec of
// `edgeshard serve` to the first 200 from /healthz — with an empty
// compilation cache (cold: every module compiled) and again with the cache
// the cold start filled (warm), Startups pairs.
func (r *runner) startup(w *scratch) (*result, error) {
	bin, err := r.build.binary()
	if err != nil {
		return nil, err
	}
	conf, mods := startupConfig, pipelineModules
	if r.sz.MinimalStartup {
		conf, mods = minimalStartupConfig, map[string]string{"COUNTER": "examples/counter"}
	}
	if conf, err = r.withModules(conf, mods); err != nil {
		return nil, err
	}
	var cold, warm, coldCPU, warmCPU []float64
	for i := 0; i < r.sz.Startups; i++ {
		dir := w.path(fmt.Sprintf("round-%d", i+1))
		if err := os.Mkdir(dir, 0o755); err != nil {
			return nil, err
		}
		c, wm, err := startPair(bin, dir, conf)
		os.RemoveAll(dir)
		if err != nil {
			return nil, fmt.Errorf("round %d: %w", i+1, err)
		}
		r.logf("startup round %d: cold %v (%v CPU), warm %v (%v CPU)", i+1, c.wall.Round(time.Millisecond), c.cpu,
			wm.wall.Round(time.Millisecond), wm.cpu)
		cold, coldCPU = append(cold, c.wall.Seconds()), append(coldCPU, c.cpu.Seconds())
		warm, warmCPU = append(warm, wm.wall.Seconds()), append(warmCPU, wm.cpu.Seconds())
	}
	cm, wm := benchkit.Median(cold), benchkit.Median(warm)
	res := &result{name: "startup", met: wm <= 1}
	res.add("cold_s", cm)
	res.add("warm_s", wm)
	res.add("cold_over_warm", cm/wm)
	res.add("cold_cpu_s", benchkit.Median(coldCPU))
	res.add("warm_cpu_s", benchkit.Median(warmCPU))
	res.add("warm_spread", benchkit.Spread(warm))
	res.add("rounds", r.sz.Startups)
	res.add("goal_max_warm_s", 1)
	res.add("met", yesNo(res.met))
	res.headline = fmt.Sprintf("warm %.2f s (cold %.2f s)", wm, cm)
	res.note = fmt.Sprintf("exec to first /healthz 200, having used %.2f s (warm) and %.2f s (cold) of CPU: ", benchkit.Median(warmCPU), benchkit.Median(coldCPU))
	res.note += "3 plugins + counter example, SQLite, analytics, edge API"
	return res, nil
}

// startPair starts the binary twice on the same data and cache directory:
// first with the cache empty, then warm.
func startPair(bin, dir, conf string) (cold, warm start, err error) {
	conf = strings.ReplaceAll(conf, "{{DATA}}", filepath.Join(dir, "data"))
	conf = strings.ReplaceAll(conf, "{{CACHE}}", filepath.Join(dir, "cache"))
	if cold, err = startOnce(bin, dir, conf); err != nil {
		return start{}, start{}, fmt.Errorf("cold start: %w", err)
	}
	if warm, err = startOnce(bin, dir, conf); err != nil {
		return start{}, start{}, fmt.Errorf("warm start: %w", err)
	}
	return cold, warm, nil
}

// start is one start of the binary: wall time to ready, and the CPU time
// the process had used by then (user+system of all its threads), which
// depends much less on how busy the machine is.
type start struct {
	wall, cpu time.Duration
}

// startOnce runs `edgeshard serve` on a free loopback port, returns the
// time until /healthz answered 200, and stops it with SIGTERM.
func startOnce(bin, dir, conf string) (start, error) {
	addr, err := loopback.FreeAddr()
	if err != nil {
		return start{}, err
	}
	path := filepath.Join(dir, "edgeshard.toml")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(conf, "{{LISTEN}}", addr)), 0o644); err != nil {
		return start{}, err
	}
	out := benchkit.NewOutput() // read while the child may still write
	cmd := exec.Command(bin, "serve", "--config", path)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), "EDGESHARD_ADMIN_TOKEN=")
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return start{}, err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	defer childproc.Stop(cmd.Process, done)
	err = childproc.WaitReady(context.Background(), client, "http://"+addr, done, 3*time.Minute, 5*time.Millisecond)
	if err != nil {
		if errors.Is(err, childproc.ErrExited) {
			err = fmt.Errorf("%w (%v)", err, cmd.ProcessState)
		}
		return start{}, fmt.Errorf("%w:\n%s", err, out.String())
	}
	return start{wall: time.Since(t0), cpu: benchkit.ProcCPU(cmd.Process.Pid)}, nil
}
