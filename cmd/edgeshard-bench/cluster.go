package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/edgeshard/edgeshard/cluster"
	"github.com/edgeshard/edgeshard/internal/benchkit"
	"github.com/edgeshard/edgeshard/internal/etcdtest"
	"github.com/edgeshard/edgeshard/internal/loopback"
	"github.com/edgeshard/edgeshard/internal/server"
)

// cluster_forward: a POP of two hosts (in this process) on an etcd of its
// own. The counter example's POST /increment on one object, over HTTP,
// sent to the host that owns it (local) and to the other one, which
// forwards it (forwarded), sides alternating round by round: p50/p99 at
// a few closed-loop callers, and the process CPU per request (both hosts
// and the client: what a forward adds to the POP). Then the time of one
// planned move: the owner leaves (POST /admin/cluster/leave) with the
// object live — queue finished, storage shipped, ownership handed over.

func init() {
	figures = append(figures, figure{"cluster_forward", "measured: forwarded vs local p50/p99 and CPU, time of a planned move", (*runner).clusterForward})
}

const clusterConfig = `listen = %q
admin_listen = %q
admin_token = %q
data_dir = %q
cache_dir = %q
node_id = %q
sync_writes = true
idle_timeout = "1h"

[[durable_objects.bindings]]
name = "COUNTER"
module = %q
shards = 0

[edge]
enabled = false

[cluster]
etcd = [%q]
advertise = "http://%s"
lease_ttl = "5s"
secret = "bench"
`

func (r *runner) clusterForward(w *scratch) (*result, error) {
	mod, err := r.build.wasm("examples/counter", "-X main.version=bench")
	if err != nil {
		return nil, err
	}
	etcd, err := etcdtest.Start()
	if err != nil {
		return nil, err
	}
	w.onClose(etcd.Close) // after the servers stop (cleanups run last first)
	nodes := []string{"bench-a", "bench-b"}
	var srvs []*server.Server
	var addrs, admins []string
	for _, node := range nodes {
		a, err := loopback.FreeAddrs(2)
		if err != nil {
			return nil, err
		}
		addr, admin := a[0], a[1]
		s, err := r.startServerText(w, node, fmt.Sprintf(clusterConfig, addr, admin, adminToken, w.path(node), r.cacheDir, node, mod, etcd.Endpoint(), addr))
		if err != nil {
			return nil, err
		}
		srvs, addrs, admins = append(srvs, s), append(addrs, addr), append(admins, admin)
	}
	name := "hot"
	for i := 0; cluster.Owner("COUNTER", name, nodes) != nodes[0]; i++ {
		name = fmt.Sprintf("hot-%d", i)
	}
	client := newClient(8)
	op := func(addr string) func(context.Context, int, int) error {
		url := "http://" + addr + "/do/COUNTER/" + name + "/increment"
		return func(ctx context.Context, _, _ int) error {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				return fmt.Errorf("status %d", resp.StatusCode)
			}
			return nil
		}
	}
	local, forwarded := op(addrs[0]), op(addrs[1])
	const callers = 4
	measure := func(o func(context.Context, int, int) error, d time.Duration) (load, error) {
		l := closedLoop(callers, d, o)
		if l.Errors > 0 {
			return l, fmt.Errorf("%d of %d requests failed; first: %v", l.Errors, l.OK+l.Errors, l.FirstErr)
		}
		return l, nil
	}
	// Wait until both hosts see both members, then warm both paths.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := measure(forwarded, 100*time.Millisecond); err == nil {
			break
		} else if time.Now().After(deadline) {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
	}
	if _, err := measure(local, r.sz.Warmup); err != nil {
		return nil, err
	}
	var lp50, lp99, fp50, fp99, lcpu, fcpu []float64
	for i := 0; i < r.sz.Rounds; i++ {
		l, err := measure(local, r.sz.Side)
		if err != nil {
			return nil, fmt.Errorf("local: %w", err)
		}
		f, err := measure(forwarded, r.sz.Side)
		if err != nil {
			return nil, fmt.Errorf("forwarded: %w", err)
		}
		lp50, lp99 = append(lp50, ms(l.Stats.P50)), append(lp99, ms(l.Stats.P99))
		fp50, fp99 = append(fp50, ms(f.Stats.P50)), append(fp99, ms(f.Stats.P99))
		lcpu, fcpu = append(lcpu, us(l.cpuPerOp())), append(fcpu, us(f.cpuPerOp()))
		r.logf("cluster_forward round %d: local p50 %v p99 %v %v CPU/op; forwarded p50 %v p99 %v %v CPU/op", i+1,
			l.Stats.P50, l.Stats.P99, l.cpuPerOp(), f.Stats.P50, f.Stats.P99, f.cpuPerOp())
	}
	// One planned move: the owner leaves with the object live.
	t0 := time.Now()
	req, _ := http.NewRequest(http.MethodPost, "http://"+admins[0]+"/admin/cluster/leave?wait=30s", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("leave: %w", err)
	}
	resp.Body.Close()
	move := time.Since(t0)
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("leave: status %d", resp.StatusCode)
	}
	if _, err := measure(forwarded, 200*time.Millisecond); err != nil {
		return nil, fmt.Errorf("after the move: %w", err)
	}
	res := &result{name: "cluster_forward", met: true}
	res.add("local_p50_ms", benchkit.Median(lp50))
	res.add("local_p99_ms", benchkit.Median(lp99))
	res.add("forwarded_p50_ms", benchkit.Median(fp50))
	res.add("forwarded_p99_ms", benchkit.Median(fp99))
	res.add("local_cpu_us", benchkit.Median(lcpu))
	res.add("forwarded_cpu_us", benchkit.Median(fcpu))
	res.add("forwarded_over_local_p50", benchkit.Median(fp50)/benchkit.Median(lp50))
	res.add("forwarded_over_local_cpu", benchkit.Median(fcpu)/benchkit.Median(lcpu))
	res.add("move_ms", move)
	res.add("callers", callers)
	res.add("rounds", r.sz.Rounds)
	res.add("met", yesNo(res.met)) // the goal is the measurement: met once measured without a failed request
	res.headline = fmt.Sprintf("forwarded/local p50 %.2f×, CPU %.2f×; move %.0f ms", benchkit.Median(fp50)/benchkit.Median(lp50), benchkit.Median(fcpu)/benchkit.Median(lcpu), float64(move.Milliseconds()))
	res.note = fmt.Sprintf("counter example POST /increment over HTTP on one object, %d callers, two hosts in one process; move = the owner leaving with the object live (ship + hand-over)", callers)
	return res, nil
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
