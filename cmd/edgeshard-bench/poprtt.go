package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/benchkit"
	"github.com/edgeshard/edgeshard/internal/configtext"
	"github.com/edgeshard/edgeshard/internal/loadgen"
	"github.com/edgeshard/edgeshard/internal/netdelay"
	"github.com/edgeshard/edgeshard/internal/pgtest"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// pop_rtt: the seed's topology — a POP's host far from its PostgreSQL.
// A TCP proxy (internal/netdelay) between the hosts and a throwaway
// PostgreSQL adds a round trip of 0, 5 and 30 ms; at each, for POST
// /posts/{id}/views and POST /runtime-events, primary (the shards buffer,
// flushes cross the link) against off (every request crosses it), both
// with a pool of 16 connections, sides alternating round by round:
//
//   - throughput: acknowledged requests/s at 64 closed-loop callers (the
//     primary side's time includes flushing every shard at the end);
//   - latency: p50/p99 of acknowledged requests at a fixed offered rate
//     (open loop, 500 requests/s: each request's latency counts from when
//     it was due, so a backlog shows), with the share that failed. The
//     primary side runs 6 s (10 s in make bench), so that every shard
//     flushes across the link (every 5 s) while it is measured; the off
//     side runs as long as a throughput run: where it cannot keep up, its
//     latency grows with the length of the run anyway.
//
// Goals at 30 ms: primary p99 ≤ 5 ms at the fixed rate, primary
// throughput ≥ 20× off. With -update-docs the figure also rewrites its
// own section of docs/BENCHMARKS.md (popBegin … popEnd) and the plot
// docs/bench/pop_rtt.png; build/bench/pop_rtt.png is written every run.

func init() {
	figures = append(figures, figure{"pop_rtt", "at 30 ms RTT to PostgreSQL: primary p99 ≤ 5 ms at 500/s, primary ≥ 20× off", (*runner).popRTT})
}

// Markers of the section pop_rtt rewrites.
const (
	popBegin = "<!-- bench:pop_rtt:begin -->"
	popEnd   = "<!-- bench:pop_rtt:end -->"
)

// popPlan is the size of one pop_rtt run.
type popPlan struct {
	rounds  int
	side    time.Duration // one measured run of one side (throughput; off's latency)
	latSide time.Duration // primary's latency run: long enough for every shard to flush (5 s) while measured
	rate    float64       // the latency runs' offered requests/s
	rtts    []time.Duration
	workers int // closed-loop callers
	conns   int // the SQL pool of each host
}

func popRTTPlan(sz sizes) popPlan {
	p := popPlan{rounds: max(1, sz.Rounds-2), side: max(100*time.Millisecond, sz.Side*6/10), latSide: 6 * time.Second, rate: 500,
		rtts: []time.Duration{0, 5 * time.Millisecond, 30 * time.Millisecond}, workers: sz.Workers, conns: 16}
	switch {
	case sz.Side < 500*time.Millisecond: // the smoke test
		p.rate, p.latSide = 50, p.side
	case sz.Side > time.Second: // make bench
		p.latSide = 10 * time.Second
	}
	return p
}

// popEndpoint is one of the two requests measured.
type popEndpoint struct {
	name    string
	binding string
	op      func(base string, w int) (method, path string, body []byte)
}

// popCell is what one side measured at one RTT for one endpoint, over its
// rounds.
type popCell struct {
	rates             []float64
	p50s, p99s, p999s []time.Duration
	failed            []float64 // share of the latency run's requests that failed
	slow              []float64 // share of its acknowledged requests slower than 5 ms
}

func (c *popCell) rate() float64 { return benchkit.Median(c.rates) }
func (c *popCell) p50() time.Duration {
	return time.Duration(benchkit.Median(durs(c.p50s)))
}
func (c *popCell) p99() time.Duration {
	return time.Duration(benchkit.Median(durs(c.p99s)))
}
func (c *popCell) p999() time.Duration {
	return time.Duration(benchkit.Median(durs(c.p999s)))
}
func (c *popCell) fail() float64 { return benchkit.Median(c.failed) }
func (c *popCell) over() float64 { return benchkit.Median(c.slow) }

func durs(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d)
	}
	return out
}

// popResult is every cell: [endpoint][rtt][side], side 0 primary, 1 off.
type popResult struct {
	plan      popPlan
	endpoints []string
	cells     [][][2]*popCell
}

