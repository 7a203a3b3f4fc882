package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/edgeshard/edgeshard/internal/configtext"
	"github.com/edgeshard/edgeshard/internal/etcdtest"
	"github.com/edgeshard/edgeshard/internal/ownerlog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// The cluster mode: three hosts of ONE POP ([cluster]: one etcd the crash
// test starts in process, one throwaway PostgreSQL), each with the edge
// API and its buffering shards, and the tutorial's page views as per-name
// counters (one object per page). The clients spread likes, unlikes,
// follows, unfollows, views, runs, runtime events and page views over
// every host that is up; a host that does not own a shard forwards to its
// owner. At random, a host is killed (kill -9) and restarted, frozen
// (SIGSTOP) past its lease and resumed (SIGCONT), or drained — SIGTERM,
// which leaves the POP (its shards flushed, its running per-name objects
// shipped), or `edgeshard cluster leave` and then SIGTERM — and
// restarted. At the end, with every host up, their buffers are drained,
// the leftovers of shards they do not own flushed and the pages flushed;
// PostgreSQL is compared with the ledger, stream by stream (page views
// too: every acknowledged number counted, none acknowledged twice), and
// the ownership intervals every run of every host logged must never
// overlap for a shard.

// clusterNodes are the cluster mode's hosts (node ids).
var clusterNodes = []string{"host-a", "host-b", "host-c"}

// clusterLease is the hosts' lease_ttl; a frozen host stays stopped
// clusterFreeze, past it.
const (
	clusterLease  = 2 * time.Second
	clusterFreeze = clusterLease + 1500*time.Millisecond
	clusterPages  = 12
	clusterPrefix = "/crashtest"
)

// clusterActions are what a cycle does to one host (freeze-kill: to two),
// in an order drawn anew every len(clusterActions) cycles.
var clusterActions = []string{"kill", "freeze", "term", "leave", "freeze-kill"}

