// Command peers compares edgeshard's rate limiting with what a user would
// otherwise pick, on one machine, under one load generator:
//
//   - edgeshard: the real binary (`edgeshard serve`) with one binding of 32
//     RateLimitShard shards, POST /do/LIMITS/{key}/check, its default
//     configuration (durable Badger storage, fsync'd group commits);
//   - gubernator: gubernator v2 as a single in-memory node
//     (bench/cmd/gubernator-peer), POST /v1/GetRateLimits on its HTTP
//     gateway;
//   - bare: a plain net/http handler making the same decision on an
//     in-memory map (bench/cmd/bare-peer), POST /check.
//
// Each side is its own process (so its resident memory is its own), bound
// to 127.0.0.1; a closed-loop Go generator in this process drives each in
// turn with the same number of keep-alive connections over the same keys,
// every request one rate-limit decision whose answer is decoded and
// checked. Rounds alternate the sides (the first side rotates), and each
// figure is the median over the rounds. It prints
//
//	BENCH ratelimit_vs_gubernator <figure>=<value> ...
//
// and a Markdown table; -update-docs writes both into docs/BENCHMARKS.md.
// Run it from bench/ (make bench-peers):
//
//	go run ./cmd/peers [-quick] [-rounds N] [-side 8s] [-update-docs]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/edgeshard/edgeshard/internal/benchkit"
	"github.com/edgeshard/edgeshard/internal/loadgen"
	"github.com/edgeshard/edgeshard/plugins/proto/ratelimit"
)

// options are the command line.
type options struct {
	quick      bool
	rounds     int
	side       time.Duration
	warmup     time.Duration
	workers    int
	keys       int
	shards     int
	updateDocs bool
	docs       string
	// variant, if set, adds a side "variant": edgeshard again with this
	// TOML added to its configuration (before its first table) and variantEnv in its
	// environment — an A/B of a setting, alternating like the others.
	variant    string
	variantEnv string
	// variantShards is the variant's shard count (default: shards).
	variantShards int
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("peers", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.BoolVar(&o.quick, "quick", false, "3 rounds of 4 s per side (about 2 minutes with the builds)")
	fs.IntVar(&o.rounds, "rounds", 0, "rounds (default 5, or 3 with -quick)")
	fs.DurationVar(&o.side, "side", 0, "one side of one round (default 8s, or 4s with -quick)")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "load on each side before the first round")
	fs.IntVar(&o.workers, "workers", 64, "concurrent keep-alive connections (closed loop)")
	fs.IntVar(&o.keys, "keys", 10000, "distinct rate-limit keys, drawn uniformly")
	fs.IntVar(&o.shards, "shards", 32, "shards of edgeshard's rate-limit binding")
	fs.BoolVar(&o.updateDocs, "update-docs", false, "rewrite the peers section of docs/BENCHMARKS.md with this run")
	fs.StringVar(&o.docs, "docs", "docs/BENCHMARKS.md", "the document -update-docs rewrites (relative to the repository root)")
	fs.StringVar(&o.variant, "variant", "", "add a side: edgeshard with this TOML added to its configuration before its first table (e.g. fetch_batch = 1, or $'[storage]\nmemtable_mb = 32')")
	fs.StringVar(&o.variantEnv, "variant-env", "", "space-separated NAME=VALUE pairs in the variant's environment (e.g. GOGC=50)")
	fs.IntVar(&o.variantShards, "variant-shards", 0, "add a side (or set the variant's): edgeshard with this many shards in its rate-limit binding (default: -shards)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if o.rounds <= 0 {
		o.rounds = 5
		if o.quick {
			o.rounds = 3
		}
	}
	if o.side <= 0 {
		o.side = 8 * time.Second
		if o.quick {
			o.side = 4 * time.Second
		}
	}
	res, env, err := measure(o, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "peers: %v\n", err)
		return 1
	}
	env.Command = "go run ./cmd/peers"
	if len(args) > 0 {
		env.Command += " " + strings.Join(args, " ")
	}
	fmt.Fprintln(stdout, res.line())
	fmt.Fprintln(stdout)
	fmt.Fprint(stdout, res.table())
	if o.updateDocs {
		if err := updateDocs(filepath.Join(env.Root, o.docs), env, res, o); err != nil {
			fmt.Fprintf(stderr, "peers: update docs: %v\n", err)
			return 1
		}
		fmt.Fprintf(stderr, "peers: updated %s\n", o.docs)
	}
	return 0
}