func (r *runner) popRTT(w *scratch) (*result, error) {
	plan := popRTTPlan(r.sz)
	pg, err := pgtest.Start()
	if errors.Is(err, pgtest.ErrNotInstalled) {
		return nil, fmt.Errorf("pop_rtt needs PostgreSQL: %w (%s)", err, pgtest.Install)
	}
	if err != nil {
		return nil, fmt.Errorf("throwaway PostgreSQL: %w", err)
	}
	w.onClose(func() { pg.Close() }) // after the servers (cleanups run last first)
	proxy, err := netdelay.Start("127.0.0.1:"+strconv.Itoa(pg.Port), 0)
	if err != nil {
		return nil, err
	}
	w.onClose(func() { proxy.Close() })
	ctx := context.Background()
	dbURL := func(name string) (string, error) {
		u, err := pg.CreateDB(ctx, name)
		if err != nil {
			return "", err
		}
		pu, err := url.Parse(u)
		if err != nil {
			return "", err
		}
		pu.Host = proxy.Addr() // through the link
		return pu.String(), nil
	}
	primaryDB, err := dbURL("pop_primary")
	if err != nil {
		return nil, err
	}
	offDB, err := dbURL("pop_off")
	if err != nil {
		return nil, err
	}
	counters, err := r.build.wasm("plugins/counters")
	if err != nil {
		return nil, err
	}
	events, err := r.build.wasm("plugins/runtimeevents")
	if err != nil {
		return nil, err
	}
	pgConfig := func(u string) string {
		return configtext.D1("DB", u, fmt.Sprintf("max_conns = %d", plan.conns))
	}
	// The events' analytics points go across the link too (the seed's
	// Analytics Engine is a remote service, not the POP's disk), written
	// by the sink in the background.
	primary, err := r.startServer(w, "primary", configtext.Binding("COUNTER_SHARD", counters, r.sz.Shards, "DB", "")+
		configtext.Binding("RUNTIME_EVENT_SHARD", events, r.sz.Shards, "DB", "AE")+configtext.Analytics("AE", "runtime_events", primaryDB)+
		configtext.Vars("COUNTER_DO_MODE", "primary", "RUNTIME_EVENT_DO_MODE", "primary")+pgConfig(primaryDB))
	if err != nil {
		return nil, err
	}
	off, err := r.startServer(w, "off", configtext.Vars("COUNTER_DO_MODE", "off", "RUNTIME_EVENT_DO_MODE", "off")+pgConfig(offDB))
	if err != nil {
		return nil, err
	}
	bases := [2]string{"http://" + primary.Addr(), "http://" + off.Addr()}
	nss := map[string]*host.Namespace{}
	for _, b := range []string{"COUNTER_SHARD", "RUNTIME_EVENT_SHARD"} {
		ns, ok := primary.Host().Namespace(b)
		if !ok {
			return nil, fmt.Errorf("no namespace %s", b)
		}
		nss[b] = ns
	}
	client := newClient(512)
	defer client.CloseIdleConnections()

	// One generator of each kind, shared by the callers (the open loop's
	// requests run on goroutines of their own).
	var rngMu sync.Mutex
	post := zipfPosts(1, r.sz.Posts, r.sz.ZipfS, 99)[0]
	rng := rand.New(rand.NewPCG(7, 7))
	eps := []popEndpoint{
		{"views", "COUNTER_SHARD", func(base string, w int) (string, string, []byte) {
			rngMu.Lock()
			defer rngMu.Unlock()
			return "POST", base + "/posts/" + post() + "/views", nil
		}},
		{"events", "RUNTIME_EVENT_SHARD", func(base string, w int) (string, string, []byte) {
			rngMu.Lock()
			defer rngMu.Unlock()
			return "POST", base + "/runtime-events", eventBody(rng, 1, 1000)
		}},
	}
	call := func(ctx context.Context, ep popEndpoint, side, w int) error {
		m, u, body := ep.op(bases[side], w)
		st, b, err := callHTTP(ctx, client, m, u, body)
		if err != nil {
			return err
		}
		if st != http.StatusAccepted {
			return fmt.Errorf("status %d: %s", st, firstLine(string(b)))
		}
		return nil
	}
	res := &popResult{plan: plan}
	for _, ep := range eps {
		res.endpoints = append(res.endpoints, ep.name)
		perRTT := make([][2]*popCell, len(plan.rtts))
		for ri, rtt := range plan.rtts {
			proxy.SetRTT(rtt)
			// An overloaded off side sheds load: its SQL circuit breaker
			// opens (503s at once for 5 s). Start each measurement closed.
			for _, b := range bases {
				if err := waitReady(client, b, 30*time.Second); err != nil {
					return nil, err
				}
			}
			cells := [2]*popCell{{}, {}}
			// Warm both sides: connections through the link, instances.
			for side := 0; side < 2; side++ {
				closedLoop(plan.workers, min(plan.side/2, 300*time.Millisecond), func(ctx context.Context, w, _ int) error { return call(ctx, ep, side, w) })
				if side == 0 {
					if _, err := flushShards(nss[ep.binding]); err != nil {
						return nil, err
					}
				}
			}
			for round := 0; round < plan.rounds; round++ {
				order := []int{0, 1}
				if round%2 == 1 {
					order = []int{1, 0}
				}
				for _, side := range order { // throughput
					if err := waitReady(client, bases[side], 30*time.Second); err != nil {
						return nil, err
					}
					l := closedLoop(plan.workers, plan.side, func(ctx context.Context, w, _ int) error { return call(ctx, ep, side, w) })
					var extra time.Duration
					if side == 0 {
						if l.Errors > 0 {
							return nil, fmt.Errorf("%s primary at %v: %d of %d requests failed; first: %v", ep.name, rtt, l.Errors, l.OK+l.Errors, l.FirstErr)
						}
						if extra, err = flushShards(nss[ep.binding]); err != nil {
							return nil, err
						}
					}
					cells[side].rates = append(cells[side].rates, l.rate(extra))
					r.logf("pop_rtt %s rtt %v round %d: %-7s %8.0f/s (%d failed%s)", ep.name, rtt, round+1, sideName(side), l.rate(extra), l.Errors, firstErr(l.FirstErr))
				}
				for _, side := range order { // latency at the fixed rate
					d := plan.latSide
					if side == 1 {
						// Off cannot keep up at the longer round trips: its
						// backlog, and so its latency, grows with the run.
						d = plan.side
					}
					if err := waitReady(client, bases[side], 30*time.Second); err != nil {
						return nil, err
					}
					ol := openLoop(plan.rate, d, func(ctx context.Context, i int) error { return call(ctx, ep, side, i) })
					if side == 0 {
						if ol.failed > 0 {
							return nil, fmt.Errorf("%s primary at %v, %v/s: %d of %d requests failed; first: %v", ep.name, rtt, plan.rate, ol.failed, ol.n, ol.firstErr)
						}
						if _, err := flushShards(nss[ep.binding]); err != nil {
							return nil, err
						}
					}
					cells[side].p50s = append(cells[side].p50s, ol.p50)
					cells[side].p99s = append(cells[side].p99s, ol.p99)
					cells[side].p999s = append(cells[side].p999s, ol.p999)
					cells[side].slow = append(cells[side].slow, ol.over5ms)
					cells[side].failed = append(cells[side].failed, float64(ol.failed)/float64(max(ol.n, 1)))
					r.logf("pop_rtt %s rtt %v round %d: %-7s p50 %6.2f ms p99 %7.2f ms p99.9 %7.2f ms, %.2f%% > 5 ms at %v/s (%d of %d failed%s)", ep.name, rtt, round+1, sideName(side),
						ms(ol.p50), ms(ol.p99), ms(ol.p999), 100*ol.over5ms, plan.rate, ol.failed, ol.n, firstErr(ol.firstErr))
				}
			}
			perRTT[ri] = cells
		}
		res.cells = append(res.cells, perRTT)
	}
	out := res.report()
	if st, err := sql.Open("pgx", pg.URL("postgres")); err == nil {
		for _, db := range []string{"pop_primary", "pop_off"} {
			var commits, rollbacks int64
			st.QueryRowContext(ctx, "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = $1", db).Scan(&commits, &rollbacks)
			r.logf("pop_rtt: %s: %d transactions committed, %d rolled back (serialization failures rerun, and the like)", db, commits, rollbacks)
		}
		st.Close()
		if st, err := sql.Open("pgx", pg.URL("pop_primary")); err == nil {
			rows, err := st.QueryContext(ctx, "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables ORDER BY relname")
			if err == nil {
				for rows.Next() {
					var name string
					var ins, upd, hot int64
					rows.Scan(&name, &ins, &upd, &hot)
					r.logf("pop_rtt: pop_primary.%s: %d inserted, %d updated (%d HOT)", name, ins, upd, hot)
				}
				rows.Close()
			}
			st.Close()
		}
	}
	if n, sample := w.logs.errors(); n > 0 {
		r.logf("pop_rtt: %d error lines in the hosts' logs, e.g. %s", n, strings.Join(sample, " | "))
	}
	if err := writePopPlot(res, filepath.Join(r.root, "build", "bench", "pop_rtt.png")); err != nil {
		return nil, fmt.Errorf("plot: %w", err)
	}
	if r.docs != "" {
		if err := writePopPlot(res, filepath.Join(r.root, "docs", "bench", "pop_rtt.png")); err != nil {
			return nil, fmt.Errorf("plot: %w", err)
		}
		if err := updatePopDocs(filepath.Join(r.root, r.docs), res, captureEnv(r.root, os.Args[1:])); err != nil {
			return nil, fmt.Errorf("docs: %w", err)
		}
	}
	return out, nil
}

