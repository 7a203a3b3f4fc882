package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgeshard/edgeshard/internal/benchkit"
	"github.com/edgeshard/edgeshard/internal/childproc"
	"github.com/edgeshard/edgeshard/internal/loopback"
)

// goBuild runs `go build args...` in dir with extra environment.
func goBuild(dir string, env []string, args ...string) error {
	cmd := exec.Command("go", append([]string{"build"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// binaries are what one run executes, all built from source.
type binaries struct {
	edgeshard, ratelimit, gubernator, bare string
}

// buildAll builds the edgeshard binary and the RateLimitShard plugin in the
// repository (the plugin with the flags of `make plugins`, at the path
// cmd/edgeshard-bench uses, so the compilation cache is shared) and the
// two peers in bench/, into build/bench/.
func buildAll(root string) (binaries, error) {
	out := filepath.Join(root, "build", "bench")
	b := binaries{
		edgeshard:  filepath.Join(out, "edgeshard"),
		ratelimit:  filepath.Join(out, "wasm", "plugins_ratelimit.wasm"),
		gubernator: filepath.Join(out, "gubernator-peer"),
		bare:       filepath.Join(out, "bare-peer"),
	}
	if err := os.MkdirAll(filepath.Join(out, "wasm"), 0o755); err != nil {
		return b, err
	}
	steps := []struct {
		dir  string
		env  []string
		args []string
	}{
		{root, nil, []string{"-trimpath", "-o", b.edgeshard, "./cmd/edgeshard"}},
		{root, []string{"GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0"}, []string{"-buildmode=c-shared", "-trimpath", "-o", b.ratelimit, "./plugins/ratelimit"}},
		{filepath.Join(root, "bench"), nil, []string{"-trimpath", "-o", b.gubernator, "./cmd/gubernator-peer"}},
		{filepath.Join(root, "bench"), nil, []string{"-trimpath", "-o", b.bare, "./cmd/bare-peer"}},
	}
	var wg sync.WaitGroup
	errs := make([]error, len(steps))
	for i, s := range steps {
		wg.Go(func() {
			errs[i] = goBuild(s.dir, s.env, s.args...)
		})
	}
	wg.Wait()
	return b, errors.Join(errs...)
}

// proc is one server process of a side.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *benchkit.Output
	base string // http://host:port
	done chan struct{}
}

// childEnv is the environment of a server process: the driver's, without
// the EDGESHARD_ and GUBER_ variables a shell may hold (they would change
// what is measured: an admin token, another data directory, a peer
// discovery type).
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "EDGESHARD_") || strings.HasPrefix(kv, "GUBER_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// startReady starts a peer binary that prints "ready http=ADDR ..." on its
// first line of standard output, and returns once that line came.
func startReady(name, bin string, args ...string) (*proc, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = childEnv()
	p := &proc{name: name, cmd: cmd, out: benchkit.NewOutput(), done: make(chan struct{})}
	cmd.Stderr = p.out
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		first := true
		for sc.Scan() {
			if first {
				ready <- sc.Text()
				first = false
			}
			p.out.Write(append(sc.Bytes(), '\n'))
		}
		if first {
			close(ready)
		}
	}()
	go func() { cmd.Wait(); close(p.done) }()
	select {
	case line, ok := <-ready:
		f := strings.Fields(line)
		if !ok || len(f) < 2 || f[0] != "ready" || !strings.HasPrefix(f[1], "http=") {
			p.stop()
			return nil, fmt.Errorf("%s: no ready line (got %q):\n%s", name, line, p.out.String())
		}
		p.base = "http://" + strings.TrimPrefix(f[1], "http=")
		return p, nil
	case <-time.After(time.Minute):
		p.stop()
		return nil, fmt.Errorf("%s: not ready after a minute:\n%s", name, p.out.String())
	}
}

// edgeshardConfig is the edgeshard side: the real binary with its defaults
// (durable Badger storage with fsync'd group commits, memory limits,
// budgets), one rate-limit binding of 32 shards of the RateLimitShard
// plugin, the edge API off, the admin API off (no token), loopback only.
const edgeshardConfig = `listen = %q
data_dir = %q
cache_dir = %q
log_level = "warn"
%s
[[durable_objects.bindings]]
name = "LIMITS"
module = %q
shards = %d

[edge]
enabled = false
`

// startEdgeshard writes the configuration, with extra before its first table, into dir
// and starts `edgeshard serve` with env added to its environment,
// returning once /healthz answers 200.
func startEdgeshard(bins binaries, dir, cacheDir string, shards int, extra string, env []string) (*proc, error) {
	addr, err := loopback.FreeAddr()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "edgeshard.toml")
	// extra goes before the first table, so it may set top-level keys
	// (fetch_batch = 1) as well as tables ([storage]).
	text := fmt.Sprintf(edgeshardConfig, addr, filepath.Join(dir, "data"), cacheDir, extra, bins.ratelimit, shards)
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(bins.edgeshard, "serve", "--config", conf)
	cmd.Dir = dir
	cmd.Env = append(childEnv(), env...)
	p := &proc{name: "edgeshard", cmd: cmd, out: benchkit.NewOutput(), base: "http://" + addr, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { cmd.Wait(); close(p.done) }()
	client := &http.Client{Timeout: time.Second}
	defer client.CloseIdleConnections()
	if err := childproc.WaitReady(context.Background(), client, p.base, p.done, 3*time.Minute, 20*time.Millisecond); err != nil {
		p.stop()
		return nil, fmt.Errorf("%w:\n%s", err, p.out.String())
	}
	return p, nil
}

// stop sends SIGTERM and waits up to 30 s, then kills.
func (p *proc) stop() {
	if p.cmd.Process == nil {
		return
	}
	childproc.Stop(p.cmd.Process, p.done)
}

// pid returns the process id.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// procStatus returns the fields of /proc/<pid>/status in bytes (VmRSS,
// VmHWM, RssAnon, RssFile, ...; those given in kB).
func procStatus(pid int) (map[string]int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		if n, ok := strings.CutSuffix(v, " kB"); ok {
			if x, err := strconv.ParseInt(n, 10, 64); err == nil {
				out[k] = x << 10
			}
		}
	}
	return out, nil
}