func runCluster(ctx context.Context, o Options, dir string, seed uint64) (ModeResult, error) {
	res := ModeResult{Mode: "cluster"}
	if o.PageModule == "" {
		return res, fmt.Errorf("the cluster mode needs the page-view module (examples/tutorial)")
	}
	etcd, err := etcdtest.Start()
	if err != nil {
		return res, fmt.Errorf("the cluster mode's etcd: %w", err)
	}
	defer etcd.Close()
	secret := randomToken()
	f, err := startFleet(ctx, o, "cluster", dir, clusterNodes, &res, []string{"FLUSH_EVERY", "2s"}, func(node, addr string) string {
		return configtext.Binding(pageBinding, o.PageModule, 0, "DB", "AE") +
			configtext.Cluster(etcd.Endpoint(), "http://"+addr, clusterLease.String(), clusterPrefix, secret)
	})
	if f != nil {
		defer f.close()
	}
	if err != nil {
		return res, err
	}
	out := o.Out
	fmt.Fprintf(out, "== mode cluster: %d hosts (%s) of one POP on etcd %s and one PostgreSQL (port %d), lease %s, %d cycles, %d clients, %d shards per binding, %d pages, seed %d, dir %s\n",
		len(f.nodes), strings.Join(f.nodes, ", "), etcd.Endpoint(), f.pg.Port, clusterLease, o.Cycles, o.Clients, o.Shards, clusterPages, seed, dir)
	if err := waitMembers(ctx, f.srvs, 30*time.Second); err != nil {
		return res, err
	}

	watch, err := startKeyWatch(ctx, etcd.Endpoint(), clusterPrefix, f)
	if err != nil {
		return res, err
	}
	defer watch.stop()
	led := newLedger()
	if err := seedBaseline(ctx, f.srvs, led, o.Posts); err != nil {
		return res, err
	}
	ld := startLoadOn(loadConfig{clients: o.Clients, interval: o.Interval, posts: o.Posts, seed: seed, follows: true, pages: clusterPages}, led, f.hosts)
	rng := mrand.New(mrand.NewPCG(seed, 7))
	rec := f.startReconciler(ctx, seed)
	var order []int
	for c := 0; c < o.Cycles && ctx.Err() == nil; c++ {
		if c%len(clusterActions) == 0 {
			order = rng.Perm(len(clusterActions))
		}
		act := clusterActions[order[c%len(clusterActions)]]
		v := rng.IntN(len(f.srvs))
		sentBefore := ld.sent.Load()
		stretch := 300*time.Millisecond + time.Duration(rng.Int64N(int64(max(o.CycleMax-300*time.Millisecond, time.Millisecond))))
		select {
		case <-time.After(stretch):
		case <-ctx.Done():
		}
		t0 := time.Now()
		what, err := f.act(ctx, rng, act, v, &res)
		if err != nil {
			ld.finish()
			rec.stop()
			return res, fmt.Errorf("cycle %d (%s %s): %w", c+1, act, f.nodes[v], err)
		}
		if err := waitMembers(ctx, f.srvs, 30*time.Second); err != nil {
			res.Failed = append(res.Failed, fmt.Sprintf("cycle %d: %v", c+1, err))
		}
		fmt.Fprintf(out, "  cycle %d/%d after %.1fs of load: %s; %d requests this cycle; every host a member again %.2fs later\n",
			c+1, o.Cycles, stretch.Seconds(), what, ld.sent.Load()-sentBefore, time.Since(t0).Seconds())
	}
	polls, stuck := watch.result()
	for _, st := range stuck {
		res.Failed = append(res.Failed, "stuck shard: "+st)
	}
	forwarded := forwardsOK(f.srvs)
	if forwarded == 0 {
		res.Failed = append(res.Failed, "no request was forwarded between the hosts: the POP did not run")
	}
	var pagesLine string
	settle := func() ([]stream, error) {
		for _, s := range f.srvs {
			// Leftovers: what a host keeps of a shard it does not own
			// flushes on the shard's alarm, under a leftover claim.
			if err := waitNoAlarms(ctx, s, 90*time.Second); err != nil {
				return nil, fmt.Errorf("%s: %w", s.dir, err)
			}
		}
		objects, err := waitPagesFlushed(ctx, f.srvs, led, 60*time.Second)
		if err != nil {
			return nil, err
		}
		inSQL, err := readPages(ctx, f.dbURL)
		if err != nil {
			return nil, err
		}
		var differ []string
		for page, n := range objects {
			if inSQL[page] != n {
				differ = append(differ, fmt.Sprintf("%s: object %d, SQL %d", page, n, inSQL[page]))
			}
		}
		if len(differ) > 0 {
			return nil, fmt.Errorf("flushed pages differ from their objects: %s", strings.Join(differ, "; "))
		}
		pagesLine = fmt.Sprintf("  pages: %d objects flushed, each object's count equals its page_views row", len(objects))
		return []stream{comparePages(led, inSQL)}, nil
	}
	if err := f.finish(ctx, &res, led, ld, rec, settle); err != nil {
		return res, err
	}
	if pagesLine != "" {
		fmt.Fprintln(out, pagesLine)
	}
	// The promise of the POP: never two live owners of a shard.
	var ivs []ownerlog.Interval
	runs := 0
	for i, s := range f.srvs {
		iv, n, err := s.ownerships(f.nodes[i])
		if err != nil {
			return res, err
		}
		ivs, runs = append(ivs, iv...), runs+n
	}
	shards := map[string]bool{}
	for _, iv := range ivs {
		shards[iv.Shard] = true
	}
	bad := ownerlog.Check(ivs)
	for i, b := range bad {
		if i == 20 {
			res.Failed = append(res.Failed, fmt.Sprintf("... %d more ownership violations", len(bad)-20))
			break
		}
		res.Failed = append(res.Failed, "ownership "+b)
	}
	if len(ivs) == 0 {
		res.Failed = append(res.Failed, "no ownership interval logged: the hosts never claimed a shard")
	}
	fmt.Fprintf(out, "  owner keys in etcd checked against the hosts' claims %d times: %d shards stuck (held under a live lease by a host that does not own them)\n", polls, len(stuck))
	fmt.Fprintf(out, "  ownership: %d intervals of %d shards over %d host runs, %d overlapping or out of epoch order\n", len(ivs), len(shards), runs, len(bad))
	fmt.Fprintf(out, "  cluster: %d requests forwarded ok by the last runs; %d leftover flushes, %d shards shipped, %d lease losses, %d fence refusals logged\n",
		forwarded, f.logCount("leftover flush of a shard owned elsewhere"), f.logCount("shard shipped to its next owner"),
		f.logCount("lease lapsed"), f.logCount("ownership lost before the event committed"))
	verdict := res.finish(out, f.t0)
	fmt.Fprintf(out, "== mode cluster %s: %d kills, %d freezes, %d drains (SIGTERM or leave, then restart) over %d hosts, took %.1fs\n",
		verdict, res.Kills, res.Freezes, res.Drains, len(f.srvs), res.Took.Seconds())
	return res, nil
}

