package cluster

import "github.com/prometheus/client_golang/prometheus"

// metrics are the cluster's Prometheus collectors.
type metrics struct {
	claims      *prometheus.CounterVec
	owned       prometheus.Gauge
	moves       prometheus.Counter
	shipped     prometheus.Counter
	leaseLosses prometheus.Counter
	forwards    *prometheus.CounterVec
	forwardDur  prometheus.Histogram
	served      *prometheus.CounterVec
}

func newMetrics(n *Node, reg prometheus.Registerer) *metrics {
	m := &metrics{
		claims: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeshard_cluster_claims_total", Help: "Shard ownership claims by result: claimed, busy (held by another host), timeout (still held after claim_wait), unavailable (no host may serve it), error (etcd).",
		}, []string{"result"}),
		owned: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edgeshard_cluster_owned_shards", Help: "Shards this host owns now.",
		}),
		moves: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgeshard_cluster_moves_total", Help: "Planned moves of a shard off this host started (placement changed, or the host leaves).",
		}),
		shipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgeshard_cluster_shipped_shards_total", Help: "Per-name objects whose storage this host shipped to their next owner in a planned move.",
		}),
		leaseLosses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "edgeshard_cluster_lease_losses_total", Help: "Sessions whose lease lapsed before it was renewed (the host was paused or cut off): every shard it owned was lost to it.",
		}),
		forwards: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeshard_cluster_forwards_total", Help: "Requests forwarded to the owning host, by outcome: ok (the owner answered, whatever the shard said), not_owner (asked again), error; WebSocket upgrades relayed to the owner: upgrade, upgrade_error (the owner could not be reached).",
		}, []string{"outcome"}),
		forwardDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "edgeshard_cluster_forward_seconds", Help: "Round trip of a forwarded request to its owner.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}),
		served: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeshard_cluster_forwarded_served_total", Help: "Requests other hosts forwarded here, by outcome: ok, not_owner, error.",
		}, []string{"outcome"}),
	}
	if reg != nil {
		reg.MustRegister(m.claims, m.owned, m.moves, m.shipped, m.leaseLosses, m.forwards, m.forwardDur, m.served)
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "edgeshard_cluster_members", Help: "Live members of the POP, as this host sees them.",
		}, func() float64 {
			n.mu.Lock()
			defer n.mu.Unlock()
			return float64(len(n.members))
		}))
	}
	return m
}
