package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/host/clock"
	"github.com/edgeshard/edgeshard/internal/benchkit"
	"github.com/edgeshard/edgeshard/internal/hostinternal"
	"github.com/edgeshard/edgeshard/internal/loadgen"
	"github.com/edgeshard/edgeshard/plugins/proto/ratelimit"
)

// limitHost starts a host with RATE_LIMIT_SHARD (the wasm plugin) and
// RATE_LIMIT_NATIVE (nativeLimiter), both sharded alike, in w's directory
// name on engine eng; batch is its FetchBatch (0: the default; 1: every
// request on its own); it closes when the figure ends.
func (r *runner) limitHost(w *scratch, name string, eng *host.Engine, batch int) (*host.Host, error) {
	mod, err := r.build.wasm("plugins/ratelimit")
	if err != nil {
		return nil, err
	}
	cfg := r.hostConfig(w.path(name), w.logs)
	cfg.Engine = eng
	cfg.FetchBatch = batch
	cfg.Bindings = []host.Binding{
		{Name: "RATE_LIMIT_SHARD", Module: mod, Shards: r.sz.Shards},
		{Name: "RATE_LIMIT_NATIVE", Shards: r.sz.Shards},
	}
	ctx := hostinternal.WithNative(context.Background(), "RATE_LIMIT_NATIVE", newNativeLimiter(clock.Real{}))
	return r.newHost(ctx, w, cfg)
}

// limitHosts returns the rate-limit host and its twin that hands the
// guest one request at a time (FetchBatch 1).
func (r *runner) limitHosts(w *scratch) (h, h1 *host.Host, err error) {
	if h, err = r.limitHost(w, "host", r.engine, 0); err != nil {
		return nil, nil, err
	}
	h1, err = r.limitHost(w, "one-by-one", r.engine, 1)
	return h, h1, err
}

