package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgeshard/edgeshard/internal/benchkit"
	"github.com/edgeshard/edgeshard/internal/childproc"
	"github.com/edgeshard/edgeshard/internal/eventsbody"
	"github.com/edgeshard/edgeshard/internal/loadgen"
	"github.com/edgeshard/edgeshard/internal/loopback"
)

// soakConfig is `make run`'s configuration (edgeshard.toml: the three
// pipelines, the counter example, SQLite, analytics, the edge API trusting
// X-User-Id) with paths and ports filled in, plus the admin API, which
// serves the heap profiles the figure saves.
var soakConfig = `listen = "{{LISTEN}}"
admin_listen = "{{ADMIN}}"
admin_token = "{{TOKEN}}"
data_dir = "{{DATA}}"
cache_dir = "{{CACHE}}"
log_level = "warn"
` + pipelinesConfig + `
[vars]
RUNTIME_EVENT_DO_MODE = "primary"
COUNTER_DO_MODE = "primary"

[auth]
trust_user_header = "X-User-Id"

[proxy.limits]
user = "60/m"
ip = "120/m"
host = "600/m"

[reconcile]
interval = "10m"
`

// soakGoalMiB is the bound on the host's resident memory under the soak
// load (issue "Performance against the peer users would pick", item 2).
const soakGoalMiB = 400

// edgeSoak: the resident memory and Go heap of the real binary with `make
// run`'s configuration after SoakFor of a mixed edge-API load — likes,
// views, batches of 5 runtime events, stats reads — from SoakConns
// connections paced to SoakRate requests/s in all. Every answer must be
// 2xx. Memory is sampled every 2 s (VmRSS of /proc/<pid>/status; the
// heap from the host's /metrics); the figure is the largest reading of the
// last third of the run (the plateau), against the reading once started.
func (r *runner) edgeSoak(w *scratch) (*result, error) {
	sz := r.sz
	sp, err := r.startWarm(w, soakConfig, pipelineModules)
	if err != nil {
		return nil, err
	}

	startMem, err := sp.memory()
	if err != nil {
		return nil, err
	}
	r.logf("edge_soak: started: RSS %d MiB, heap %d MiB; %d connections paced to %d req/s for %v",
		startMem.rss>>20, startMem.heapInuse>>20, sz.SoakConns, sz.SoakRate, sz.SoakFor)
	if r.profileDir != "" {
		if err := sp.saveHeap(filepath.Join(r.profileDir, "soak-heap-start.pb.gz")); err != nil {
			return nil, err
		}
	}

	client := newClient(sz.SoakConns)
	defer client.CloseIdleConnections()
	mix := newSoakMix(sp.base, sz.SoakConns, client)
	interval := time.Duration(float64(time.Second) * float64(sz.SoakConns) / float64(sz.SoakRate))
	cpu0 := benchkit.ProcCPU(sp.cmd.Process.Pid)
	run := loadgen.Start(context.Background(), loadgen.Options{Workers: sz.SoakConns, Interval: interval}, mix.op)

	var samples []memSample
	t0 := time.Now()
	tick := time.NewTicker(2 * time.Second)
	for time.Since(t0) < sz.SoakFor {
		<-tick.C
		m, err := sp.memory()
		if err != nil {
			tick.Stop()
			run.Stop()
			return nil, err
		}
		m.at = time.Since(t0)
		samples = append(samples, m)
		if len(samples)%15 == 0 {
			r.logf("edge_soak: %v: RSS %d MiB, heap in use %d MiB (alloc %d MiB)", m.at.Round(time.Second), m.rss>>20, m.heapInuse>>20, m.heapAlloc>>20)
		}
	}
	tick.Stop()
	if r.profileDir != "" {
		if err := sp.saveHeap(filepath.Join(r.profileDir, "soak-heap-load.pb.gz")); err != nil {
			run.Stop()
			return nil, err
		}
	}
	res := run.Stop()
	cpu := benchkit.ProcCPU(sp.cmd.Process.Pid) - cpu0
	st := res.All()
	errs := res.Errors()
	if len(errs) > st.Requests/100 {
		return nil, fmt.Errorf("%d of %d requests failed; first: %v", len(errs), st.Requests, errs[0].Err)
	}
	for i, e := range errs {
		if i == 3 {
			break
		}
		r.logf("edge_soak: a request failed at %v: %v", e.Start.Round(time.Second), e.Err)
	}
	if len(errs) > 0 {
		for i, l := range strings.Split(sp.output(), "\n") {
			if i == 10 {
				break
			}
			r.logf("edge_soak: host log: %s", l)
		}
	}
	if len(samples) == 0 {
		return nil, fmt.Errorf("no memory sample in %v", sz.SoakFor)
	}
	// The plateau: the largest readings of the last third.
	tail := samples[len(samples)*2/3:]
	var rss, heap, alloc, sys int64
	for _, m := range tail {
		rss, heap, alloc, sys = max(rss, m.rss), max(heap, m.heapInuse), max(alloc, m.heapAlloc), max(sys, m.goSys)
	}
	peak := slices.MaxFunc(samples, func(a, b memSample) int { return int(a.rss - b.rss) })
	out := &result{name: "edge_soak", met: rss <= soakGoalMiB<<20 && len(errs) == 0}
	out.add("rss_mib", rss>>20)
	out.add("heap_mib", heap>>20)
	out.add("heap_alloc_mib", alloc>>20)
	out.add("go_sys_mib", sys>>20)
	out.add("rss_start_mib", startMem.rss>>20)
	out.add("heap_start_mib", startMem.heapInuse>>20)
	out.add("rss_peak_mib", peak.rss>>20)
	out.add("minutes", sz.SoakFor.Minutes())
	out.add("req_per_s", st.RPS())
	out.add("requests", st.Requests)
	out.add("errors", len(errs))
	out.add("p99_ms", st.P99)
	out.add("host_cpu_us", float64(cpu)/float64(time.Microsecond)/float64(max(st.Requests, 1)))
	out.add("conns", sz.SoakConns)
	out.add("goal_max_rss_mib", soakGoalMiB)
	out.add("met", yesNo(out.met))
	out.headline = fmt.Sprintf("RSS %d MiB, heap %d MiB after %s min (start %d / %d)", rss>>20, heap>>20, benchkit.FormatNum(sz.SoakFor.Minutes()), startMem.rss>>20, startMem.heapInuse>>20)
	out.note = fmt.Sprintf("`edgeshard serve`, make run's config; %s req/s (%d conns: likes, views, 5-event batches, stats reads; %d of %d not 2xx), p99 %.1f ms; largest reading of the last third; heap = Go heap in use",
		benchkit.FormatNum(st.RPS()), sz.SoakConns, len(errs), st.Requests, float64(st.P99)/float64(time.Millisecond))
	return out, nil
}

