package server

import (
	"context"
	"errors"
	"time"

	"github.com/edgeshard/edgeshard/cluster"
	"github.com/edgeshard/edgeshard/host/admin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// clusterNode is the host's membership of a POP of several hosts
// ([cluster]): it opens the etcd session before the host starts (the
// host's Placement) and closes it, revoking the lease, after the host
// stopped.
type clusterNode struct {
	cfg  cluster.Config
	rt   *hostRuntime
	log  zerolog.Logger
	reg  prometheus.Registerer
	node *cluster.Node
}

func (c *clusterNode) Name() string { return "cluster" }

func (c *clusterNode) Start(ctx context.Context) error {
	c.cfg.NodeID = c.rt.cfg.NodeID
	n, err := cluster.Open(ctx, c.cfg, c.log, c.reg)
	if err != nil {
		return err
	}
	c.node = n
	c.rt.cfg.Placement = n
	return nil
}

func (c *clusterNode) Stop(context.Context) error { return c.node.Close() }

// ops are the admin API's handles on the node.
func (c *clusterNode) ops() *admin.ClusterOps {
	return &admin.ClusterOps{
		Status: func() any { return c.node.Status() },
		Evict: func(ctx context.Context, node string) (int, error) {
			n, err := c.node.Evict(ctx, node)
			if errors.Is(err, cluster.ErrLiveMember) {
				err = errors.Join(admin.ErrLiveNode, err)
			}
			return n, err
		},
		Leave: c.leave,
	}
}

// leave takes the host out of the POP (edgeshard cluster leave, and
// edgeshard drain on a POP), waiting up to wait for its shards to move.
func (c *clusterNode) leave(ctx context.Context, wait time.Duration) (any, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	return c.node.Leave(ctx)
}

// clusterJoin makes the host a member once its main listener serves, and,
// stopping first, takes it out of the POP: every shard it holds moves to
// its new owner (queue finished, buffers flushed, storage shipped), and
// every idle per-name object homed on it and sharded shard it keeps is
// shipped, while the listener still forwards requests to them.
type clusterJoin struct{ c *clusterNode }

func (j *clusterJoin) Name() string { return "cluster-join" }

func (j *clusterJoin) Start(ctx context.Context) error {
	j.c.node.SetHost(j.c.rt.h)
	return j.c.node.Join(ctx)
}

func (j *clusterJoin) Stop(ctx context.Context) error {
	_, err := j.c.node.Leave(ctx)
	return err
}