// side is one server under test.
type side struct {
	name string
	p    *proc
	op   loadgen.Op
	runs []round
	// rss and hwm are VmRSS after the side's last round and VmHWM (its
	// peak) then.
	rss, hwm int64
}

// round is one measured run of one side.
type round struct {
	rate     float64
	p50, p99 time.Duration
	cpu      time.Duration // server CPU time per decision
	genCPU   time.Duration // load generator CPU time per decision
}

// measure builds and starts the three sides, runs the rounds and returns
// the result.
func measure(o options, progress io.Writer) (*result, runEnv, error) {
	logf := func(format string, a ...any) { fmt.Fprintf(progress, "  "+format+"\n", a...) }
	root, err := benchkit.FindRoot(".")
	if err != nil {
		return nil, runEnv{}, err
	}
	env := captureEnv(root)
	logf("building edgeshard, the RateLimitShard plugin and the peers")
	bins, err := buildAll(root)
	if err != nil {
		return nil, env, err
	}
	cacheDir := os.Getenv("EDGESHARD_TEST_CACHE")
	if cacheDir == "" {
		cacheDir = filepath.Join(root, "build", "test-cache", "wazero")
	}
	dir, err := os.MkdirTemp("", "edgeshard-peers-")
	if err != nil {
		return nil, env, err
	}
	defer os.RemoveAll(dir)

	es, err := startEdgeshard(bins, filepath.Join(dir, "a"), cacheDir, o.shards, "", nil)
	if err != nil {
		return nil, env, err
	}
	defer es.stop()
	var vs *proc
	if o.variant != "" || o.variantEnv != "" || o.variantShards > 0 {
		if o.variantShards <= 0 {
			o.variantShards = o.shards
		}
		if vs, err = startEdgeshard(bins, filepath.Join(dir, "b"), cacheDir, o.variantShards, "\n"+o.variant+"\n", strings.Fields(o.variantEnv)); err != nil {
			return nil, env, err
		}
		defer vs.stop()
		logf("variant %s (pid %d): %d shards %q %s", vs.base, vs.pid(), o.variantShards, o.variant, o.variantEnv)
	}
	gb, err := startReady("gubernator", bins.gubernator)
	if err != nil {
		return nil, env, err
	}
	defer gb.stop()
	bare, err := startReady("bare", bins.bare)
	if err != nil {
		return nil, env, err
	}
	defer bare.stop()
	logf("edgeshard %s (pid %d), gubernator %s (pid %d), bare %s (pid %d)", es.base, es.pid(), gb.base, gb.pid(), bare.base, bare.pid())

	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: o.workers,
		DisableCompression:  true,
	}}
	defer client.CloseIdleConnections()
	keys := make([]string, o.keys)
	for i := range keys {
		keys[i] = "u" + strconv.Itoa(i)
	}
	sides := []*side{
		{name: "edgeshard", p: es, op: checkOp(client, o.workers, keys, edgeshardRequest(es.base), decodeCheck)},
		{name: "gubernator", p: gb, op: checkOp(client, o.workers, keys, gubernatorRequest(gb.base), decodeGubernator)},
		{name: "bare", p: bare, op: checkOp(client, o.workers, keys, bareRequest(bare.base), decodeCheck)},
	}
	if vs != nil {
		sides = append(sides, &side{name: "variant", p: vs, op: checkOp(client, o.workers, keys, edgeshardRequest(vs.base), decodeCheck)})
	}
	for _, s := range sides {
		if _, err := s.run(o.workers, o.warmup); err != nil {
			return nil, env, fmt.Errorf("%s warm-up: %w", s.name, err)
		}
	}
	for i := 0; i < o.rounds; i++ {
		for k := range sides {
			s := sides[(k+i)%len(sides)]
			r, err := s.run(o.workers, o.side)
			if err != nil {
				return nil, env, fmt.Errorf("%s round %d: %w", s.name, i+1, err)
			}
			s.runs = append(s.runs, r)
			st, _ := procStatus(s.p.pid())
			s.rss, s.hwm = st["VmRSS"], st["VmHWM"]
			logf("round %d: %-10s %7.0f/s  p50 %6.2f ms  p99 %6.2f ms  %5.1f µs CPU/decision  RSS %d MiB",
				i+1, s.name, r.rate, ms(r.p50), ms(r.p99), us(r.cpu), s.rss>>20)
		}
	}
	return &result{sides: sides, o: o}, env, nil
}

