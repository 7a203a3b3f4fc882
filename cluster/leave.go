package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/storage"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// LeaveReport says what Leave moved off the host.
type LeaveReport struct {
	Node string `json:"node"`
	// Left: the member key is gone; the host serves nothing itself and
	// forwards every request until it stops.
	Left bool `json:"left"`
	// Moved counts the shards whose actor ran here: their queue finished,
	// their buffers flushed, their storage shipped, their ownership
	// released.
	Moved int `json:"moved"`
	// Shipped counts the shards no actor ran here whose storage was
	// shipped to their next owner: idle per-name objects homed here, and
	// sharded namespaces' shards the placement gave this host.
	Shipped int `json:"shipped"`
	// Kept lists the per-name objects still homed here (binding/name):
	// their move failed (logged); they are unavailable while this host is
	// down, and served again when it returns.
	Kept     []string      `json:"kept,omitempty"`
	Duration time.Duration `json:"duration_ns"`
}

// Leave takes the node out of the placement and moves every shard off
// it, waiting for them until ctx ends; requests keep being forwarded to
// the new owners meanwhile:
//
//  1. the sharded namespaces' shards the placement gives this node and no
//     actor runs here, whose storage is here, are claimed first (before
//     the other members stop placing them here), to ship them;
//  2. the member is marked leaving: the placement gives it nothing, and
//     the others wait for its per-name objects rather than call them
//     gone;
//  3. every shard claimed here moves (planned move: queue finished,
//     buffers flushed, storage shipped, ownership released; a sharded
//     shard no actor runs keeps its claim and is shipped as it is);
//  4. every idle shard — those of 1, and every per-name object homed here
//     that no actor runs — is shipped (host.Namespace.ShipShard), a few
//     at a time;
//  5. once no claim is left the member key goes.
//
// The host is SetHost's (none: only the shards actors run move). An
// object whose move fails stays homed here, as the report's Kept says.
func (n *Node) Leave(ctx context.Context) (LeaveReport, error) {
	t0 := time.Now()
	h := n.host.Load()
	rep := LeaveReport{Node: n.cfg.NodeID}
	var idle []idleShard
	if h != nil {
		idle = n.claimShardedToShip(ctx, h)
	}
	n.mu.Lock()
	n.leaving = true // from now on every change of the mirror moves the claims (replace)
	s := n.sess
	for _, c := range n.claims {
		if !c.moving.Load() && !c.leftover() {
			rep.Moved++
		}
	}
	n.mu.Unlock()
	if s != nil {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := n.putMember(pctx, s); err != nil {
			n.log.Warn().Err(err).Msg("marking this member leaving failed")
		}
		cancel()
	}
	n.mu.Lock()
	n.replace()
	n.mu.Unlock()
	if h != nil {
		rep.Shipped = n.shipIdle(ctx, h, idle)
	}
	for {
		n.mu.Lock()
		left, ch := len(n.claims), n.changed
		n.mu.Unlock()
		if left == 0 {
			break
		}
		select {
		case <-ctx.Done():
			rep.Duration = time.Since(t0)
			return rep, fmt.Errorf("cluster: leave: %d shard(s) still here: %w", left, ctx.Err())
		case <-ch:
		case <-time.After(100 * time.Millisecond):
		}
	}
	n.mu.Lock()
	n.join = false
	n.mu.Unlock()
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err := n.cli.Delete(dctx, n.key("members", n.cfg.NodeID))
	cancel()
	if err != nil {
		n.log.Warn().Err(err).Msg("removing the member key failed; it lapses with the lease")
	}
	rep.Left = true
	kctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	rep.Kept, err = n.homedHere(kctx)
	cancel()
	if err != nil {
		n.log.Warn().Err(err).Msg("listing the per-name objects still homed here failed")
	}
	rep.Duration = time.Since(t0)
	if len(rep.Kept) > 0 {
		n.log.Warn().Int("moved", rep.Moved).Int("shipped", rep.Shipped).Int("kept_here", len(rep.Kept)).Strs("kept", rep.Kept).Dur("took_ms", rep.Duration).
			Msg("left the POP; per-name objects still homed here (their move failed, or no other member): unavailable while this host is down")
		return rep, nil
	}
	n.log.Info().Int("moved", rep.Moved).Int("shipped", rep.Shipped).Int("kept_here", 0).Dur("took_ms", rep.Duration).
		Msg("left the POP: every shard moved off this host")
	return rep, nil
}

