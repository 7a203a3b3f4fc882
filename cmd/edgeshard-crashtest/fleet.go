package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeshard/edgeshard/internal/pgtest"
)

// The fleet mode: three hosts with distinct node ids (three POPs, each
// its own data directory) write one throwaway PostgreSQL that the crash
// test starts itself. The clients spread likes, unlikes, follows,
// unfollows, views, runs and runtime events over every host that is up;
// reconcileCounters runs now and then on a random host (one at a time:
// the others answer 409); hosts are killed with SIGKILL at random — one at
// a time, or two at once every fifth cycle — and restarted on their data.
// At the end every host is drained (POST /admin/jobs/drain), stopped, and
// PostgreSQL is compared with the clients' ledger, stream by stream.

// fleetNodes are the fleet mode's node ids.
var fleetNodes = []string{"pop-a", "pop-b", "pop-c"}

// reconcileStats counts the reconcile runs the fleet mode asked for.
type reconcileStats struct {
	ok, busy, down, failed atomic.Int64
	corrected              atomic.Int64
}

func runFleet(ctx context.Context, o Options, dir string, seed uint64) (ModeResult, error) {
	res := ModeResult{Mode: "fleet"}
	f, err := startFleet(ctx, o, "fleet", dir, fleetNodes, &res, nil, nil)
	if f != nil {
		defer f.close()
	}
	if err != nil {
		return res, err
	}
	out := o.Out
	fmt.Fprintf(out, "== mode fleet: %d hosts (%s) on one PostgreSQL (port %d), %d cycles, %d clients, %d shards per binding, seed %d, dir %s\n",
		len(f.nodes), strings.Join(f.nodes, ", "), f.pg.Port, o.Cycles, o.Clients, o.Shards, seed, dir)
	srvs, hosts := f.srvs, f.hosts

	led := newLedger()
	if err := seedBaseline(ctx, srvs, led, o.Posts); err != nil {
		return res, err
	}
	ld := startLoadOn(loadConfig{clients: o.Clients, interval: o.Interval, posts: o.Posts, seed: seed, follows: true}, led, hosts)
	rng := mrand.New(mrand.NewPCG(seed, 7))
	rec := f.startReconciler(ctx, seed)

	plans := killPlans(o.CycleMax, "primary")
	lastRestarted := 0
	var restartTotal time.Duration
	restarts := 0
	for c := 0; c < o.Cycles; c++ {
		p := plans[c%len(plans)]
		victims := []int{rng.IntN(len(srvs))}
		if p.name == "after-boot" {
			victims[0] = lastRestarted
		}
		if c%5 == 4 { // two POPs down at once
			victims = append(victims, (victims[0]+1+rng.IntN(len(srvs)-1))%len(srvs))
		}
		sentBefore := ld.sent.Load()
		what := p.wait(ctx, srvs[victims[0]], rng)
		if ctx.Err() != nil {
			break
		}
		var names []string
		for _, v := range victims {
			hosts[v].gate.close()
			srvs[v].kill()
			res.Kills++
			names = append(names, f.nodes[v])
		}
		sent := ld.sent.Load() - sentBefore
		var took []string
		for _, v := range victims {
			r0 := time.Now()
			if err := srvs[v].start(ctx); err != nil {
				ld.finish()
				rec.stop()
				return res, fmt.Errorf("restart %s after kill %d: %w", f.nodes[v], c+1, err)
			}
			d := time.Since(r0)
			restartTotal += d
			restarts++
			took = append(took, fmt.Sprintf("%.2fs", d.Seconds()))
			hosts[v].gate.open()
			lastRestarted = v
		}
		fmt.Fprintf(out, "  cycle %d/%d: kill -9 %s (%s) %s; %d requests this cycle; restarted, ready in %s\n",
			c+1, o.Cycles, strings.Join(names, "+"), p.name, what, sent, strings.Join(took, ", "))
	}
	if err := f.finish(ctx, &res, led, ld, rec, nil); err != nil {
		return res, err
	}
	verdict := res.finish(out, f.t0)
	avg := time.Duration(0)
	if restarts > 0 {
		avg = restartTotal / time.Duration(restarts)
	}
	fmt.Fprintf(out, "== mode fleet %s: %d kills over %d hosts, average restart %.2fs, took %.1fs\n", verdict, res.Kills, len(srvs), avg.Seconds(), res.Took.Seconds())
	return res, nil
}

// fleet is the hosts of a mode with several (fleet, cluster), each with
// its own data directory and node id, on one throwaway PostgreSQL the
// crash test starts itself.
type fleet struct {
	o      Options
	t0     time.Time
	dir    string
	nodes  []string
	srvs   []*server
	hosts  []loadHost // the clients' view of srvs, gates open
	pg     *pgtest.Server
	dbURL  string
	aeURLs []string // each host's analytics dataset
}