// waitReady waits until the server at base answers /readyz with 200. An
// open SQL circuit closes only when a request's trial succeeds: a stats
// read (SQL, under the breaker) is that trial.
func waitReady(c *http.Client, base string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		st, b, err := callHTTP(context.Background(), c, "GET", base+"/readyz", nil)
		if err == nil && st == http.StatusOK {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v: %d %s %v", base, limit, st, b, err)
		}
		callHTTP(context.Background(), c, "GET", base+"/posts/ready-probe/stats", nil)
		time.Sleep(200 * time.Millisecond)
	}
}

func firstErr(err error) string {
	if err == nil {
		return ""
	}
	return "; first: " + firstLine(err.Error())
}

func sideName(side int) string { return [2]string{"primary", "off"}[side] }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// report turns the cells into the BENCH line and the docs table's row.
func (p *popResult) report() *result {
	res := &result{name: "pop_rtt", met: true}
	var head []string
	for ei, ep := range p.endpoints {
		for ri, rtt := range p.plan.rtts {
			c := p.cells[ei][ri]
			k := fmt.Sprintf("%s_%d_", ep, rtt.Milliseconds())
			ratio := c[0].rate() / max(c[1].rate(), 1e-9)
			res.add(k+"primary_per_s", c[0].rate())
			res.add(k+"off_per_s", c[1].rate())
			res.add(k+"ratio", ratio)
			res.add(k+"primary_p50_ms", c[0].p50())
			res.add(k+"primary_p99_ms", c[0].p99())
			res.add(k+"primary_p999_ms", c[0].p999())
			res.add(k+"primary_over_5ms", c[0].over())
			res.add(k+"off_p50_ms", c[1].p50())
			res.add(k+"off_p99_ms", c[1].p99())
			res.add(k+"off_failed", c[1].fail())
			if rtt == 30*time.Millisecond {
				ok := c[0].p99() <= 5*time.Millisecond && ratio >= 20
				res.met = res.met && ok
				head = append(head, fmt.Sprintf("%s p99 %.2f ms, %.0f×", ep, ms(c[0].p99()), ratio))
			}
		}
	}
	res.add("rate", p.plan.rate)
	res.add("conns", p.plan.conns)
	res.add("callers", p.plan.workers)
	res.add("rounds", p.plan.rounds)
	res.add("met", yesNo(res.met))
	res.headline = "30 ms: " + strings.Join(head, "; ")
	res.note = fmt.Sprintf("POP ↔ PostgreSQL round trip 0/5/30 ms (TCP proxy); primary vs off, pool of %d, %d callers for throughput, %v/s open loop for latency; table and plot in the section below",
		p.plan.conns, p.plan.workers, p.plan.rate)
	return res
}

