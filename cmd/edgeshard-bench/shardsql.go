package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/benchkit"
	"github.com/edgeshard/edgeshard/internal/loadgen"
	"github.com/edgeshard/edgeshard/storage/sqldb"
)

// shardSQL: SQL inserts/s when each shard has its own database (sql =
// "shard") versus one database the binding's shards share, under
// contention: Workers callers spread over Shards shards, each event the
// ledger test plugin's POST /entry (an INSERT and two confirmed storage
// puts; every response waits for both commits, SQLite synchronous=FULL
// and the fsync'd group commit). The shared side commits each INSERT at
// once; the per-shard side commits it with the event, plus the redo
// record that makes the two commits one.
func (r *runner) shardSQL(w *scratch) (*result, error) {
	sz := r.sz
	mod, err := r.build.wasm("host/testdata/plugins/shardsql")
	if err != nil {
		return nil, err
	}
	db, err := sqldb.Open(sqldb.Scheme+w.path("shared.db"), sqldb.Options{Synchronous: "FULL"})
	if err != nil {
		return nil, err
	}
	defer db.Close()
	cfg := r.hostConfig(w.path("host"), w.logs)
	cfg.SQL = map[string]host.SQLDB{"DB": db}
	cfg.Bindings = []host.Binding{
		{Name: "PER_SHARD", Module: mod, Shards: sz.Shards, SQL: host.ShardSQL},
		{Name: "SHARED", Module: mod, Shards: sz.Shards, SQL: "DB"},
	}
	h, err := host.New(context.Background(), cfg)
	if err != nil {
		return nil, err
	}
	defer h.Close(context.Background())

	var ids atomic.Int64
	op := func(ns *host.Namespace) loadgen.Op {
		rngs := make([]*rand.Rand, sz.Workers)
		for w := range rngs {
			rngs[w] = rand.New(rand.NewPCG(uint64(w), 7))
		}
		return func(ctx context.Context, w, _ int) error {
			key := "k" + strconv.Itoa(rngs[w].IntN(sz.Shards*8))
			id := strconv.FormatInt(ids.Add(1), 10)
			resp, err := ns.Fetch(ctx, key, &abi.Request{Method: "POST", Path: "/entry?id=" + id + "&amount=1"})
			if err != nil {
				return err
			}
			if resp.Status != 200 {
				return fmt.Errorf("status %d: %s", resp.Status, resp.Body)
			}
			return nil
		}
	}
	measure := func(d time.Duration, op loadgen.Op) (sample, error) {
		return measureSample(sz.Workers, d, op, "inserts")
	}
	var sides []side
	for _, name := range []string{"PER_SHARD", "SHARED"} {
		ns, _ := h.Namespace(name)
		o := op(ns)
		if _, err := measure(sz.Warmup, o); err != nil {
			return nil, fmt.Errorf("%s warm-up: %w", name, err)
		}
		sides = append(sides, side{name, func() (sample, error) { return measure(sz.Side, o) }})
	}
	out, err := r.compare("shard_sql", sz.Rounds, sides...)
	if err != nil {
		return nil, err
	}
	pr, sr := rates(out[0]), rates(out[1])
	pm, sm := benchkit.Median(pr), benchkit.Median(sr)
	ratio := pm / sm
	res := &result{name: "shard_sql"}
	res.add("per_shard_per_s", pm)
	res.add("shared_per_s", sm)
	res.add("ratio", ratio)
	res.add("per_shard_cpu_us", cpuMicros(out[0]))
	res.add("shared_cpu_us", cpuMicros(out[1]))
	res.add("spread", max(benchkit.Spread(pr), benchkit.Spread(sr)))
	res.add("callers", sz.Workers)
	res.add("shards", sz.Shards)
	res.verdict(sz.Rounds, 1, true, ratio)
	res.headline = fmt.Sprintf("%.2f", ratio)
	res.note = fmt.Sprintf("%s vs %s durable inserts/s (a database per shard vs one shared SQLite file), %d in-process callers over %d shards",
		benchkit.FormatNum(pm), benchkit.FormatNum(sm), sz.Workers, sz.Shards)
	return res, nil
}