// idleShard is a shard Leave ships that no actor runs here.
type idleShard struct {
	ns *host.Namespace
	id storage.ShardID
	sk string
	c  *claim // taken before the node is marked leaving (sharded), or nil
}

// claimShardedToShip claims, to ship them, the shards of h's sharded
// namespaces that the placement gives this node, that no actor runs here
// and whose storage is here (an actor evicted for idleness released its
// claim; its shard's storage stays). Claimed before the node is marked
// leaving: the next owner would otherwise start the shard on its own
// copy first.
func (n *Node) claimShardedToShip(ctx context.Context, h *host.Host) []idleShard {
	n.mu.Lock()
	members, s, leaving := n.liveMembers(), n.sess, n.leaving
	held := make(map[string]bool, len(n.claims))
	for sk := range n.claims {
		held[sk] = true
	}
	n.mu.Unlock()
	if leaving {
		return nil
	}
	var out []idleShard
	for _, ns := range h.Namespaces() {
		for i := range ns.Shards() {
			id := storage.ShardID{Namespace: ns.Name(), Name: strconv.Itoa(i)}
			sk := shardKey(id)
			if held[sk] || Place(sk, members) != n.cfg.NodeID {
				continue
			}
			if keeps, err := ns.Keeps(id.Name); err != nil || !keeps {
				if err != nil {
					n.log.Warn().Err(err).Str("shard", id.String()).Msg("reading the shard's storage failed; it is not shipped")
				}
				continue
			}
			c, err := n.acquire(ctx, sk, id, false, false, s, true)
			if err != nil || c == nil {
				n.log.Warn().AnErr("error", err).Str("shard", id.String()).Msg("claiming an idle shard to ship it failed; what this host keeps of it stays here")
				continue
			}
			out = append(out, idleShard{ns: ns, id: id, sk: sk, c: c})
		}
	}
	return out
}

// leaveShipConcurrency bounds the idle shards Leave ships at once;
// leaveShipRounds how often it looks again for per-name objects homed
// here (one claimed as the node began to leave is released a moment
// later).
const (
	leaveShipConcurrency = 8
	leaveShipRounds      = 3
)

// shipIdle ships the sharded shards claimed before and every per-name
// object homed here that no actor runs, leaveShipConcurrency at a time,
// and returns how many it shipped.
func (n *Node) shipIdle(ctx context.Context, h *host.Host, sharded []idleShard) int {
	if len(n.others()) == 0 {
		for _, it := range sharded {
			it.c.Release()
		}
		if kept, _ := n.homedHere(ctx); len(kept)+len(sharded) > 0 {
			n.log.Warn().Int("objects", len(kept)).Int("shards", len(sharded)).Msg("no other member to ship idle shards to: they stay on this host")
		}
		return 0
	}
	shipped := 0
	skip := map[string]bool{} // failed, or not shippable: not tried again
	todo := sharded
	for round := 0; round < leaveShipRounds && ctx.Err() == nil; round++ {
		if round > 0 {
			time.Sleep(200 * time.Millisecond)
		}
		objs, err := n.idleObjects(ctx, h, skip)
		if err != nil {
			n.log.Warn().Err(err).Msg("listing the per-name objects homed here failed")
		}
		todo = append(todo, objs...)
		if len(todo) == 0 {
			break
		}
		ok, failed := n.shipAll(ctx, todo)
		shipped += ok
		for _, sk := range failed {
			skip[sk] = true
		}
		todo = nil
	}
	return shipped
}