// openLoopResult is one open-loop run.
type openLoopResult struct {
	n, failed      int
	p50, p99, p999 time.Duration // of the acknowledged requests
	over5ms        float64       // share of the acknowledged requests slower than 5 ms
	firstErr       error
}

// openLoop sends requests at a fixed rate for d whatever the answers take
// (each on its own goroutine), and measures each acknowledged request's
// latency from when it was due, so that a server falling behind shows its
// backlog rather than slowing the sender down.
func openLoop(rate float64, d time.Duration, op func(ctx context.Context, i int) error) openLoopResult {
	n := max(1, int(rate*d.Seconds()))
	lat := make([]time.Duration, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := 0; i < n; i++ {
		due := t0.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		if w := time.Until(due); w > 0 {
			time.Sleep(w)
		}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			errs[i] = op(ctx, i)
			lat[i] = time.Since(due)
		})
	}
	wg.Wait()
	res := openLoopResult{n: n}
	var ok []time.Duration
	for i := range lat {
		if errs[i] != nil {
			res.failed++
			if res.firstErr == nil {
				res.firstErr = errs[i]
			}
			continue
		}
		ok = append(ok, lat[i])
	}
	slices.Sort(ok)
	if len(ok) > 0 {
		i, _ := slices.BinarySearch(ok, 5*time.Millisecond+1)
		res.over5ms = float64(len(ok)-i) / float64(len(ok))
	}
	res.p50, res.p99, res.p999 = loadgen.Percentile(ok, 0.50), loadgen.Percentile(ok, 0.99), loadgen.Percentile(ok, 0.999)
	return res
}