// freeze takes a host out of traffic and stops it (SIGSTOP) for
// clusterFreeze (or until ctx ends); the caller resumes it.
func freeze(ctx context.Context, s *server, g *gate, res *ModeResult) error {
	g.close()
	if err := s.signal(syscall.SIGSTOP); err != nil {
		return err
	}
	res.Freezes++
	select {
	case <-time.After(clusterFreeze):
	case <-ctx.Done():
	}
	return nil
}

// act does one cycle's action to host v (and, for freeze-kill, to
// another that rng picks) and says what it did; err: a host could not be
// brought back.
func (f *fleet) act(ctx context.Context, rng *mrand.Rand, act string, v int, res *ModeResult) (string, error) {
	s, g, name := f.srvs[v], f.hosts[v].gate, f.nodes[v]
	switch act {
	case "kill":
		g.close()
		s.kill()
		res.Kills++
		if err := s.start(ctx); err != nil {
			return "", err
		}
		g.open()
		return "kill -9 " + name + ", restart", nil
	case "freeze":
		if err := freeze(ctx, s, g, res); err != nil {
			return "", err
		}
		if err := s.signal(syscall.SIGCONT); err != nil {
			return "", err
		}
		g.open()
		return fmt.Sprintf("SIGSTOP %s for %.1fs (lease %s), SIGCONT", name, clusterFreeze.Seconds(), clusterLease), nil
	case "freeze-kill":
		// The frozen host's shards go to the others; one of them is
		// killed holding their buffers, and stays down until the frozen
		// host is back and owns its shards again: the killed host then
		// flushes what it kept of them as leftovers.
		w := (v + 1 + rng.IntN(len(f.srvs)-1)) % len(f.srvs)
		s2, g2 := f.srvs[w], f.hosts[w].gate
		if err := freeze(ctx, s, g, res); err != nil {
			return "", err
		}
		g2.close()
		s2.kill()
		res.Kills++
		if err := s.signal(syscall.SIGCONT); err != nil {
			return "", err
		}
		var up []*server
		for i, srv := range f.srvs {
			if i != w {
				up = append(up, srv)
			}
		}
		if err := waitMembers(ctx, up, 30*time.Second); err != nil {
			res.Failed = append(res.Failed, err.Error())
		}
		g.open()
		if err := s2.start(ctx); err != nil {
			return "", err
		}
		g2.open()
		return fmt.Sprintf("SIGSTOP %s for %.1fs, kill -9 %s (holding some of its shards), SIGCONT %s, restart %s", name, clusterFreeze.Seconds(), f.nodes[w], name, f.nodes[w]), nil
	case "term", "leave":
		what := "SIGTERM " + name + " (leaves the POP), restart"
		if act == "leave" {
			// The host stays up, forwarding, while its shards move off.
			if out, err := f.cli(ctx, s, "cluster", "leave", "--wait", "30s"); err != nil {
				res.Failed = append(res.Failed, fmt.Sprintf("edgeshard cluster leave on %s: %v: %s", name, err, out))
			}
			what = "edgeshard cluster leave " + name + ", SIGTERM, restart"
		}
		g.close()
		if err := s.term(60 * time.Second); err != nil {
			res.Failed = append(res.Failed, fmt.Sprintf("%s: %v", name, err))
		}
		res.Drains++
		if err := s.start(ctx); err != nil {
			return "", err
		}
		g.open()
		return what, nil
	}
	return "", fmt.Errorf("unknown action %q", act)
}

