package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/storage"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// claim is this node's ownership of one shard (host.Claim).
type claim struct {
	n       *Node
	sk      string
	id      storage.ShardID
	perName bool
	fence   string // the shard's row in the SQL fence table
	sess    *session
	epoch   int64
	fresh   bool
	since   time.Time

	leftoverKey string // a leftover claim's key (ClaimLeftover)

	mu       sync.Mutex
	attached bool // an actor runs under it (it releases it)
	moving   atomic.Bool
	released atomic.Bool
	done     chan struct{}
	doneOnce sync.Once
}

func (c *claim) Epoch() int64          { return c.epoch }
func (c *claim) Fresh() bool           { return c.fresh }
func (c *claim) Done() <-chan struct{} { return c.done }
func (c *claim) Moving() bool          { return c.moving.Load() }
func (c *claim) Fence() string         { return c.fence }

// leftover reports a leftover claim (ClaimLeftover): placement changes do
// not move it.
func (c *claim) leftover() bool { return c.fence != c.id.Name }

// Valid: not released, and the session's lease is renewed recently enough
// that it cannot have lapsed in etcd (the deadline less a margin).
func (c *claim) Valid() bool {
	return !c.released.Load() && c.n.sessionLive(c.sess)
}

// Attach records that an actor runs under the claim and will release it;
// false if the claim is already done (the actor gives the shard up).
func (c *claim) Attach() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.moving.Load() || c.released.Load() {
		return false
	}
	c.attached = true
	return true
}

func (c *claim) finish() { c.doneOnce.Do(func() { close(c.done) }) }

// startMove begins a planned move: the actor under the claim finishes,
// flushes and releases it; a claim no actor runs under is released now.
func (c *claim) startMove() {
	c.mu.Lock()
	first := !c.moving.Swap(true)
	attached := c.attached
	c.mu.Unlock()
	if !first {
		return
	}
	c.n.m.moves.Inc()
	c.n.log.Info().Str("shard", c.id.String()).Int64("epoch", c.epoch).Msg("shard moving off this host")
	c.finish()
	if !attached {
		go c.Release()
	}
}

// lose ends a claim whose session lapsed at until.
func (c *claim) lose(until time.Time) {
	if c.released.Swap(true) {
		return
	}
	c.finish()
	c.n.m.owned.Dec()
	c.n.log.Warn().Str("shard", c.name()).Int64("epoch", c.epoch).
		Int64("claimed_ns", c.since.UnixNano()).Int64("until_ns", until.UnixNano()).Msg("shard ownership lost")
}

// Release gives the ownership up: the owner key goes (if it is still this
// claim's), and the node forgets the claim.
func (c *claim) Release() {
	if c.released.Swap(true) {
		return
	}
	n := c.n
	c.forget()
	// The shard stopped here before Release: its interval ends now, before
	// the key goes and a new owner can start.
	until := time.Now()
	ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
	defer cancel()
	k := n.key("owners", c.sk)
	if c.leftoverKey != "" {
		k = c.leftoverKey
	}
	_, err := n.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", c.epoch)).Then(clientv3.OpDelete(k)).Commit()
	if err != nil {
		// The key lapses with the lease: the next owner waits for that.
		n.log.Warn().Err(err).Str("shard", c.id.String()).Msg("releasing the owner key failed; it lapses with the lease")
	}
	n.log.Info().Str("shard", c.name()).Int64("epoch", c.epoch).
		Int64("claimed_ns", c.since.UnixNano()).Int64("until_ns", until.UnixNano()).Msg("shard ownership released")
}

// name is the shard as logs name the claim: binding/shard, and @node for
// a leftover claim.
func (c *claim) name() string {
	if c.leftover() {
		return c.id.Namespace + "/" + c.fence
	}
	return c.id.String()
}

