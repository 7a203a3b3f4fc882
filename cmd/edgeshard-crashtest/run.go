package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/edgeshard/edgeshard/internal/configtext"
)

// Options configure a crash test run.
type Options struct {
	Bin           string // the edgeshard binary
	EventsModule  string // runtimeevents.wasm
	CounterModule string // counters.wasm
	PageModule    string // the tutorial's page views (the cluster mode's per-name counters)
	CacheDir      string // wazero compilation cache shared with the tests
	WorkDir       string // where each mode's data lives ("" = a temp dir)
	Keep          bool   // keep WorkDir even when every check passes

	Modes    []string      // primary, counter-shadow, event-shadow, fleet, cluster
	Cycles   int           // kill -9 + restart cycles per mode
	CycleMax time.Duration // longest stretch of load before a random kill
	Clients  int           // concurrent clients
	Interval time.Duration // pause between two requests of one client
	Shards   int           // shards per binding
	Posts    int           // distinct posts the clients write to
	Seed     uint64
	Out      io.Writer
}

// modes maps a mode name to the environment of the host. The config's
// [vars] say primary for both pipelines: the environment wins.
var modes = map[string][]string{
	"primary":        nil,
	"counter-shadow": {"COUNTER_DO_MODE=shadow"},
	"event-shadow":   {"RUNTIME_EVENT_DO_MODE=shadow"},
}

// ModeResult is the outcome of one mode.
type ModeResult struct {
	Mode    string
	Streams []stream
	Kills   int
	Freezes int      // SIGSTOP past the lease, then SIGCONT (the cluster mode)
	Drains  int      // SIGTERM or cluster leave, then a restart (the cluster mode)
	Failed  []string // failures other than stream mismatches
	Took    time.Duration
}

// OK reports whether every check of the mode passed.
func (m ModeResult) OK() bool {
	if len(m.Failed) > 0 {
		return false
	}
	for _, s := range m.Streams {
		if !s.ok() {
			return false
		}
	}
	return true
}

// Run runs the crash test in every mode and reports each; err is set when
// the test could not run (not when a check failed).
func Run(ctx context.Context, o Options) ([]ModeResult, error) {
	if o.Out == nil {
		o.Out = io.Discard
	}
	work := o.WorkDir
	if work == "" {
		var err error
		if work, err = os.MkdirTemp("", "edgeshard-crashtest-"); err != nil {
			return nil, err
		}
	}
	var results []ModeResult
	allOK := true
	for i, mode := range o.Modes {
		env, ok := modes[mode]
		if !ok && mode != "fleet" && mode != "cluster" {
			return results, fmt.Errorf("unknown mode %q (want primary, counter-shadow, event-shadow, fleet or cluster)", mode)
		}
		dir := filepath.Join(work, mode)
		if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
			return results, err
		}
		var r ModeResult
		var err error
		switch mode {
		case "fleet":
			r, err = runFleet(ctx, o, dir, o.Seed+uint64(i)*1000003)
		case "cluster":
			r, err = runCluster(ctx, o, dir, o.Seed+uint64(i)*1000003)
		default:
			r, err = runMode(ctx, o, mode, env, dir, o.Seed+uint64(i)*1000003)
		}
		if err != nil {
			return results, fmt.Errorf("mode %s: %w (data and log in %s)", mode, err, dir)
		}
		results = append(results, r)
		allOK = allOK && r.OK()
	}
	if allOK && !o.Keep && o.WorkDir == "" {
		os.RemoveAll(work)
	} else {
		fmt.Fprintf(o.Out, "data and logs kept in %s\n", work)
	}
	return results, nil
}

type killPlan struct {
	name string
	// wait returns when the host should be killed, and says what it saw.
	wait func(ctx context.Context, s *server, rng *mrand.Rand) string
}

// killPlans returns the kill points, used in turn. In counter-shadow mode
// the counter shards persist nothing and never flush, so the plan that
// waits for a counter flush waits for an event flush instead.
func killPlans(cycleMax time.Duration, mode string) []killPlan {
	counters := midFlush("counters", codeCountersFlushed, cycleMax)
	if mode == "counter-shadow" {
		counters = midFlush("events", codeEventsFlushed, cycleMax)
	}
	uniform := func(rng *mrand.Rand, lo, hi time.Duration) time.Duration {
		if hi <= lo {
			return lo
		}
		return lo + time.Duration(rng.Int64N(int64(hi-lo)))
	}
	sleep := func(ctx context.Context, d time.Duration) {
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
	}
	return []killPlan{
		counters,
		{"random", func(ctx context.Context, s *server, rng *mrand.Rand) string {
			d := uniform(rng, 300*time.Millisecond, cycleMax)
			sleep(ctx, d)
			return fmt.Sprintf("at a random point, %.1fs after ready", d.Seconds())
		}},
		midFlush("events", codeEventsFlushed, cycleMax),
		{"after-boot", func(ctx context.Context, s *server, rng *mrand.Rand) string {
			// Alarms overdue at boot flush at once: kill among them.
			d := uniform(rng, 20*time.Millisecond, 700*time.Millisecond)
			sleep(ctx, d)
			return fmt.Sprintf("%dms after ready (boot-time flushes of overdue alarms)", d.Milliseconds())
		}},
		{"alarm-period", func(ctx context.Context, s *server, rng *mrand.Rand) string {
			// The first writes after boot set 5 s flush alarms: kill as
			// they fire (counters freeze, then send on the next alarm).
			d := uniform(rng, 5*time.Second, 5800*time.Millisecond)
			sleep(ctx, d)
			return fmt.Sprintf("%.2fs after ready (first alarm period)", d.Seconds())
		}},
	}
}

