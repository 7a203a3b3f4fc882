package cluster

import (
	"github.com/edgeshard/edgeshard/internal/prom"
	"github.com/prometheus/client_golang/prometheus"
)

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
		claims:      prom.CounterVec("edgeshard_cluster_claims_total", "Shard ownership claims by result: claimed, busy (held by another host), timeout (still held after claim_wait), unavailable (no host may serve it), error (etcd).", "result"),
		owned:       prom.Gauge("edgeshard_cluster_owned_shards", "Shards this host owns now."),
		moves:       prom.Counter("edgeshard_cluster_moves_total", "Planned moves of a shard off this host started (placement changed, or the host leaves)."),
		shipped:     prom.Counter("edgeshard_cluster_shipped_shards_total", "Per-name objects whose storage this host shipped to their next owner in a planned move."),
		leaseLosses: prom.Counter("edgeshard_cluster_lease_losses_total", "Sessions whose lease lapsed before it was renewed (the host was paused or cut off): every shard it owned was lost to it."),
		forwards:    prom.CounterVec("edgeshard_cluster_forwards_total", "Requests forwarded to the owning host, by outcome: ok (the owner answered, whatever the shard said), not_owner (asked again), error; WebSocket upgrades relayed to the owner: upgrade, upgrade_error (the owner could not be reached).", "outcome"),
		forwardDur:  prom.Histogram("edgeshard_cluster_forward_seconds", "Round trip of a forwarded request to its owner.", prom.LatencyBuckets()),
		served:      prom.CounterVec("edgeshard_cluster_forwarded_served_total", "Requests other hosts forwarded here, by outcome: ok, not_owner, error.", "outcome"),
	}
	if reg != nil {
		reg.MustRegister(m.claims, m.owned, m.moves, m.shipped, m.leaseLosses, m.forwards, m.forwardDur, m.served)
		reg.MustRegister(prom.GaugeFunc("edgeshard_cluster_members", "Live members of the POP, as this host sees them.", func() float64 {
			n.mu.Lock()
			defer n.mu.Unlock()
			return float64(len(n.members))
		}))
	}
	return m
}