// cli runs an admin command of the edgeshard binary against s.
func (f *fleet) cli(ctx context.Context, s *server, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	args = append(args, "--admin", s.adminURL(), "--token", s.token)
	b, err := exec.CommandContext(ctx, f.o.Bin, args...).CombinedOutput()
	return strings.TrimSpace(string(b)), err
}

// waitMembers waits until every host sees every host as a member of the
// POP (not leaving).
func waitMembers(ctx context.Context, srvs []*server, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		seen := ""
		all := true
		for _, s := range srvs {
			var st struct {
				Members []struct {
					Node    string `json:"node"`
					Leaving bool   `json:"leaving"`
				} `json:"members"`
			}
			err := adminDo(ctx, s, http.MethodGet, "/admin/cluster", &st)
			n := 0
			for _, m := range st.Members {
				if !m.Leaving {
					n++
				}
			}
			if err != nil || n != len(srvs) {
				all = false
				seen = fmt.Sprintf("%s sees %d members (%v)", s.dir, n, err)
				break
			}
		}
		if all {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("the hosts do not all see each other after %v: %s", limit, seen)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitPagesFlushed asks every page of the ledger (through the hosts in
// turn) until its object has flushed its count to SQL, and returns the
// counts.
func waitPagesFlushed(ctx context.Context, srvs []*server, led *ledger, limit time.Duration) (map[string]int64, error) {
	led.mu.Lock()
	pages := sortedKeys(led.pages)
	led.mu.Unlock()
	deadline := time.Now().Add(limit)
	c := newClient(1)
	defer c.CloseIdleConnections()
	counts := map[string]int64{}
	for i, page := range pages {
		for {
			var st struct {
				Views   int64 `json:"views"`
				Flushed int64 `json:"flushed"`
			}
			last := ""
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srvs[i%len(srvs)].url()+"/do/"+pageBinding+"/"+page+"/", nil)
			resp, err := c.Do(req)
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				last = fmt.Sprintf("%d %s", resp.StatusCode, b)
				if resp.StatusCode == http.StatusOK && json.Unmarshal(b, &st) == nil && st.Views == st.Flushed {
					counts[page] = st.Views
					break
				}
			} else {
				last = err.Error()
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return counts, fmt.Errorf("page %s not flushed after %v: %s", page, limit, last)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return counts, nil
}

// forwardsOK sums edgeshard_cluster_forwards_total{outcome="ok"} over the
// hosts' current runs.
func forwardsOK(srvs []*server) int64 {
	var n int64
	for _, s := range srvs {
		resp, err := http.Get(s.url() + "/metrics")
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			l := sc.Text()
			if strings.HasPrefix(l, `edgeshard_cluster_forwards_total{outcome="ok"}`) {
				if v, err := strconv.ParseFloat(strings.TrimSpace(l[strings.LastIndexByte(l, ' '):]), 64); err == nil {
					n += int64(v)
				}
			}
		}
		resp.Body.Close()
	}
	return n
}

// logCount counts the lines of every host's log (all runs) containing s.
func (f *fleet) logCount(s string) int {
	n := 0
	for _, srv := range f.srvs {
		b, err := os.ReadFile(srv.log.Name())
		if err == nil {
			n += strings.Count(string(b), s)
		}
	}
	return n
}

// ownerships reads the ownership intervals every run of the host logged:
// an interval a run never ended (it was killed) ends when the run did.
// It returns them and the number of runs.
func (s *server) ownerships(node string) ([]ownerlog.Interval, int, error) {
	b, err := os.ReadFile(s.log.Name())
	if err != nil {
		return nil, 0, err
	}
	var ivs []ownerlog.Interval
	runs := 0
	for _, run := range strings.Split(string(b), startMarker)[1:] {
		runs++
		end := time.Now()
		if i := strings.Index(run, exitMarker); i >= 0 {
			ts, _, _ := strings.Cut(run[i+len(exitMarker):], " ")
			t, err := time.Parse(time.RFC3339Nano, ts)
			if err != nil {
				return nil, 0, fmt.Errorf("%s: exit marker %q: %w", s.log.Name(), ts, err)
			}
			end, run = t, run[:i]
		}
		ivs = append(ivs, ownerlog.Parse(node, run, end)...)
	}
	return ivs, runs, nil
}

// keyWatch polls the POP's owner keys in etcd against what each host says
// it owns (GET /admin/cluster): a key under a host's current lease that the
// host does not list, owned or moving, for stuckAfter is a stuck shard —
// no host serves it, and none can claim it while that lease lives.
type keyWatch struct {
	cli    *clientv3.Client
	prefix string
	srvs   []*server
	nodes  []string
	stop   func()

	mu       sync.Mutex
	since    map[string]time.Time // owner key → first seen orphaned
	reported map[string]bool
	stuck    []string // what stayed orphaned for stuckAfter (first few)
	polls    int
}

const stuckAfter = 5 * time.Second

func startKeyWatch(ctx context.Context, endpoint, prefix string, f *fleet) (*keyWatch, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, err
	}
	w := &keyWatch{cli: cli, prefix: prefix, srvs: f.srvs, nodes: f.nodes, since: map[string]time.Time{}, reported: map[string]bool{}}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	w.stop = sync.OnceFunc(func() { cancel(); <-done; cli.Close() })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			w.poll(ctx)
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	return w, nil
}

func (w *keyWatch) poll(ctx context.Context) {
	type hostView struct {
		lease int64
		held  map[string]bool
	}
	views := map[string]*hostView{}
	for i, s := range w.srvs {
		var st struct {
			Lease int64 `json:"lease"`
			Owned []struct {
				Shard string `json:"shard"`
			} `json:"owned"`
			Moving []struct {
				Shard string `json:"shard"`
			} `json:"moving"`
		}
		if !s.running() || adminDo(ctx, s, http.MethodGet, "/admin/cluster", &st) != nil {
			continue // down, frozen or busy: no verdict on its keys
		}
		v := &hostView{lease: st.Lease, held: map[string]bool{}}
		for _, c := range append(st.Owned, st.Moving...) {
			v.held[c.Shard] = true
		}
		views[w.nodes[i]] = v
	}
	resp, err := w.cli.Get(ctx, w.prefix+"/owners/", clientv3.WithPrefix())
	if err != nil {
		return
	}
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.polls++
	seen := map[string]bool{}
	for _, kv := range resp.Kvs {
		k, node := string(kv.Key), string(kv.Value)
		v := views[node]
		b, sh, _ := strings.Cut(strings.TrimPrefix(k, w.prefix+"/owners/"), "/")
		b, _ = url.PathUnescape(b)
		sh, _ = url.PathUnescape(sh)
		shard := b + "/" + sh
		if v == nil || v.lease != kv.Lease || v.held[shard] {
			continue
		}
		seen[k] = true
		t0, ok := w.since[k]
		if !ok {
			w.since[k] = now
			continue
		}
		if now.Sub(t0) >= stuckAfter && !w.reported[k] {
			w.reported[k] = true
			if len(w.stuck) < 10 {
				w.stuck = append(w.stuck, fmt.Sprintf("%s: its owner key (epoch %d) is held under %s's current lease since %s, but %s does not own it: no host serves it",
					shard, kv.CreateRevision, node, t0.Format("15:04:05.000"), node))
			}
		}
	}
	for k := range w.since {
		if !seen[k] {
			delete(w.since, k)
		}
	}
}

// result stops the watch and returns what it found stuck.
func (w *keyWatch) result() (polls int, stuck []string) {
	w.stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.polls, w.stuck
}