// idleObjects returns the per-name objects of h's bindings that etcd says
// are homed here, that no claim of this node holds and that skip does
// not name (an object of a binding this host does not serve is added to
// skip).
func (n *Node) idleObjects(ctx context.Context, h *host.Host, skip map[string]bool) ([]idleShard, error) {
	homed, err := n.homedHere(ctx)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []idleShard
	for _, sk := range homed {
		if n.claims[sk] != nil || skip[sk] {
			continue
		}
		b, name, _ := strings.Cut(sk, "/")
		binding, err1 := url.PathUnescape(b)
		shard, err2 := url.PathUnescape(name)
		ns, ok := h.Namespace(binding)
		if err1 != nil || err2 != nil || !ok || ns.Shards() != 0 {
			skip[sk] = true
			n.log.Warn().Str("object", sk).Msg("a per-name object homed here of a binding this host does not serve: it stays homed here")
			continue
		}
		out = append(out, idleShard{ns: ns, id: storage.ShardID{Namespace: binding, Name: shard}, sk: sk})
	}
	return out, nil
}

// shipAll ships todo, leaveShipConcurrency at a time, logging progress
// every few seconds; it returns how many it shipped and the shards whose
// ship failed (a shard whose ownership was busy is not one: it is looked
// at again).
func (n *Node) shipAll(ctx context.Context, todo []idleShard) (int, []string) {
	n.log.Info().Int("shards", len(todo)).Msg("shipping the idle shards of this host to their next owners")
	var done atomic.Int64
	var mu sync.Mutex
	var failed []string
	stop := make(chan struct{})
	go func() {
		tick := time.NewTicker(2 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				mu.Lock()
				nf := len(failed)
				mu.Unlock()
				n.log.Info().Int64("shipped", done.Load()).Int("failed", nf).Int("of", len(todo)).Msg("shipping idle shards")
			}
		}
	}()
	sem := make(chan struct{}, leaveShipConcurrency)
	var wg sync.WaitGroup
	for _, it := range todo {
		if ctx.Err() != nil {
			if it.c != nil {
				it.c.Release()
			}
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			err := n.shipOne(ctx, it)
			switch {
			case err == nil:
				done.Add(1)
			case errors.Is(err, errBusy):
			default:
				n.log.Error().Err(err).Str("shard", it.id.String()).Msg("shipping an idle shard failed; it stays on this host")
				mu.Lock()
				failed = append(failed, it.sk)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(stop)
	n.log.Info().Int64("shipped", done.Load()).Int("failed", len(failed)).Msg("idle shards shipped")
	return int(done.Load()), failed
}

// errBusy: an idle object's ownership is held (by an actor starting
// here, or a claim being released): Leave looks again.
var errBusy = errors.New("its ownership is held; trying again")

// shipOne ships one idle shard under its claim (taken now for a per-name
// object: its home must be this node), and releases the claim if the
// ship fails.
func (n *Node) shipOne(ctx context.Context, it idleShard) error {
	c := it.c
	if c == nil {
		n.mu.Lock()
		s := n.sess
		n.mu.Unlock()
		var err error
		if c, err = n.acquire(ctx, it.sk, it.id, true, false, s, true); err != nil {
			return err
		} else if c == nil {
			return errBusy
		}
	}
	if err := it.ns.ShipShard(it.id.Name, c); err != nil {
		c.Release()
		return err
	}
	return nil
}

// homedHere returns the per-name objects (escaped binding/name) etcd
// says are homed on this node.
func (n *Node) homedHere(ctx context.Context) ([]string, error) {
	resp, err := n.cli.Get(ctx, n.cfg.Prefix+"/homes/", clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	var out []string
	for _, kv := range resp.Kvs {
		if string(kv.Value) == n.cfg.NodeID {
			out = append(out, strings.TrimPrefix(string(kv.Key), n.cfg.Prefix+"/homes/"))
		}
	}
	sort.Strings(out)
	return out, nil
}