// midFlush kills right after a shard logs a flush of the given kind: its
// SQL transaction has committed, its own storage cleanup (deleting what it
// sent, recording the sequence) has most likely not.
func midFlush(what, code string, cycleMax time.Duration) killPlan {
	return killPlan{"mid-flush-" + what, func(ctx context.Context, s *server, rng *mrand.Rand) string {
		s.drainFlushSignal()
		if s.waitFlush(ctx, code, cycleMax+8*time.Second) {
			return "right after a " + what + " flush log line (" + code + ")"
		}
		return "no " + what + " flush seen; killed at the deadline"
	}}
}

// hostConfig is what one host's config varies in between the modes.
type hostConfig struct {
	dataDir, addr, admin string
	node                 string   // node_id (the fleet mode's POPs); "" for none
	dbURL                string   // the shared D1 database; "" for a SQLite file in dataDir
	maxConns             int      // the D1 pool's max_conns; 0 for the default
	vars                 []string // more [vars], as name, value pairs
}

// configText is a host's config: the events and counters bindings in
// primary mode on one D1 database, their analytics file in the data
// directory, the user header trusted, no reconcile ticker.
func configText(o Options, c hostConfig) string {
	top, db := "", c.dbURL
	if c.node != "" {
		top = fmt.Sprintf("node_id = %q\n", c.node)
	}
	if db == "" {
		db = "sqlite://" + filepath.Join(c.dataDir, "d1.db")
	}
	var pool []string
	if c.maxConns > 0 {
		pool = append(pool, fmt.Sprintf("max_conns = %d", c.maxConns))
	}
	return fmt.Sprintf(`# written by edgeshard-crashtest
listen = %q
admin_listen = %q
data_dir = %q
%scache_dir = %q
log_level = "info"
event_timeout = "5s"
shutdown_grace = "30s"
`, c.addr, c.admin, c.dataDir, top, o.CacheDir) +
		configtext.Pipelines(o.EventsModule, o.CounterModule, o.Shards, "sqlite://"+filepath.Join(c.dataDir, "analytics.db")) +
		configtext.D1("DB", db, pool...) +
		configtext.Vars(append([]string{"RUNTIME_EVENT_DO_MODE", "primary", "COUNTER_DO_MODE", "primary"}, c.vars...)...) + `
[auth]
trust_user_header = "X-User-Id"

[reconcile]
interval = "0s"
`
}