// soakMix is the mixed edge-API load: per request, by a worker's own
// random stream, 30% views, 20% likes (a fresh user each, so the likes
// table grows as in production), 5% unlikes of an earlier like, 25% a
// batch of 5 runtime events, 20% stats reads. 1,000 posts, uniform.
type soakMix struct {
	base    string
	client  *http.Client
	rngs    []*rand.Rand
	liked   [][]string // per worker: "post\x00user" likes to take back
	posts   int
	workers int
}

func newSoakMix(base string, workers int, client *http.Client) *soakMix {
	m := &soakMix{base: base, client: client, posts: 1000, workers: workers, liked: make([][]string, workers)}
	for w := 0; w < workers; w++ {
		m.rngs = append(m.rngs, rand.New(rand.NewPCG(7, uint64(w))))
	}
	return m
}

func (m *soakMix) op(ctx context.Context, w, i int) error {
	rng := m.rngs[w]
	post := "p" + strconv.Itoa(rng.IntN(m.posts))
	switch r := rng.IntN(100); {
	case r < 30:
		return m.do(ctx, http.MethodPost, "/posts/"+post+"/views", "viewer-"+strconv.Itoa(w), nil)
	case r < 50 || (r < 55 && len(m.liked[w]) == 0):
		user := "u" + strconv.Itoa(w) + "-" + strconv.Itoa(i)
		if err := m.do(ctx, http.MethodPut, "/posts/"+post+"/like", user, nil); err != nil {
			return err
		}
		if len(m.liked[w]) < 1000 {
			m.liked[w] = append(m.liked[w], post+"\x00"+user)
		}
		return nil
	case r < 55:
		l := m.liked[w]
		k := rng.IntN(len(l))
		p, u, _ := strings.Cut(l[k], "\x00")
		l[k] = l[len(l)-1]
		m.liked[w] = l[:len(l)-1]
		return m.do(ctx, http.MethodDelete, "/posts/"+p+"/like", u, nil)
	case r < 80:
		b := eventsbody.Append(nil, 5, func(b []byte, e int) []byte {
			return fmt.Appendf(b, `{"type":"soak.step","capsule_id":"cap-%d","payload":{"w":%d,"i":%d,"e":%d}}`, rng.IntN(256), w, i, e)
		})
		return m.do(ctx, http.MethodPost, "/runtime-events", "emitter-"+strconv.Itoa(w), b)
	default:
		return m.do(ctx, http.MethodGet, "/posts/"+post+"/stats", "", nil)
	}
}

// do sends one request; anything but a 2xx is an error.
func (m *soakMix) do(ctx context.Context, method, path, user string, body []byte) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, m.base+path, rd)
	if err != nil {
		return err
	}
	if user != "" {
		req.Header.Set(userHeader, user)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	st, b, err := benchkit.Send(m.client, req)
	if err != nil {
		return err
	}
	if st < 200 || st > 299 {
		return fmt.Errorf("%s %s: status %d: %s", method, path, st, b)
	}
	return nil
}