// startFleet starts PostgreSQL and a host per node, each on configText
// with vars added to its [vars], plus the tables extra adds for it (nil:
// none), and checks that each runs
// the pipelines in primary mode under its node id (failures go to res).
// The fleet it returns (also on an error) must be closed.
func startFleet(ctx context.Context, o Options, mode, dir string, nodes []string, res *ModeResult, vars []string, extra func(node, addr string) string) (*fleet, error) {
	f := &fleet{o: o, t0: time.Now(), dir: dir, nodes: nodes}
	pg, err := pgtest.Start()
	if errors.Is(err, pgtest.ErrNotInstalled) {
		return nil, fmt.Errorf("the %s mode needs PostgreSQL: %w (%s)", mode, err, pgtest.Install)
	}
	if err != nil {
		return nil, fmt.Errorf("throwaway PostgreSQL: %w", err)
	}
	f.pg = pg
	if f.dbURL, err = pg.CreateDB(ctx, "crashtest"); err != nil {
		return f, err
	}
	token := randomToken()
	for _, node := range nodes {
		hdir := filepath.Join(dir, node)
		data := filepath.Join(hdir, "data")
		if err := os.MkdirAll(data, 0o755); err != nil {
			return f, err
		}
		s, err := newServer(o.Bin, hdir, nil, func(addr, admin string) string {
			cfg := configText(o, hostConfig{dataDir: data, addr: addr, admin: admin, node: node, dbURL: f.dbURL, maxConns: 8, vars: vars})
			if extra != nil {
				cfg += extra(node, addr)
			}
			return cfg
		}, token)
		if err != nil {
			return f, err
		}
		f.srvs = append(f.srvs, s)
		f.aeURLs = append(f.aeURLs, "sqlite://"+filepath.Join(data, "analytics.db"))
	}
	for i, s := range f.srvs {
		if err := s.start(ctx); err != nil {
			return f, fmt.Errorf("start %s: %w", nodes[i], err)
		}
		if err := checkModes(s, "primary"); err != nil {
			res.Failed = append(res.Failed, nodes[i]+": "+err.Error())
		}
		if err := checkNode(s, nodes[i]); err != nil {
			res.Failed = append(res.Failed, err.Error())
		}
		f.hosts = append(f.hosts, loadHost{base: s.url(), gate: newGate()})
		f.hosts[i].gate.open()
	}
	return f, nil
}

// close kills the hosts still running and stops PostgreSQL, keeping its
// log in the mode's directory.
func (f *fleet) close() {
	for _, s := range f.srvs {
		s.close()
	}
	if b, err := os.ReadFile(f.pg.Log()); err == nil {
		os.WriteFile(filepath.Join(f.dir, "postgres.log"), b, 0o644)
	}
	f.pg.Close()
}

// reconciler runs reconcileCounters on a random host every 0.5-2 s while
// the hosts die (one at a time: the others answer 409).
type reconciler struct {
	stats reconcileStats
	stop  func() // stops it; a run in progress is let finish
}

func (f *fleet) startReconciler(ctx context.Context, seed uint64) *reconciler {
	r := &reconciler{}
	stopping := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	r.stop = sync.OnceFunc(func() { close(stopping); wg.Wait() })
	go func() {
		defer wg.Done()
		rr := mrand.New(mrand.NewPCG(seed, 11))
		for {
			select {
			case <-stopping:
				return
			case <-ctx.Done():
				return
			case <-time.After(500*time.Millisecond + time.Duration(rr.Int64N(int64(1500*time.Millisecond)))):
			}
			i := rr.IntN(len(f.srvs))
			if !f.hosts[i].gate.isOpen() {
				continue
			}
			reconcileOnce(ctx, f.srvs[i], &r.stats)
		}
	}()
	return r
}

