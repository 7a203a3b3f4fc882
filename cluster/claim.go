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
	"go.etcd.io/etcd/api/v3/mvccpb"
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

// Lapsed: the session's lease may have ended (host.Claim).
func (c *claim) Lapsed() bool { return !c.n.sessionLive(c.sess) }

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
// flushes, ships and releases it; a sharded namespace's shard no actor
// runs under has its storage shipped now (moveIdle), a per-name object's
// claim no actor runs under is released now (its home moves with Ship).
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
	switch {
	case attached:
	case c.perName:
		go c.Release()
	default:
		go c.moveIdle()
	}
}

// Detach implements host.Detacher: the shard's actor left for idleness.
// A per-name object's claim is released (its home keeps the object
// here). A sharded namespace's shard stays claimed, without an actor, so
// that when the placement moves it its storage moves too (moveIdle), as
// it would with an actor; the next event here attaches an actor again.
func (c *claim) Detach() {
	if c.perName {
		c.Release()
		return
	}
	c.mu.Lock()
	c.attached = false
	moving := c.moving.Load()
	c.mu.Unlock()
	if moving {
		go c.moveIdle() // the move began as the actor left
	}
}

// moveIdleWait bounds how long moveIdle waits for an actor that runs the
// shard here to hand it off.
const moveIdleWait = 30 * time.Second