func randomToken() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func runMode(ctx context.Context, o Options, mode string, env []string, dir string, seed uint64) (ModeResult, error) {
	t0 := time.Now()
	res := ModeResult{Mode: mode}
	out := o.Out
	dataDir := filepath.Join(dir, "data")
	srv, err := newServer(o.Bin, dir, env, func(addr, admin string) string {
		return configText(o, hostConfig{dataDir: dataDir, addr: addr, admin: admin})
	}, randomToken())
	if err != nil {
		return res, err
	}
	defer srv.close()
	fmt.Fprintf(out, "== mode %s (%s): %d cycles, %d clients, %d shards per binding, seed %d, dir %s\n",
		mode, describeEnv(env), o.Cycles, o.Clients, o.Shards, seed, dir)
	if err := srv.start(ctx); err != nil {
		return res, err
	}
	if err := checkModes(srv, mode); err != nil {
		res.Failed = append(res.Failed, err.Error())
	}
	led := newLedger()
	g := newGate()
	g.open()
	ld := startLoad(loadConfig{base: srv.url(), clients: o.Clients, interval: o.Interval, posts: o.Posts, seed: seed}, led, g)
	rng := mrand.New(mrand.NewPCG(seed, 7))
	plans := killPlans(o.CycleMax, mode)
	var restartTotal time.Duration
	for c := 0; c < o.Cycles; c++ {
		p := plans[c%len(plans)]
		sentBefore := ld.sent.Load()
		what := p.wait(ctx, srv, rng)
		if ctx.Err() != nil {
			ld.finish()
			return res, ctx.Err()
		}
		g.close()
		srv.kill()
		res.Kills++
		sent := ld.sent.Load() - sentBefore
		r0 := time.Now()
		if err := srv.start(ctx); err != nil {
			ld.finish()
			return res, fmt.Errorf("restart after kill %d: %w", c+1, err)
		}
		took := time.Since(r0)
		restartTotal += took
		g.open()
		fmt.Fprintf(out, "  cycle %d/%d: kill -9 (%s) %s; %d requests this cycle; restarted, ready in %.2fs\n",
			c+1, o.Cycles, p.name, what, sent, took.Seconds())
	}
	// A little steady load on the last incarnation, then stop the clients
	// (requests in flight finish).
	time.Sleep(time.Second)
	ld.finish()
	if ld.writes.Load() == 0 {
		res.Failed = append(res.Failed, "no write was acknowledged: the load never ran")
	}

	d0 := time.Now()
	if err := waitDrained(ctx, srv, o.Shards, 90*time.Second); err != nil {
		res.Failed = append(res.Failed, err.Error())
	}
	drained := time.Since(d0)
	if err := srv.term(60 * time.Second); err != nil {
		res.Failed = append(res.Failed, "clean shutdown: "+err.Error())
	}
	snap, err := readSnapshot(ctx, dataDir)
	if err != nil {
		return res, err
	}
	res.Streams = compare(led, snap)
	res.reportRequests(out, led)
	fmt.Fprintf(out, "  flushes logged: events %d ok / %d failed, counters %d ok / %d failed (%d replays recognised); %d boots restored persisted alarms; drained %.1fs after the load stopped\n",
		srv.count(codeEventsFlushed), srv.count(codeEventsFailed), srv.count(codeCountersFlushed), srv.count(codeCountersFailed),
		srv.count("counter flush replays"), srv.count("boots with persisted alarms"), drained.Seconds())

	// Restart once more: nothing flushes again, and reconcile makes every
	// likes counter equal its source rows (repairing deltas lost with
	// requests that never got an answer).
	if err := afterRestart(ctx, srv, out, dataDir, snap); err != nil {
		res.Failed = append(res.Failed, err.Error())
	}

	res.reportStreams(out, led, snap)
	if n, msgs := srv.errorLines(); n > 0 {
		fmt.Fprintf(out, "  info: %d error-level log lines, e.g. %q\n", n, msgs)
	}
	verdict := res.finish(out, t0)
	avg := time.Duration(0)
	if res.Kills > 0 {
		avg = restartTotal / time.Duration(res.Kills)
	}
	fmt.Fprintf(out, "== mode %s %s: %d kills, average restart %.2fs, took %.1fs\n", mode, verdict, res.Kills, avg.Seconds(), res.Took.Seconds())
	return res, nil
}

// reportRequests prints the ledger's request outcomes; every unexpected
// answer fails the mode.
func (res *ModeResult) reportRequests(out io.Writer, led *ledger) {
	led.mu.Lock()
	fmt.Fprintf(out, "  requests: %d acknowledged, %d unknown (no answer or 5xx), %d never sent (host down), %d refused (4xx)\n",
		led.requests[acked], led.requests[unknown], led.requests[notSent], led.requests[rejected])
	rejectedSample := append([]string(nil), led.rejected...)
	led.mu.Unlock()
	for _, r := range rejectedSample {
		res.Failed = append(res.Failed, "unexpected answer: "+r)
	}
}

// reportStreams prints each stream's comparison with the store (ten
// details at most) and the analytics summary.
func (res *ModeResult) reportStreams(out io.Writer, led *ledger, snap *snapshot) {
	for _, s := range res.Streams {
		fmt.Fprintln(out, s.String())
		for i, d := range s.Detail {
			if i == 10 {
				fmt.Fprintf(out, "    ... %d more\n", len(s.Detail)-10)
				break
			}
			fmt.Fprintln(out, "    "+d)
		}
	}
	fmt.Fprintln(out, analyticsInfo(led, snap))
}

// finish prints the failures, records the mode's time and returns its
// verdict, "ok" or "FAILED".
func (res *ModeResult) finish(out io.Writer, t0 time.Time) string {
	for _, f := range res.Failed {
		fmt.Fprintln(out, "  FAIL: "+f)
	}
	res.Took = time.Since(t0)
	verdict := "ok"
	if !res.OK() {
		verdict = "FAILED"
	}
	return verdict
}

func describeEnv(env []string) string {
	if len(env) == 0 {
		return "default env"
	}
	return strings.Join(env, " ")
}