// serveProc is a running `edgeshard serve`.
type serveProc struct {
	cmd         *exec.Cmd
	out         *benchkit.Output
	base, admin string
	done        chan struct{}
	client      *http.Client
}

// soakToken is the admin token of the soak's host (loopback only).
const soakToken = "bench-soak-token"

// startWarm starts the binary once and stops it, so that its modules are
// in the compilation cache, then starts it for the measurement: a process
// that compiled holds the compiler's garbage in its heap for minutes,
// which is not what a host costs once deployed.
// The modules' paths replace their placeholders in conf (mods: placeholder
// → package); the process stops when the figure ends.
func (r *runner) startWarm(w *scratch, conf string, mods map[string]string) (*serveProc, error) {
	bin, err := r.build.binary()
	if err != nil {
		return nil, err
	}
	if conf, err = r.withModules(conf, mods); err != nil {
		return nil, err
	}
	sp, err := startServe(bin, w.dir, conf, r.cacheDir)
	if err != nil {
		return nil, err
	}
	sp.stop()
	if sp, err = startServe(bin, w.dir, conf, r.cacheDir); err != nil {
		return nil, err
	}
	w.onClose(sp.stop)
	return sp, nil
}

// withModules builds each module of mods (placeholder → package) and puts
// its path in place of {{placeholder}} in conf.
func (r *runner) withModules(conf string, mods map[string]string) (string, error) {
	for k, pkg := range mods {
		p, err := r.build.wasm(pkg)
		if err != nil {
			return "", err
		}
		conf = strings.ReplaceAll(conf, "{{"+k+"}}", p)
	}
	return conf, nil
}

// startServe starts the binary with conf (placeholders LISTEN, ADMIN,
// TOKEN, DATA, CACHE) in dir and waits for /healthz.
func startServe(bin, dir, conf, cacheDir string) (*serveProc, error) {
	addrs, err := loopback.FreeAddrs(2)
	if err != nil {
		return nil, err
	}
	for k, v := range map[string]string{"LISTEN": addrs[0], "ADMIN": addrs[1], "TOKEN": soakToken,
		"DATA": filepath.Join(dir, "data"), "CACHE": cacheDir} {
		conf = strings.ReplaceAll(conf, "{{"+k+"}}", v)
	}
	path := filepath.Join(dir, "edgeshard.toml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	sp := &serveProc{out: benchkit.NewOutput(), base: "http://" + addrs[0], admin: "http://" + addrs[1],
		done: make(chan struct{}), client: &http.Client{Timeout: time.Minute}}
	sp.cmd = exec.Command(bin, "serve", "--config", path)
	sp.cmd.Dir = dir
	sp.cmd.Env = append(os.Environ(), "EDGESHARD_ADMIN_TOKEN="+soakToken)
	sp.cmd.Stdout, sp.cmd.Stderr = sp.out, sp.out
	if err := sp.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { sp.cmd.Wait(); close(sp.done) }()
	if err := childproc.WaitReady(context.Background(), sp.client, sp.base, sp.done, 3*time.Minute, 20*time.Millisecond); err != nil {
		sp.stop()
		return nil, fmt.Errorf("%w:\n%s", err, sp.output())
	}
	return sp, nil
}

func (sp *serveProc) output() string { return sp.out.String() }

// stop sends SIGTERM and waits (30 s at most, then SIGKILL).
func (sp *serveProc) stop() {
	childproc.Stop(sp.cmd.Process, sp.done)
}

// memSample is one reading of the host's memory.
type memSample struct {
	at                          time.Duration
	rss                         int64 // VmRSS
	heapInuse, heapAlloc, goSys int64 // from /metrics
}

// memory reads the process's VmRSS and the Go runtime's figures from
// /metrics.
func (sp *serveProc) memory() (memSample, error) {
	var m memSample
	b, err := os.ReadFile("/proc/" + strconv.Itoa(sp.cmd.Process.Pid) + "/status")
	if err != nil {
		return m, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			m.rss = kb << 10
		}
	}
	resp, err := sp.client.Get(sp.base + "/metrics")
	if err != nil {
		return m, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		var dst *int64
		switch name {
		case "go_memstats_heap_inuse_bytes":
			dst = &m.heapInuse
		case "go_memstats_heap_alloc_bytes":
			dst = &m.heapAlloc
		case "go_memstats_sys_bytes":
			dst = &m.goSys
		default:
			continue
		}
		f, err := strconv.ParseFloat(val, 64)
		if err == nil {
			*dst = int64(f)
		}
	}
	return m, sc.Err()
}

// saveHeap writes the host's heap profile (admin API, /debug/pprof/heap)
// to path, for `go tool pprof -top`.
func (sp *serveProc) saveHeap(path string) error {
	req, err := http.NewRequest(http.MethodGet, sp.admin+"/debug/pprof/heap", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+soakToken)
	resp, err := sp.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("heap profile: status %d: %s", resp.StatusCode, b)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