// run loads the side for d and returns the round's figures; any failed
// decision fails the run.
func (s *side) run(workers int, d time.Duration) (round, error) {
	pid := s.p.pid()
	c0, g0 := benchkit.ProcCPU(pid), benchkit.SelfCPU()
	l := loadgen.Start(context.Background(), loadgen.Options{Workers: workers}, s.op)
	time.Sleep(d)
	res := l.Stop()
	c1, g1 := benchkit.ProcCPU(pid), benchkit.SelfCPU()
	st := res.All()
	if errs := res.Errors(); len(errs) > 0 {
		return round{}, fmt.Errorf("%d of %d decisions failed; first: %v", len(errs), st.Requests, errs[0].Err)
	}
	if st.Requests == 0 {
		return round{}, fmt.Errorf("no decision in %v", d)
	}
	n := time.Duration(st.Requests)
	return round{rate: st.RPS(), p50: st.P50, p99: st.P99, cpu: (c1 - c0) / n, genCPU: (g1 - g0) / n}, nil
}

// request builds the HTTP request of one decision for key.
type request func(key string) (*http.Request, error)

// checkOp returns the closed-loop operation: per worker a uniform draw over
// keys, one request, its answer read, decoded and checked.
func checkOp(client *http.Client, workers int, keys []string, req request, check func([]byte) error) loadgen.Op {
	rngs := make([]*rand.Rand, workers)
	for w := range rngs {
		rngs[w] = rand.New(rand.NewPCG(1, uint64(w)))
	}
	return func(ctx context.Context, w, _ int) error {
		r, err := req(keys[rngs[w].IntN(len(keys))])
		if err != nil {
			return err
		}
		st, b, err := benchkit.Send(client, r.WithContext(ctx))
		if err != nil {
			return err
		}
		if st != http.StatusOK {
			return fmt.Errorf("status %d: %s", st, b)
		}
		return check(b)
	}
}

// limit and windowMs are every decision's: a limit no run reaches, so
// every decision allows and counts (and edgeshard writes the bucket).
const (
	limit    = 1_000_000_000
	windowMs = 60_000
)

// checkBody is the RateLimitShard /check body for key's user bucket.
func checkBody(key string) string {
	return "user:" + key + "\t" + strconv.Itoa(limit) + "\t" + strconv.Itoa(windowMs) + "\n"
}

func edgeshardRequest(base string) request {
	return func(key string) (*http.Request, error) {
		return http.NewRequest(http.MethodPost, base+"/do/LIMITS/user:"+key+"/check", strings.NewReader(checkBody(key)))
	}
}

func bareRequest(base string) request {
	return func(key string) (*http.Request, error) {
		return http.NewRequest(http.MethodPost, base+"/check", strings.NewReader(checkBody(key)))
	}
}

// gubernatorRequest is one GetRateLimits call with one token-bucket
// request (gubernator's default algorithm) of the same limit and window.
func gubernatorRequest(base string) request {
	return func(key string) (*http.Request, error) {
		body := `{"requests":[{"name":"user","unique_key":"` + key + `","hits":1,"limit":` + strconv.Itoa(limit) +
			`,"duration":` + strconv.Itoa(windowMs) + `}]}`
		r, err := http.NewRequest(http.MethodPost, base+"/v1/GetRateLimits", strings.NewReader(body))
		if err == nil {
			r.Header.Set("Content-Type", "application/json")
		}
		return r, err
	}
}

// decodeCheck checks a RateLimitShard /check answer: one bucket, allowed.
func decodeCheck(b []byte) error {
	var rep ratelimit.Reply
	if err := json.Unmarshal(b, &rep); err != nil || rep.Allowed == nil || !*rep.Allowed || len(rep.Buckets) != 1 {
		return fmt.Errorf("unexpected answer %s", b)
	}
	return nil
}

// decodeGubernator checks a GetRateLimits answer: one response, under the
// limit, no error.
func decodeGubernator(b []byte) error {
	var rep struct {
		Responses []struct {
			Status string `json:"status"`
			Error  string `json:"error"`
		} `json:"responses"`
	}
	if err := json.Unmarshal(b, &rep); err != nil || len(rep.Responses) != 1 || rep.Responses[0].Status != "UNDER_LIMIT" || rep.Responses[0].Error != "" {
		return fmt.Errorf("unexpected answer %s", b)
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