// finish ends a multi-host mode's run: a little more steady load, then
// the clients and the reconciler stop; every host is drained (POST
// /admin/jobs/drain); settle (nil: none) runs while they are still up and
// may add streams of its own; the hosts stop, and PostgreSQL is compared
// with the ledger. Then every host starts again on its drained data
// (fleetAfterRestart): nothing may move, and after a reconcile every
// counter with source rows equals them. err: the checks could not run.
func (f *fleet) finish(ctx context.Context, res *ModeResult, led *ledger, ld *load, rec *reconciler, settle func() ([]stream, error)) error {
	out := f.o.Out
	time.Sleep(time.Second) // a little steady load on every host
	ld.finish()
	rec.stop()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if ld.writes.Load() == 0 {
		res.Failed = append(res.Failed, "no write was acknowledged: the load never ran")
	}
	d0 := time.Now()
	for i, s := range f.srvs {
		if err := drainHost(ctx, s); err != nil {
			res.Failed = append(res.Failed, f.nodes[i]+": "+err.Error())
		}
	}
	var more []stream
	if settle != nil {
		var err error
		if more, err = settle(); err != nil {
			res.Failed = append(res.Failed, err.Error())
		}
	}
	drained := time.Since(d0)
	for i, s := range f.srvs {
		if err := s.term(60 * time.Second); err != nil {
			res.Failed = append(res.Failed, f.nodes[i]+": clean shutdown: "+err.Error())
		}
	}
	snap, err := readSnapshotAt(ctx, f.dbURL, f.aeURLs...)
	if err != nil {
		return err
	}
	res.Streams = append(compare(led, snap), more...)
	res.reportRequests(out, led)
	var flushes []string
	for i, s := range f.srvs {
		flushes = append(flushes, fmt.Sprintf("%s events %d/%d counters %d/%d (%d replays)", f.nodes[i],
			s.count(codeEventsFlushed), s.count(codeEventsFailed), s.count(codeCountersFlushed), s.count(codeCountersFailed), s.count("counter flush replays")))
	}
	fmt.Fprintf(out, "  flushes logged (ok/failed): %s; drained in %.1fs\n", strings.Join(flushes, "; "), drained.Seconds())
	rs := &rec.stats
	fmt.Fprintf(out, "  reconcileCounters during the load: %d runs (%d corrections), %d skipped (another host held the lock), %d on a host going down, %d failed\n",
		rs.ok.Load(), rs.corrected.Load(), rs.busy.Load(), rs.down.Load(), rs.failed.Load())
	if n := rs.failed.Load(); n > 0 {
		res.Failed = append(res.Failed, fmt.Sprintf("%d reconcile runs failed", n))
	}

	after, err := fleetAfterRestart(ctx, f.srvs, out, f.dbURL, f.aeURLs, snap)
	if err != nil {
		res.Failed = append(res.Failed, err.Error())
	}
	if after != nil {
		// A fan's following counter (0 or 1 here) is checked once
		// reconcileCounters ran: a counter at 0 changed through two POPs
		// within a flush interval (follow at one, unfollow at another) can
		// reach SQL in the other order, and the clamp at 0 then drops the
		// -1 until a reconcile sets it from its source rows
		// (docs/OPERATIONS.md, "Running many POPs"). Posts and followees
		// start with a baseline of likes and followers (seedBaseline), so
		// their counters stay clear of 0 and are checked before, with the
		// source rows and every other stream.
		fmt.Fprintln(out, "  "+counterDrift(snap))
		for i, st := range res.Streams {
			if st.Name == "following" {
				res.Streams[i] = compareLikes("following_after_reconcile", led.following, after.following)
			}
		}
	}
	res.reportStreams(out, led, snap)
	for i, s := range f.srvs {
		if n, msgs := s.errorLines(); n > 0 {
			fmt.Fprintf(out, "  info: %s: %d error-level log lines, e.g. %q\n", f.nodes[i], n, msgs)
		}
	}
	return nil
}

// checkNode asserts the host logged the node id it was given.
func checkNode(s *server, node string) error {
	b, err := os.ReadFile(s.log.Name())
	if err != nil {
		return err
	}
	if !strings.Contains(string(b), `"node_id":"`+node+`"`) {
		return fmt.Errorf("%s: the host's log does not name its node id", node)
	}
	return nil
}

// reconcileOnce asks s to run reconcileCounters and counts the outcome: a
// run, a skip (409: another host holds the lock), or a host that went down
// meanwhile.
func reconcileOnce(ctx context.Context, s *server, rs *reconcileStats) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.adminURL()+"/admin/jobs/reconcile-counters", nil)
	if err != nil {
		return
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			rs.down.Add(1)
		}
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	switch resp.StatusCode {
	case http.StatusOK:
		rs.ok.Add(1)
		var r struct {
			Result struct {
				Corrected int64 `json:"corrected"`
			} `json:"result"`
		}
		if json.Unmarshal(b, &r) == nil {
			rs.corrected.Add(r.Result.Corrected)
		}
	case http.StatusConflict:
		rs.busy.Add(1)
	default:
		// A host killed mid-run answers nothing; one that answers an error
		// did fail.
		rs.failed.Add(1)
		fmt.Fprintf(os.Stderr, "reconcile on %s: %d %s\n", s.dir, resp.StatusCode, b)
	}
}