// Ship implements host.Shipper: the snapshot stream read from r goes to
// the member the placement gives the object to now (this node is leaving),
// then its home and ownership move there in one transaction.
func (c *claim) Ship(ctx context.Context, r io.Reader) error {
	n := c.n
	n.mu.Lock()
	var others []string
	for _, id := range n.liveMembers() {
		if id != n.cfg.NodeID {
			others = append(others, id)
		}
	}
	target := Place(c.sk, others)
	addr := n.members[target].Addr
	n.mu.Unlock()
	if target == "" {
		return errors.New("no other member to move the shard to")
	}
	if err := n.send(ctx, addr, c.id, r); err != nil {
		return err
	}
	until := time.Now()
	owner, home := n.key("owners", c.sk), n.key("homes", c.sk)
	resp, err := n.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(owner), "=", c.epoch), clientv3.Compare(clientv3.Value(home), "=", n.cfg.NodeID)).
		Then(clientv3.OpPut(home, target), clientv3.OpDelete(owner)).Commit()
	if err != nil {
		return fmt.Errorf("hand %s to %s: etcd: %w", c.id, target, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("hand %s to %s: its ownership or home changed meanwhile", c.id, target)
	}
	c.released.Store(true)
	c.forget()
	n.m.shipped.Inc()
	n.log.Info().Str("shard", c.id.String()).Int64("epoch", c.epoch).Str("to", target).
		Int64("claimed_ns", c.since.UnixNano()).Int64("until_ns", until.UnixNano()).Msg("shard ownership released")
	return nil
}

// forget ends a released claim here: Done closed, the node no longer
// holds it.
func (c *claim) forget() {
	c.finish()
	n := c.n
	n.mu.Lock()
	if n.claims[c.sk] == c {
		delete(n.claims, c.sk)
	}
	n.signal()
	n.mu.Unlock()
	n.m.owned.Dec()
}

// ClaimLeftover implements host.LeftoverPlacement: a claim of this node
// alone on what it keeps of a shard owned elsewhere (a key of its own,
// <prefix>/leftovers/<binding>/<shard>/<node>, under its lease), fenced in
// SQL as "<shard>@<node>", apart from the shard's owner.
func (n *Node) ClaimLeftover(ctx context.Context, id storage.ShardID) (host.Claim, error) {
	n.mu.Lock()
	s := n.sess
	n.mu.Unlock()
	if s == nil || !n.sessionLive(s) {
		return nil, fmt.Errorf("%w: %s: no live session", host.ErrShardUnavailable, id)
	}
	sk := shardKey(id)
	k := n.key("leftovers", sk+"/"+url.PathEscape(n.cfg.NodeID))
	resp, err := n.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, n.cfg.NodeID, clientv3.WithLease(s.id))).Commit()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: etcd: %w", host.ErrShardUnavailable, id, err)
	}
	if !resp.Succeeded {
		return nil, fmt.Errorf("%w: %s: a leftover flush of it runs already", host.ErrShardUnavailable, id)
	}
	c := &claim{n: n, sk: "leftover:" + sk, id: id, fence: id.Name + "@" + n.cfg.NodeID, sess: s,
		epoch: resp.Header.Revision, since: time.Now(), done: make(chan struct{}), leftoverKey: k}
	n.mu.Lock()
	n.claims[c.sk] = c
	n.mu.Unlock()
	n.m.owned.Inc()
	n.log.Info().Str("shard", c.name()).Int64("epoch", c.epoch).Msg("leftover flush of a shard owned elsewhere")
	return c, nil
}

// decision is where the placement puts a shard now.
type decision struct {
	here        bool
	homeMissing bool   // a per-name object without a home: claiming it makes this node its home
	node, addr  string // the owner elsewhere
	unavailable string // why no member may serve it now
	wait        bool   // it is moving: ask again
}

// decide places a shard from the mirror (n.mu held).
func (n *Node) decide(sk string, perName bool) decision {
	me := n.cfg.NodeID
	eligible := n.sess != nil && !n.leaving && n.members[me].Node != ""
	members := n.liveMembers()
	target := ""
	var d decision
	if perName {
		if home := n.homes[sk]; home != "" {
			target = home
			m, live := n.members[home]
			switch {
			case m.Leaving || (home == me && n.leaving):
				return decision{wait: true} // its host ships it to the next
			case !live && home != me:
				return decision{unavailable: fmt.Sprintf("its host %s is not a live member (it returns, or an operator runs edgeshard cluster evict %s)", home, home)}
			}
		} else {
			d.homeMissing = true
		}
	}
	if target == "" {
		target = Place(sk, members)
	}
	switch {
	case target == me && eligible:
		d.here = true
		return d
	case target == me && n.join && !n.leaving:
		return decision{wait: true} // this node is between sessions: it joins again
	case target == me:
		return decision{unavailable: "its host (this one) is leaving or not a member"}
	case target == "":
		return decision{unavailable: "the POP has no live member"}
	}
	return decision{node: target, addr: n.members[target].Addr}
}