// compareChecks warms each op up, then measures them side by side
// (r.compare): the samples by side, in the order of names.
func (r *runner) compareChecks(figure string, names []string, ops []loadgen.Op) ([][]sample, error) {
	sz := r.sz
	sides := make([]side, len(ops))
	for i, o := range ops {
		if _, err := measureChecks(sz.Workers, sz.Warmup, o); err != nil {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
		sides[i] = side{names[i], func() (sample, error) { return measureChecks(sz.Workers, sz.Side, o) }}
	}
	return r.compare(figure, sz.Rounds, sides...)
}

// limitKeys returns, per worker, a generator of check bodies for user
// buckets drawn uniformly from n, with a limit no test run reaches (every
// decision allows, so every call writes its bucket), and the bucket key.
func limitKeys(workers, n int, seed uint64) []func() (key string, body []byte) {
	keys := make([]string, n)
	bodies := make([][]byte, n)
	for i := range keys {
		keys[i] = "user:u" + strconv.Itoa(i)
		bodies[i] = []byte(keys[i] + "\t1000000000\t60000\n")
	}
	out := make([]func() (string, []byte), workers)
	for w := range out {
		rng := rand.New(rand.NewPCG(seed, uint64(w)))
		out[w] = func() (string, []byte) { i := rng.IntN(n); return keys[i], bodies[i] }
	}
	return out
}

var allowedPrefix = []byte(`{"allowed":true`)

// measureChecks is one measured run of a rate-limit side: op with
// workers callers for d, every check answered.
func measureChecks(workers int, d time.Duration, op loadgen.Op) (sample, error) {
	return measureSample(workers, d, op, "checks")
}

// checkRequest is the /check body every shard is primed with.
var checkRequest = &abi.Request{Method: "POST", Path: "/check", Body: []byte("user:prime\t1000000000\t60000\n")}

// ratelimitWasmVsNative: rate-limit decisions/s through RateLimitShard
// (wasm) versus nativeLimiter (the same algorithm, package window, in Go)
// behind the same host: Namespace.Fetch of POST /check, the same actor,
// storage (Badger, SyncWrites; window writes are unconfirmed in both) and
// output gate. 64 callers over Buckets user buckets. A third side runs the
// wasm plugin on an engine without the interrupt checks (unsafe:
// runaway guests are never interrupted) to show what the checks cost.
func (r *runner) ratelimitWasmVsNative(w *scratch) (*result, error) {
	sz := r.sz
	h, h1, err := r.limitHosts(w)
	if err != nil {
		return nil, err
	}
	var hu *host.Host
	if !r.unchecked && !sz.NoUnchecked {
		ue, err := r.uncheckedEngine()
		if err != nil {
			return nil, err
		}
		if hu, err = r.limitHost(w, "unchecked", ue, 0); err != nil {
			return nil, err
		}
	}
	var seed uint64
	op := func(ns *host.Namespace) loadgen.Op {
		seed++
		gen := limitKeys(sz.Workers, sz.Buckets, seed)
		return func(ctx context.Context, w, _ int) error {
			key, body := gen[w]()
			resp, err := ns.Fetch(ctx, key, &abi.Request{Method: "POST", Path: "/check", Body: body})
			if err != nil {
				return err
			}
			if resp.Status != 200 || !bytes.HasPrefix(resp.Body, allowedPrefix) {
				return fmt.Errorf("status %d: %s", resp.Status, resp.Body)
			}
			return nil
		}
	}
	nsW, _ := h.Namespace("RATE_LIMIT_SHARD")
	nsN, _ := h.Namespace("RATE_LIMIT_NATIVE")
	ns1, _ := h1.Namespace("RATE_LIMIT_SHARD")
	nss := []*host.Namespace{nsW, nsN, ns1}
	names := []string{"wasm", "native", "wasm_1by1"}
	if hu != nil {
		nsU, _ := hu.Namespace("RATE_LIMIT_SHARD")
		nss = append(nss, nsU)
		names = append(names, "wasm_unchecked")
	}
	ops := make([]loadgen.Op, len(nss))
	for i, ns := range nss {
		if err := primeShards(ns, checkRequest); err != nil {
			return nil, err
		}
		ops[i] = op(ns)
	}
	out, err := r.compareChecks("ratelimit_wasm_vs_native", names, ops)
	if err != nil {
		return nil, err
	}
	res := &result{name: "ratelimit_wasm_vs_native"}
	wm, nm, ratio, spread := res.addComparison(out, "wasm", "native")
	res.addSide("wasm_1by1", out[2])
	if len(out) > 3 {
		um := benchkit.Median(rates(out[3]))
		res.add("unchecked_per_s", um)
		res.add("unchecked_cpu_us", cpuMicros(out[3]))
		res.add("ratio_unchecked", um/nm)
	}
	res.add("spread", spread)
	res.verdict(sz.Rounds, 0.5, true, ratio)
	res.headline = fmt.Sprintf("%.2f", ratio)
	if len(out) > 3 {
		res.headline += fmt.Sprintf(" (%.2f unchecked)", benchkit.Median(rates(out[3]))/nm)
	}
	res.note = fmt.Sprintf("%s vs %s decisions/s (%.0f vs %.0f µs CPU each), in-process Namespace.Fetch, %d callers, %d buckets; without batch delivery %s/s (%.0f µs)",
		benchkit.FormatNum(wm), benchkit.FormatNum(nm), cpuMicros(out[0]), cpuMicros(out[1]), sz.Workers, sz.Buckets,
		benchkit.FormatNum(benchkit.Median(rates(out[2]))), cpuMicros(out[2]))
	if len(out) > 3 {
		res.note += fmt.Sprintf("; without the interrupt checks %.2f", benchkit.Median(rates(out[3]))/nm)
	}
	return res, nil
}

// bareCheck is the floor of ratelimit_http: a plain net/http handler that
// reads the same /check body, parses it with the same parser, and encodes
// an answer of the same shape with encoding/json — everything an HTTP
// rate-limit endpoint does except deciding (no shard, no storage).
func bareCheck(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	bs, le := ratelimit.ParseCheck(string(body))
	if le != nil {
		bad := errorJSON(400, le.Code, le.Error())
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(bad.Status)
		w.Write(bad.Body)
		return
	}
	now := time.Now().UnixMilli()
	allowed := true
	rep := ratelimit.Reply{Allowed: &allowed, Buckets: make([]ratelimit.BucketReply, len(bs))}
	for i, b := range bs {
		rep.Buckets[i] = ratelimit.BucketReply{Key: b.Key, Allowed: true, Limit: b.Limit, Remaining: b.Limit - b.Cost,
			WindowMs: b.WindowMs, ResetMs: now - now%b.WindowMs + b.WindowMs}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(rep)
}

// ratelimitHTTP: rate-limit decisions/s over loopback HTTP through the
// host's /do/RATE_LIMIT_SHARD/{key}/check route (wasm shard, Badger
// storage) versus bareCheck, with the same client, callers and requests;
// the client decodes every JSON answer on both sides.
func (r *runner) ratelimitHTTP(w *scratch) (*result, error) {
	sz := r.sz
	h, h1, err := r.limitHosts(w)
	if err != nil {
		return nil, err
	}
	for _, hh := range []*host.Host{h, h1} {
		ns, _ := hh.Namespace("RATE_LIMIT_SHARD")
		if err := primeShards(ns, checkRequest); err != nil {
			return nil, err
		}
	}
	srvS := newServer(h.Handler())
	defer srvS.Close()
	srv1 := newServer(h1.Handler())
	defer srv1.Close()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /check", bareCheck)
	srvB := newServer(mux)
	defer srvB.Close()
	client := newClient(sz.Workers)
	defer client.CloseIdleConnections()

	var seed uint64
	op := func(url func(key string) string) loadgen.Op {
		seed++
		gen := limitKeys(sz.Workers, sz.Buckets, seed)
		return func(ctx context.Context, w, _ int) error {
			key, body := gen[w]()
			st, b, err := callHTTP(ctx, client, "POST", url(key), body)
			if err != nil {
				return err
			}
			var rep ratelimit.Reply
			if err := json.Unmarshal(b, &rep); err != nil || st != 200 || rep.Allowed == nil || !*rep.Allowed || len(rep.Buckets) != 1 {
				return fmt.Errorf("status %d: %s", st, b)
			}
			return nil
		}
	}
	opS := op(func(key string) string { return srvS.URL + "/do/RATE_LIMIT_SHARD/" + key + "/check" })
	opB := op(func(string) string { return srvB.URL + "/check" })
	op1 := op(func(key string) string { return srv1.URL + "/do/RATE_LIMIT_SHARD/" + key + "/check" })
	out, err := r.compareChecks("ratelimit_http", []string{"shard", "bare", "shard_1by1"}, []loadgen.Op{opS, opB, op1})
	if err != nil {
		return nil, err
	}
	res := &result{name: "ratelimit_http"}
	sm, bm, ratio, spread := res.addComparison(out, "shard", "bare")
	res.addSide("shard_1by1", out[2])
	res.add("shard_1by1_p99_ms", p99Millis(out[2]))
	res.add("spread", spread)
	res.verdict(sz.Rounds, 0.6, true, ratio)
	res.headline = fmt.Sprintf("%.2f", ratio)
	res.note = fmt.Sprintf("%s vs %s decisions/s over loopback HTTP (%.0f vs %.0f µs CPU each, p99 %.1f vs %.1f ms), %d callers",
		benchkit.FormatNum(sm), benchkit.FormatNum(bm), cpuMicros(out[0]), cpuMicros(out[1]), p99Millis(out[0]), p99Millis(out[1]), sz.Workers)
	return res, nil
}