// drainHost drains every buffer shard of s through the admin API and
// fails unless it ends empty.
func drainHost(ctx context.Context, s *server) error {
	var rep struct {
		Result struct {
			Empty    bool `json:"empty"`
			Bindings []struct {
				Binding string `json:"binding"`
				Pending []struct {
					Shard    int    `json:"shard"`
					Buffered int    `json:"buffered"`
					Inflight int    `json:"inflight"`
					Error    string `json:"error"`
				} `json:"pending"`
			} `json:"bindings"`
		} `json:"result"`
	}
	if err := adminDo(ctx, s, http.MethodPost, "/admin/jobs/drain?wait=60s", &rep); err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	if !rep.Result.Empty {
		var left []string
		for _, b := range rep.Result.Bindings {
			for _, p := range b.Pending {
				left = append(left, fmt.Sprintf("%s/%d holds %d+%d %s", b.Binding, p.Shard, p.Buffered, p.Inflight, p.Error))
			}
		}
		return fmt.Errorf("drain left shards non-empty: %s", strings.Join(left, "; "))
	}
	return nil
}

// fleetAfterRestart starts every host again on its drained data: no alarm
// may be pending; reconcileCounters on one host; then views, runs and
// events must not have moved, and every likes, followers and following
// counter must equal its source rows.
func fleetAfterRestart(ctx context.Context, srvs []*server, out io.Writer, dbURL string, aeURLs []string, before *snapshot) (*snapshot, error) {
	for _, s := range srvs {
		if err := s.start(ctx); err != nil {
			return nil, fmt.Errorf("restart after the checks: %w", err)
		}
	}
	for _, s := range srvs {
		if err := waitNoAlarms(ctx, s, 15*time.Second); err != nil {
			return nil, err
		}
	}
	var rep struct {
		Result struct {
			Node      string `json:"node"`
			Corrected int    `json:"corrected"`
		} `json:"result"`
	}
	if err := adminDo(ctx, srvs[0], http.MethodPost, "/admin/jobs/reconcile-counters", &rep); err != nil {
		return nil, fmt.Errorf("reconcile: %w", err)
	}
	for _, s := range srvs {
		if err := s.term(60 * time.Second); err != nil {
			return nil, fmt.Errorf("clean shutdown after reconcile: %w", err)
		}
	}
	after, err := readSnapshotAt(ctx, dbURL, aeURLs...)
	if err != nil {
		return nil, err
	}
	if bad := restartDrift(before, after, "likes", "followers", "following"); len(bad) > 0 {
		return after, errors.New("after restart and reconcile: " + strings.Join(bad, "; "))
	}
	fmt.Fprintf(out, "  restart on the drained data: no alarm pending, views, runs and events unchanged; reconcileCounters on %s corrected %d counter(s) (deltas of unanswered requests, or a -1 clamped away for arriving before its +1), every likes, followers and following counter equals its source rows\n",
		rep.Result.Node, rep.Result.Corrected)
	return after, nil
}

// baselineN is how many likes each post and followers each followee get
// before the load starts.
const baselineN = 10

// seedBaseline gives every post and every followee baselineN likes and
// followers (by users of their own, through the first host), waits until
// they are flushed, and records them in the ledger.
func seedBaseline(ctx context.Context, srvs []*server, led *ledger, posts int) error {
	c := newClient(8)
	defer c.CloseIdleConnections()
	put := func(path, user string) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, srvs[0].url()+path, nil)
		if err != nil {
			return err
		}
		req.Header.Set("X-User-Id", user)
		resp, err := c.Do(req)
		if err != nil {
			return fmt.Errorf("baseline PUT %s: %w", path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("baseline PUT %s: %s", path, resp.Status)
		}
		return nil
	}
	for i := 0; i < baselineN; i++ {
		for p := 0; p < posts; p++ {
			post, user := fmt.Sprintf("ct-post-%02d", p), fmt.Sprintf("ct-base-%d", i)
			if err := put("/posts/"+post+"/like", user); err != nil {
				return err
			}
			led.like(post, true, acked)
		}
		for f := 0; f < followees; f++ {
			followee, fan := fmt.Sprintf("ct-user-%02d", f), fmt.Sprintf("ct-fan-base-%d", i)
			if err := put("/users/"+followee+"/follow", fan); err != nil {
				return err
			}
			led.follow(fan, followee, true, acked)
		}
	}
	return drainHost(ctx, srvs[0])
}

// counterDrift says how far the counters with source rows were from their
// source rows before the final reconcile.
func counterDrift(s *snapshot) string {
	n, units := 0, int64(0)
	for _, c := range []struct{ counter, src map[string]int64 }{
		{s.likes, s.likeRows}, {s.followers, s.followRows}, {s.following, s.followingRows},
	} {
		ids := map[string]bool{}
		for id := range c.counter {
			ids[id] = true
		}
		for id := range c.src {
			ids[id] = true
		}
		for id := range ids {
			if d := c.counter[id] - c.src[id]; d != 0 {
				n++
				units += max(d, -d)
			}
		}
	}
	return fmt.Sprintf("info: before the final reconcile, %d counter(s) with source rows differed from them by %d in all (deltas lost with unanswered requests, or a -1 clamped at 0 for reaching SQL before its +1 from another POP)", n, units)
}