// checkModes asserts the host runs the pipelines in the modes the run is
// about (the environment wins over [vars]).
func checkModes(s *server, mode string) error {
	ev, ct := "primary", "primary"
	switch mode {
	case "counter-shadow":
		ct = "shadow"
	case "event-shadow":
		ev = "shadow"
	}
	want := fmt.Sprintf(`"runtime_event_mode":%q,"counter_mode":%q`, ev, ct)
	// The log reaches the file through a pipe and a scanner: give it a
	// moment.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		b, err := os.ReadFile(s.log.Name())
		if err != nil {
			return err
		}
		if strings.Contains(string(b), want) {
			return nil
		}
		if strings.Contains(string(b), `"edge API configured"`) || time.Now().After(deadline) {
			return fmt.Errorf("the host's log lacks %s: the modes did not take effect", want)
		}
	}
}

// adminDo sends an admin API request and decodes the JSON answer.
func adminDo(ctx context.Context, s *server, method, path string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, s.adminURL()+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	return json.Unmarshal(b, v)
}

// pendingKeys returns how many keys with one of the prefixes the shard
// holds (at most one page each).
func pendingKeys(ctx context.Context, s *server, binding string, shard int, prefixes ...string) (int, error) {
	n := 0
	for _, p := range prefixes {
		var l struct {
			Entries []json.RawMessage `json:"entries"`
		}
		path := "/admin/bindings/" + binding + "/shards/" + strconv.Itoa(shard) + "?limit=10&prefix=" + url.QueryEscape(p)
		if err := adminDo(ctx, s, http.MethodGet, path, &l); err != nil {
			return 0, err
		}
		n += len(l.Entries)
	}
	return n, nil
}

// waitDrained polls every shard (through the admin API's shard listing)
// until no runtime event and no counter delta is buffered or in flight.
func waitDrained(ctx context.Context, s *server, shards int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	left := ""
	for time.Now().Before(deadline) {
		left = ""
		for i := 0; i < shards && left == ""; i++ {
			n, err := pendingKeys(ctx, s, "RUNTIME_EVENT_SHARD", i, "ev:")
			if err != nil {
				return fmt.Errorf("drain: %w", err)
			}
			if n > 0 {
				left = fmt.Sprintf("RUNTIME_EVENT_SHARD/%d holds buffered events", i)
				break
			}
			n, err = pendingKeys(ctx, s, "COUNTER_SHARD", i, "d:", "inflight")
			if err != nil {
				return fmt.Errorf("drain: %w", err)
			}
			if n > 0 {
				left = fmt.Sprintf("COUNTER_SHARD/%d holds buffered or in-flight deltas", i)
			}
		}
		if left == "" {
			return nil
		}
		select {
		case <-time.After(250 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return fmt.Errorf("shards not drained after %v: %s", limit, left)
}

// waitNoAlarms waits until neither binding has an alarm scheduled.
func waitNoAlarms(ctx context.Context, s *server, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		var l struct {
			Bindings []struct {
				Name          string `json:"name"`
				AlarmsPending int    `json:"alarms_pending"`
			} `json:"bindings"`
		}
		if err := adminDo(ctx, s, http.MethodGet, "/admin/bindings", &l); err != nil {
			return err
		}
		pending := 0
		for _, b := range l.Bindings {
			pending += b.AlarmsPending
		}
		if pending == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d alarms still pending %v after a restart on drained shards", pending, limit)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// afterRestart restarts the host on the drained data, waits past one flush
// period, runs reconcileCounters, and checks that views, runs and events did
// not move and that every likes counter equals its source rows.
func afterRestart(ctx context.Context, s *server, out io.Writer, dataDir string, before *snapshot) error {
	if err := s.start(ctx); err != nil {
		return fmt.Errorf("restart after the checks: %w", err)
	}
	// Drained shards keep no alarm: after a boot restores the persisted
	// ones, none may be pending (else something would flush again).
	if err := waitNoAlarms(ctx, s, 15*time.Second); err != nil {
		return err
	}
	var rep struct {
		Result struct {
			Corrected int `json:"corrected"`
		} `json:"result"`
	}
	if err := adminDo(ctx, s, http.MethodPost, "/admin/jobs/reconcile-counters", &rep); err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	if err := s.term(60 * time.Second); err != nil {
		return fmt.Errorf("clean shutdown after reconcile: %w", err)
	}
	after, err := readSnapshot(ctx, dataDir)
	if err != nil {
		return err
	}
	if bad := restartDrift(before, after, "likes"); len(bad) > 0 {
		return errors.New("after restart and reconcile: " + strings.Join(bad, "; "))
	}
	fmt.Fprintf(out, "  restart on the drained data: views, runs and events unchanged; reconcileCounters corrected %d likes counter(s) (deltas of unanswered requests), every likes counter equals its source rows\n", rep.Result.Corrected)
	return nil
}