// Claim implements host.Placement: the claim held here, a new one
// acquired when the placement gives the shard to this node (waiting up to
// ClaimWait for a previous owner to let it go), or where it is.
func (n *Node) Claim(ctx context.Context, id storage.ShardID, perName bool) (host.Claim, error) {
	sk := shardKey(id)
	wait := time.NewTimer(n.cfg.ClaimWait)
	defer wait.Stop()
	for {
		n.mu.Lock()
		if c := n.claims[sk]; c != nil && !c.moving.Load() && c.Valid() {
			n.mu.Unlock()
			return c, nil
		}
		d := n.decide(sk, perName)
		sess, changed := n.sess, n.changed
		n.mu.Unlock()
		switch {
		case d.wait:
		case d.unavailable != "":
			n.m.claims.WithLabelValues("unavailable").Inc()
			return nil, fmt.Errorf("%w: %s: %s", host.ErrShardUnavailable, id, d.unavailable)
		case !d.here:
			return nil, &host.ElsewhereError{Node: d.node, Owner: d.addr}
		}
		if d.here {
			c, err := n.acquire(ctx, sk, id, perName, d.homeMissing, sess)
			if c != nil || err != nil {
				return c, err
			}
		}
		// Held by another node (a move in progress) or a race: wait for
		// the mirror to change.
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %s: %w", host.ErrShardUnavailable, id, ctx.Err())
		case <-wait.C:
			n.m.claims.WithLabelValues("timeout").Inc()
			return nil, fmt.Errorf("%w: %s: still held by its previous owner after %s", host.ErrShardUnavailable, id, n.cfg.ClaimWait)
		case <-changed:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// acquire runs the ownership transaction: the owner key is created under
// the session's lease if no one holds it (and, for a per-name object, its
// home is this node, or it had none and becomes this node). (nil, nil):
// someone else holds it.
func (n *Node) acquire(ctx context.Context, sk string, id storage.ShardID, perName, homeMissing bool, s *session) (*claim, error) {
	if s == nil || !n.sessionLive(s) {
		return nil, nil // a lapsed session claims nothing: wait for the next
	}
	ok, home := n.key("owners", sk), n.key("homes", sk)
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(ok), "=", 0)}
	ops := []clientv3.Op{clientv3.OpPut(ok, n.cfg.NodeID, clientv3.WithLease(s.id))}
	if perName && homeMissing {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(home), "=", 0))
		ops = append(ops, clientv3.OpPut(home, n.cfg.NodeID))
	} else if perName {
		cmps = append(cmps, clientv3.Compare(clientv3.Value(home), "=", n.cfg.NodeID))
	}
	tctx, cancel := context.WithTimeout(ctx, n.cfg.LeaseTTL)
	defer cancel()
	resp, err := n.cli.Txn(tctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		n.m.claims.WithLabelValues("error").Inc()
		return nil, fmt.Errorf("%w: %s: etcd: %w", host.ErrShardUnavailable, id, err)
	}
	if !resp.Succeeded {
		n.m.claims.WithLabelValues("busy").Inc()
		return nil, nil
	}
	c := &claim{n: n, sk: sk, id: id, perName: perName, fence: id.Name, sess: s, epoch: resp.Header.Revision, fresh: perName && homeMissing,
		since: time.Now(), done: make(chan struct{})}
	n.mu.Lock()
	if old := n.claims[sk]; old != nil {
		old.finish() // a lapsed or moving claim of the same shard: its actor is leaving
	}
	n.claims[sk] = c
	n.mu.Unlock()
	n.m.claims.WithLabelValues("claimed").Inc()
	n.m.owned.Inc()
	n.log.Info().Str("shard", id.String()).Int64("epoch", c.epoch).Bool("fresh", c.fresh).
		Int64("claimed_ns", c.since.UnixNano()).Msg("shard ownership claimed")
	return c, nil
}
