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
	t0 := time.Now()
	res := ModeResult{Mode: "fleet"}
	out := o.Out
	pg, err := pgtest.Start()
	if errors.Is(err, pgtest.ErrNotInstalled) {
		return res, fmt.Errorf("the fleet mode needs PostgreSQL: %w (%s)", err, pgtest.Install)
	}
	if err != nil {
		return res, fmt.Errorf("throwaway PostgreSQL: %w", err)
	}
	defer func() {
		if b, err := os.ReadFile(pg.Log()); err == nil {
			os.WriteFile(filepath.Join(dir, "postgres.log"), b, 0o644)
		}
		pg.Close()
	}()
	dbURL, err := pg.CreateDB(ctx, "crashtest")
	if err != nil {
		return res, err
	}
	fmt.Fprintf(out, "== mode fleet: %d hosts (%s) on one PostgreSQL (port %d), %d cycles, %d clients, %d shards per binding, seed %d, dir %s\n",
		len(fleetNodes), strings.Join(fleetNodes, ", "), pg.Port, o.Cycles, o.Clients, o.Shards, seed, dir)

	token := randomToken()
	var srvs []*server
	var aeURLs []string
	defer func() {
		for _, s := range srvs {
			s.close()
		}
	}()
	for _, node := range fleetNodes {
		hdir := filepath.Join(dir, node)
		data := filepath.Join(hdir, "data")
		if err := os.MkdirAll(data, 0o755); err != nil {
			return res, err
		}
		s, err := newServer(o.Bin, hdir, nil, func(addr, admin string) string {
			return configText(o, hostConfig{dataDir: data, addr: addr, admin: admin, node: node, dbURL: dbURL, maxConns: 8})
		}, token)
		if err != nil {
			return res, err
		}
		srvs = append(srvs, s)
		aeURLs = append(aeURLs, "sqlite://"+filepath.Join(data, "analytics.db"))
	}
	for i, s := range srvs {
		if err := s.start(ctx); err != nil {
			return res, fmt.Errorf("start %s: %w", fleetNodes[i], err)
		}
		if err := checkModes(s, "primary"); err != nil {
			res.Failed = append(res.Failed, fleetNodes[i]+": "+err.Error())
		}
		if err := checkNode(s, fleetNodes[i]); err != nil {
			res.Failed = append(res.Failed, err.Error())
		}
	}

	led := newLedger()
	if err := seedBaseline(ctx, srvs, led, o.Posts); err != nil {
		return res, err
	}
	hosts := make([]loadHost, len(srvs))
	for i, s := range srvs {
		hosts[i] = loadHost{base: s.url(), gate: newGate()}
		hosts[i].gate.open()
	}
	ld := startLoadOn(loadConfig{clients: o.Clients, interval: o.Interval, posts: o.Posts, seed: seed, follows: true}, led, hosts)
	rng := mrand.New(mrand.NewPCG(seed, 7))

	// reconcileCounters on a random host every 0.5-2 s, while hosts die.
	// A run in progress when the load stops is let finish.
	var rs reconcileStats
	stopping := make(chan struct{})
	stopReconcile := sync.OnceFunc(func() { close(stopping) })
	var rwg sync.WaitGroup
	rwg.Add(1)
	go func() {
		defer rwg.Done()
		rr := mrand.New(mrand.NewPCG(seed, 11))
		for {
			select {
			case <-stopping:
				return
			case <-ctx.Done():
				return
			case <-time.After(500*time.Millisecond + time.Duration(rr.Int64N(int64(1500*time.Millisecond)))):
			}
			i := rr.IntN(len(srvs))
			if !hosts[i].gate.isOpen() {
				continue
			}
			reconcileOnce(ctx, srvs[i], &rs)
		}
	}()

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
			names = append(names, fleetNodes[v])
		}
		sent := ld.sent.Load() - sentBefore
		var took []string
		for _, v := range victims {
			r0 := time.Now()
			if err := srvs[v].start(ctx); err != nil {
				ld.finish()
				stopReconcile()
				rwg.Wait()
				return res, fmt.Errorf("restart %s after kill %d: %w", fleetNodes[v], c+1, err)
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
	time.Sleep(time.Second) // a little steady load on every host
	ld.finish()
	stopReconcile()
	rwg.Wait()
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	if ld.writes.Load() == 0 {
		res.Failed = append(res.Failed, "no write was acknowledged: the load never ran")
	}

	// Drain every POP, as before retiring it, then stop them all.
	d0 := time.Now()
	for i, s := range srvs {
		if err := drainHost(ctx, s); err != nil {
			res.Failed = append(res.Failed, fleetNodes[i]+": "+err.Error())
		}
	}
	drained := time.Since(d0)
	for i, s := range srvs {
		if err := s.term(60 * time.Second); err != nil {
			res.Failed = append(res.Failed, fleetNodes[i]+": clean shutdown: "+err.Error())
		}
	}
	snap, err := readSnapshotAt(ctx, dbURL, aeURLs...)
	if err != nil {
		return res, err
	}
	res.Streams = compare(led, snap)
	res.reportRequests(out, led)
	var flushes []string
	for i, s := range srvs {
		flushes = append(flushes, fmt.Sprintf("%s events %d/%d counters %d/%d (%d replays)", fleetNodes[i],
			s.count(codeEventsFlushed), s.count(codeEventsFailed), s.count(codeCountersFlushed), s.count(codeCountersFailed), s.count("counter flush replays")))
	}
	fmt.Fprintf(out, "  flushes logged (ok/failed): %s; drained in %.1fs\n", strings.Join(flushes, "; "), drained.Seconds())
	fmt.Fprintf(out, "  reconcileCounters during the load: %d runs (%d corrections), %d skipped (another host held the lock), %d on a host going down, %d failed\n",
		rs.ok.Load(), rs.corrected.Load(), rs.busy.Load(), rs.down.Load(), rs.failed.Load())
	if n := rs.failed.Load(); n > 0 {
		res.Failed = append(res.Failed, fmt.Sprintf("%d reconcile runs failed", n))
	}

	after, err := fleetAfterRestart(ctx, srvs, out, dbURL, aeURLs, snap)
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
	for i, s := range srvs {
		if n, msgs := s.errorLines(); n > 0 {
			fmt.Fprintf(out, "  info: %s: %d error-level log lines, e.g. %q\n", fleetNodes[i], n, msgs)
		}
	}
	verdict := res.finish(out, t0)
	avg := time.Duration(0)
	if restarts > 0 {
		avg = restartTotal / time.Duration(restarts)
	}
	fmt.Fprintf(out, "== mode fleet %s: %d kills over %d hosts, average restart %.2fs, took %.1fs\n", verdict, res.Kills, len(srvs), avg.Seconds(), res.Took.Seconds())
	return res, nil
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
