package main

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// startupConfig is the default configuration's shape (the three pipelines,
// the counter example, SQL, analytics, the edge API) with paths filled in.
const startupConfig = `listen = "{{LISTEN}}"
data_dir = "{{DATA}}"
cache_dir = "{{CACHE}}"
log_level = "warn"

[[durable_objects.bindings]]
name = "RATE_LIMIT_SHARD"
module = "{{RATELIMIT}}"
shards = 32

[[durable_objects.bindings]]
name = "RUNTIME_EVENT_SHARD"
module = "{{EVENTS}}"
shards = 32
sql = "DB"
analytics = "AE"

[[durable_objects.bindings]]
name = "COUNTER_SHARD"
module = "{{COUNTERS}}"
shards = 32
sql = "DB"

[[durable_objects.bindings]]
name = "COUNTER"
module = "{{COUNTER}}"
shards = 0

[[d1_databases]]
binding = "DB"
url = "sqlite://{{DATA}}/d1.db"

[[analytics_engine_datasets]]
binding = "AE"
dataset = "runtime_events"
url = "sqlite://{{DATA}}/analytics.db"

[auth]
trust_user_header = "X-User-Id"
`

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
func (r *runner) startup() (*result, error) {
	bin, err := r.build.binary()
	if err != nil {
		return nil, err
	}
	mods := map[string]string{}
	want := map[string]string{"RATELIMIT": "plugins/ratelimit", "EVENTS": "plugins/runtimeevents",
		"COUNTERS": "plugins/counters", "COUNTER": "examples/counter"}
	conf := startupConfig
	if r.sz.MinimalStartup {
		want, conf = map[string]string{"COUNTER": "examples/counter"}, minimalStartupConfig
	}
	for k, pkg := range want {
		if mods[k], err = r.build.wasm(pkg); err != nil {
			return nil, err
		}
	}
	var cold, warm, coldCPU, warmCPU []float64
	for i := 0; i < r.sz.Startups; i++ {
		dir, err := os.MkdirTemp("", "edgeshard-bench-startup-")
		if err != nil {
			return nil, err
		}
		c, w, err := startPair(bin, dir, conf, mods)
		os.RemoveAll(dir)
		if err != nil {
			return nil, fmt.Errorf("round %d: %w", i+1, err)
		}
		r.logf("startup round %d: cold %v (%v CPU), warm %v (%v CPU)", i+1, c.wall.Round(time.Millisecond), c.cpu,
			w.wall.Round(time.Millisecond), w.cpu)
		cold, coldCPU = append(cold, c.wall.Seconds()), append(coldCPU, c.cpu.Seconds())
		warm, warmCPU = append(warm, w.wall.Seconds()), append(warmCPU, w.cpu.Seconds())
	}
	cm, wm := median(cold), median(warm)
	res := &result{name: "startup", met: wm <= 1}
	res.add("cold_s", cm)
	res.add("warm_s", wm)
	res.add("cold_over_warm", cm/wm)
	res.add("cold_cpu_s", median(coldCPU))
	res.add("warm_cpu_s", median(warmCPU))
	res.add("warm_spread", spread(warm))
	res.add("rounds", r.sz.Startups)
	res.add("goal_max_warm_s", 1)
	res.add("met", yesNo(res.met))
	res.headline = fmt.Sprintf("warm %.2f s (cold %.2f s)", wm, cm)
	res.note = fmt.Sprintf("exec to first /healthz 200, having used %.2f s (warm) and %.2f s (cold) of CPU: ", median(warmCPU), median(coldCPU))
	res.note += "3 plugins + counter example, SQLite, analytics, edge API"
	return res, nil
}

// startPair starts the binary twice on the same data and cache directory:
// first with the cache empty, then warm.
func startPair(bin, dir, conf string, mods map[string]string) (cold, warm start, err error) {
	for k, v := range mods {
		conf = strings.ReplaceAll(conf, "{{"+k+"}}", v)
	}
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

// procCPU returns the user+system CPU time of process pid so far, from
// /proc/<pid>/stat (in clock ticks of 1/100 s on Linux), or 0.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the command (which may hold spaces) start after ")".
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64) // utime is field 14 of stat
	st, _ := strconv.ParseInt(f[12], 10, 64) // stime is field 15
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// startOnce runs `edgeshard serve` on a free loopback port, returns the
// time until /healthz answered 200, and stops it with SIGTERM.
func startOnce(bin, dir, conf string) (start, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return start{}, err
	}
	addr := ln.Addr().String()
	ln.Close()
	path := filepath.Join(dir, "edgeshard.toml")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(conf, "{{LISTEN}}", addr)), 0o644); err != nil {
		return start{}, err
	}
	var out bytes.Buffer
	cmd := exec.Command(bin, "serve", "--config", path)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = append(os.Environ(), "EDGESHARD_ADMIN_TOKEN=")
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return start{}, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	deadline := t0.Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return start{}, fmt.Errorf("edgeshard exited during start (%v):\n%s", err, out.String())
		default:
		}
		resp, err := client.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				st := start{wall: time.Since(t0), cpu: procCPU(cmd.Process.Pid)}
				stop()
				return st, nil
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	return start{}, fmt.Errorf("not ready after 3 minutes:\n%s", out.String())
}