// writePopPlot draws latency against RTT, p50 and p99 of both sides, one
// panel per endpoint (log scale: off's backlog is seconds, primary's
// answers milliseconds), with the 5 ms goal.
func writePopPlot(p *popResult, path string) error {
	var row []*plot.Plot
	for ei, ep := range p.endpoints {
		pl := plot.New()
		pl.Title.Text = "POST " + map[string]string{"views": "/posts/{id}/views", "events": "/runtime-events"}[ep]
		pl.X.Label.Text = "round trip to PostgreSQL (ms)"
		pl.Y.Label.Text = fmt.Sprintf("latency at %v requests/s (ms)", p.plan.rate)
		pl.Y.Scale = plot.LogScale{}
		pl.Y.Tick.Marker = plot.LogTicks{Prec: -1}
		pl.Legend.Top = true
		pl.Legend.Left = true
		series := func(side int, q func(*popCell) time.Duration) plotter.XYs {
			xys := make(plotter.XYs, len(p.plan.rtts))
			for ri, rtt := range p.plan.rtts {
				xys[ri].X = ms(rtt)
				xys[ri].Y = max(ms(q(p.cells[ei][ri][side])), 0.01)
			}
			return xys
		}
		p50 := func(c *popCell) time.Duration { return c.p50() }
		p99 := func(c *popCell) time.Duration { return c.p99() }
		if err := plotutil.AddLinePoints(pl,
			"primary p50", series(0, p50), "primary p99", series(0, p99),
			"off p50", series(1, p50), "off p99", series(1, p99)); err != nil {
			return err
		}
		goal := plotter.XYs{{X: 0, Y: 5}, {X: ms(p.plan.rtts[len(p.plan.rtts)-1]), Y: 5}}
		gl, err := plotter.NewLine(goal)
		if err != nil {
			return err
		}
		gl.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		pl.Add(gl)
		pl.Legend.Add("goal: p99 ≤ 5 ms", gl)
		row = append(row, pl)
	}
	img := vgimg.New(vg.Points(900), vg.Points(380))
	dc := draw.New(img)
	t := draw.Tiles{Rows: 1, Cols: len(row), PadX: vg.Points(20), PadTop: vg.Points(6), PadBottom: vg.Points(6), PadLeft: vg.Points(6), PadRight: vg.Points(12)}
	canvases := plot.Align([][]*plot.Plot{row}, t, dc)
	for i, pl := range row {
		pl.Draw(canvases[0][i])
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// updatePopDocs rewrites the pop_rtt section of the document with this
// run's table.
func updatePopDocs(path string, p *popResult, env runEnv) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var t strings.Builder
	fmt.Fprintf(&t, "Run %s, `%s`, %s (load average %s at start), `%s`: %d round(s) of %v per side and measurement.\n\n",
		env.Date, env.Commit, env.CPU, env.LoadAvg, env.Command, p.plan.rounds, p.plan.side)
	fmt.Fprintf(&t, "| RTT | endpoint | primary /s | off /s | primary ÷ off | primary p50 | primary p99 | primary p99.9 | primary > 5 ms | off p50 | off p99 | off failed |\n")
	fmt.Fprintf(&t, "|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for ri, rtt := range p.plan.rtts {
		for ei, ep := range p.endpoints {
			c := p.cells[ei][ri]
			fmt.Fprintf(&t, "| %d ms | `%s` | %s | %s | %.1f× | %.2f ms | %.2f ms | %.2f ms | %.2f%% | %.2f ms | %.2f ms | %.0f%% |\n",
				rtt.Milliseconds(), ep, benchkit.FormatNum(c[0].rate()), benchkit.FormatNum(c[1].rate()), c[0].rate()/max(c[1].rate(), 1e-9),
				ms(c[0].p50()), ms(c[0].p99()), ms(c[0].p999()), 100*c[0].over(), ms(c[1].p50()), ms(c[1].p99()), 100*c[1].fail())
		}
	}
	res := p.report()
	met := "met"
	if !res.met {
		met = "**not met**"
	}
	fmt.Fprintf(&t, "\nGoals at 30 ms (%s): %s. Throughput: %d closed-loop callers; latency: %v requests/s offered (open loop), percentiles of the acknowledged requests.\n\n",
		met, res.headline, p.plan.workers, p.plan.rate)
	t.WriteString("![latency against the round trip to PostgreSQL, primary and off](bench/pop_rtt.png)\n")
	doc, err := replaceRegion(string(b), popBegin, popEnd, t.String())
	if err != nil {
		return err
	}
	return os.WriteFile(path, []byte(doc), 0o644)
}