// moveIdle moves a sharded namespace's shard that no actor runs under the
// claim off this node: its storage shipped to the next owner
// (host.Namespace.ShipShard, under the claim, which Ship releases), or,
// if that fails, the claim released (what this host keeps of the shard
// stays, a leftover). An actor that started under the claim before the
// move hands the shard off itself.
func (c *claim) moveIdle() {
	n := c.n
	var ns *host.Namespace
	if h := n.host.Load(); h != nil {
		ns, _ = h.Namespace(c.id.Namespace)
	}
	if ns == nil || !c.Valid() {
		c.Release() // no host to ship from, or the lease lapsed: the shard is lost here, not moved
		return
	}
	deadline := time.Now().Add(moveIdleWait)
	for {
		err := ns.ShipShard(c.id.Name, c)
		switch {
		case err == nil, c.released.Load():
			return
		case errors.Is(err, host.ErrNotOwner) && time.Now().Before(deadline) && n.ctx.Err() == nil:
			time.Sleep(50 * time.Millisecond) // an actor runs it: it hands the shard off
			continue
		case errors.Is(err, host.ErrShardKept):
			n.log.Info().Err(err).Str("shard", c.id.String()).Msg("the shard's next owner resumes its own copy; this host keeps what it has of the shard as a leftover")
		case errors.Is(err, host.ErrShardUnavailable):
			n.log.Info().Err(err).Str("shard", c.id.String()).Msg("no other member to ship the idle shard to; it stays on this host")
		default:
			n.log.Error().Err(err).Str("shard", c.id.String()).Msg("shipping an idle shard to its next owner failed; what this host keeps of it stays here")
		}
		c.Release()
		return
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
	defer n.keyOp(c.sk)() // before forget: the key is not an orphan while it goes
	c.forget()
	// The shard stopped here before Release: its interval ends now, before
	// the key goes and a new owner can start — or, if the session is no
	// longer live (the host was paused past its lease, and a move or the
	// watch saw it before the renewal did), at the session's deadline:
	// nothing of the shard committed here after it, and a new owner may
	// have started since.
	until := time.Now()
	if d := n.wall(c.sess.deadline.Load()); !n.sessionLive(c.sess) && d.Before(until) {
		until = d
	}
	ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
	defer cancel()
	k := n.key("owners", c.sk)
	if c.leftoverKey != "" {
		k = c.leftoverKey
	}
	if err := n.deleteOwned(ctx, k, c.epoch); err != nil {
		// The key stays until the session ends (the next owner waits for
		// that) or this node takes it back (orphan).
		n.log.Warn().Err(err).Str("shard", c.name()).Msg("releasing the owner key failed; it stays until this host's lease ends or it claims the shard again")
	}
	n.log.Info().Str("shard", c.name()).Int64("epoch", c.epoch).
		Int64("claimed_ns", c.since.UnixNano()).Int64("until_ns", until.UnixNano()).Msg("shard ownership released")
}

// deleteOwned deletes owner key k if it is still the ownership of epoch,
// trying again (etcd's client retries within each attempt) while ctx lasts.
func (n *Node) deleteOwned(ctx context.Context, k string, epoch int64) error {
	for {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := n.cli.Txn(actx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", epoch)).Then(clientv3.OpDelete(k)).Commit()
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
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
// the member the placement gives the shard to now (this node leaves, or
// the placement moved the shard), then the ownership moves there: a
// per-name object's home and ownership in one transaction; a sharded
// namespace's shard, which has no home, by releasing the owner key (the
// next owner claims it and resumes the stream's copy).
func (c *claim) Ship(ctx context.Context, r io.Reader) error {
	n := c.n
	if !c.Valid() {
		return fmt.Errorf("ship %s: its ownership lapsed", c.id)
	}
	target, addr := n.successor(c.sk)
	if target == "" {
		return fmt.Errorf("%w: %s: no other member to move it to", host.ErrShardUnavailable, c.id)
	}
	if err := n.send(ctx, addr, c.id, r); err != nil {
		return err
	}
	n.m.shipped.Inc()
	if !c.perName {
		// The stream is the shard's copy on its next owner now, whatever
		// becomes of the owner key (released here, or lapsed with the
		// lease): this host's copy is erased.
		n.log.Info().Str("shard", c.id.String()).Int64("epoch", c.epoch).Str("to", target).Msg("shard shipped; releasing its ownership")
		c.Release()
		return nil
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
	n.log.Info().Str("shard", c.id.String()).Int64("epoch", c.epoch).Str("to", target).
		Int64("claimed_ns", c.since.UnixNano()).Int64("until_ns", until.UnixNano()).Msg("shard ownership released")
	return nil
}

// successor returns the member a shard moving off this node goes to: the
// one the placement gives it among the live members but this node, and
// its address; "" if there is none.
func (n *Node) successor(sk string) (node, addr string) {
	others := n.others()
	n.mu.Lock()
	defer n.mu.Unlock()
	node = Place(sk, others)
	return node, n.members[node].Addr
}

// others returns the live members but this node.
func (n *Node) others() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for _, id := range n.liveMembers() {
		if id != n.cfg.NodeID {
			out = append(out, id)
		}
	}
	return out
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

// orphan returns the epoch of the shard's owner key if it is this node's,
// under session s, and no claim of this node holds it (0 otherwise): an
// ownership this node acquired without learning it, which it takes back.
// kvs is the key as a transaction read it (nil: not read).
func (n *Node) orphan(sk string, s *session, perName bool, kvs []*mvccpb.KeyValue) int64 {
	// kvs (read by a transaction that may have run before a release here
	// deleted the key) only says whether to look; the key is confirmed in
	// etcd once this node is seen to hold no claim of the shard and to run
	// no other transaction of it, and that is checked again after.
	if kvs != nil && (len(kvs) != 1 || string(kvs[0].Value) != n.cfg.NodeID || clientv3.LeaseID(kvs[0].Lease) != s.id) {
		return 0
	}
	busy := func() bool {
		n.mu.Lock()
		defer n.mu.Unlock()
		c := n.claims[sk]
		return (c != nil && !c.released.Load()) || n.keyOps[sk] > 1
	}
	if busy() {
		return 0 // a claim here holds it, or another acquire or release of it runs: it may be that one's
	}
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.LeaseTTL)
	defer cancel()
	owner, home := n.key("owners", sk), n.key("homes", sk)
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.Value(owner), "=", n.cfg.NodeID), clientv3.Compare(clientv3.LeaseValue(owner), "=", s.id)}
	if perName {
		// And the object is still homed here (it always is, unless it was
		// shipped or evicted since).
		cmps = append(cmps, clientv3.Compare(clientv3.Value(home), "=", n.cfg.NodeID))
	}
	r, err := n.cli.Txn(ctx).If(cmps...).Then(clientv3.OpGet(owner)).Commit()
	if err != nil || !r.Succeeded || len(r.Responses[0].GetResponseRange().Kvs) != 1 || busy() {
		return 0
	}
	epoch := r.Responses[0].GetResponseRange().Kvs[0].CreateRevision
	n.log.Warn().Str("shard", sk).Int64("epoch", epoch).Msg("an owner key of this node's that no claim here held: taken back")
	return epoch
}

// keyOp records an ownership transaction of shard key sk in flight here
// until the returned func is called: a key this node holds while one runs
// is not an orphan (orphan), it may be that transaction's.
func (n *Node) keyOp(sk string) (done func()) {
	n.mu.Lock()
	n.keyOps[sk]++
	n.mu.Unlock()
	return func() {
		n.mu.Lock()
		if n.keyOps[sk]--; n.keyOps[sk] <= 0 {
			delete(n.keyOps, sk)
		}
		n.mu.Unlock()
	}
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
			c, err := n.acquire(ctx, sk, id, perName, d.homeMissing, sess, false)
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
// someone else holds it, or the node began to leave meanwhile. ship takes
// the shard only to move it off (Leave): the claim is moving from the
// start, never handed to an actor.
func (n *Node) acquire(ctx context.Context, sk string, id storage.ShardID, perName, homeMissing bool, s *session, ship bool) (*claim, error) {
	if s == nil || !n.sessionLive(s) {
		return nil, nil // a lapsed session claims nothing: wait for the next
	}
	defer n.keyOp(sk)()
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
	resp, err := n.cli.Txn(tctx).If(cmps...).Then(ops...).Else(clientv3.OpGet(ok)).Commit()
	var epoch int64
	switch {
	case err != nil:
		// The transaction may have landed with its answer lost: a key of
		// this node's under this session that no claim here knows would
		// hold the shard until the session ends. Look.
		epoch = n.orphan(sk, s, perName, nil)
		if epoch == 0 {
			n.m.claims.WithLabelValues("error").Inc()
			return nil, fmt.Errorf("%w: %s: etcd: %w", host.ErrShardUnavailable, id, err)
		}
	case !resp.Succeeded:
		// Held: by another node, or by this one under this session with no
		// claim here knowing it (an earlier transaction whose answer was
		// lost, a release that could not delete it): that one is taken
		// back.
		if epoch = n.orphan(sk, s, perName, resp.Responses[0].GetResponseRange().Kvs); epoch == 0 {
			n.m.claims.WithLabelValues("busy").Inc()
			return nil, nil
		}
	default:
		epoch = resp.Header.Revision
	}
	c := &claim{n: n, sk: sk, id: id, perName: perName, fence: id.Name, sess: s, epoch: epoch, fresh: perName && homeMissing,
		since: time.Now(), done: make(chan struct{})}
	c.moving.Store(ship)
	n.mu.Lock()
	if old := n.claims[sk]; old != nil {
		old.finish() // a lapsed or moving claim of the same shard: its actor is leaving
	}
	n.claims[sk] = c
	late := n.leaving && !ship
	n.mu.Unlock()
	n.m.claims.WithLabelValues("claimed").Inc()
	n.m.owned.Inc()
	n.log.Info().Str("shard", id.String()).Int64("epoch", c.epoch).Bool("fresh", c.fresh).Bool("to_ship", ship).
		Int64("claimed_ns", c.since.UnixNano()).Msg("shard ownership claimed")
	if late {
		// Leave began after the placement gave the shard here and before
		// the claim was in the map (its moves missed it): give it up.
		c.Release()
		return nil, nil
	}
	return c, nil
}
