// Package cluster makes a host one of several in a POP: membership and
// shard ownership through etcd (leases, transactions, watches), placement
// by rendezvous hashing over the live members, the ownership key's
// revision as the shard's epoch (its fencing token), and forwarding
// between hosts. It implements host.Placement; the host knows nothing of
// etcd.
//
// Keys, under the POP's prefix P:
//
//	P/members/<node>          {"node","addr","since"}   under the node's lease
//	P/owners/<binding>/<shard> <node>                   under the owner's lease; its create revision is the epoch
//	P/homes/<binding>/<name>   <node>                   a per-name object's host: where its storage is (no lease)
//
// binding and shard are path-escaped. A host serves a shard only while it
// holds the shard's owner key under a lease it has renewed recently
// enough (Claim.Valid); acquiring the key is one etcd transaction.
package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/storage"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Node is this host's membership of the POP and the shards it owns.
type Node struct {
	cfg  Config
	log  zerolog.Logger
	cli  *clientv3.Client
	host atomic.Pointer[host.Host] // the host whose idle shards moves ship (SetHost)
	base time.Time                 // deadlines are monotonic offsets from base
	m    *metrics
	peer *http.Client

	mu      sync.Mutex
	sess    *session
	members map[string]Member // the mirror of P/members
	owners  map[string]string // the mirror of P/owners: shard key → node
	homes   map[string]string // the mirror of P/homes
	claims  map[string]*claim // held here, by shard key
	keyOps  map[string]int    // ownership transactions in flight here (acquire, release), by shard key
	join    bool              // the member key is wanted (Join, until Leave)
	leaving bool              // Leave: nothing new is claimed here
	changed chan struct{}     // closed and replaced on every change of the mirror or the session

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Member is one live host of the POP.
type Member struct {
	Node  string    `json:"node"`
	Addr  string    `json:"addr"`
	Since time.Time `json:"since"`
	// Leaving: the member moves its shards off (Leave); the placement
	// gives it nothing, and its per-name objects are moving, not gone.
	Leaving bool `json:"leaving,omitempty"`
}

// session is one etcd lease of the node. deadline is when the lease may
// have lapsed in etcd, as far as the node knows: the start of its last
// successful renewal plus the TTL granted (monotonic ns since Node.base).
type session struct {
	id       clientv3.LeaseID
	deadline atomic.Int64
	lost     chan struct{}
	lostOnce sync.Once
}

func (s *session) markLost() bool {
	first := false
	s.lostOnce.Do(func() { close(s.lost); first = true })
	return first
}

func (s *session) isLost() bool {
	select {
	case <-s.lost:
		return true
	default:
		return false
	}
}

// Open connects to etcd and starts the node's session (its lease) and its
// mirror of the POP's keys. The node is not a member until Join. A lease
// a previous run of this node left (it died without leaving) is revoked:
// the data directory's lock says that run is over, so its shards are free
// at once rather than after its TTL.
func Open(ctx context.Context, cfg Config, log zerolog.Logger, reg prometheus.Registerer) (*Node, error) {
	cfg = cfg.withDefaults()
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if cfg.NodeID == "" {
		return nil, errors.New("cluster: no node id")
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: cfg.Etcd, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("cluster: etcd %v: %w", cfg.Etcd, err)
	}
	n := &Node{cfg: cfg, log: log.With().Str("component", "cluster").Str("node", cfg.NodeID).Logger(), cli: cli, base: time.Now(),
		members: map[string]Member{}, owners: map[string]string{}, homes: map[string]string{}, claims: map[string]*claim{}, keyOps: map[string]int{},
		changed: make(chan struct{}), peer: newPeerClient()}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.m = newMetrics(n, reg)
	rev, err := n.load(ctx)
	if err != nil {
		cli.Close()
		return nil, fmt.Errorf("cluster: etcd %v: %w", cfg.Etcd, err)
	}
	n.revokeStale(ctx)
	sess, err := n.grant(ctx)
	if err != nil {
		cli.Close()
		return nil, fmt.Errorf("cluster: etcd lease: %w", err)
	}
	n.sess = sess
	n.wg.Add(2)
	go n.watch(rev)
	go n.renew(sess)
	return n, nil
}

// SetHost gives the node the host whose shards it places: a move of a
// shard no actor runs ships its storage from it (and Leave ships its idle
// shards). Before it, such a move only releases the ownership.
func (n *Node) SetHost(h *host.Host) { n.host.Store(h) }

// NodeID returns this host's node id.
func (n *Node) NodeID() string { return n.cfg.NodeID }

func (n *Node) now() int64 { return int64(time.Since(n.base)) }

// margin is how long before its deadline a lease is no longer trusted:
// what an event's check-then-commit and clock rates may take.
func (n *Node) margin() int64 { return int64(n.cfg.LeaseTTL / 10) }

func (n *Node) key(kind, sk string) string { return n.cfg.Prefix + "/" + kind + "/" + sk }

// shardKey is a shard's name in etcd keys and its placement key: binding
// and shard, escaped.
func shardKey(id storage.ShardID) string {
	return url.PathEscape(id.Namespace) + "/" + url.PathEscape(id.Name)
}

// Owner returns which of members the placement gives a shard of binding
// (a shard's name, or a per-name object's name) to, as every host of the
// POP computes it (a per-name object then stays where it was created).
func Owner(binding, shard string, members []string) string {
	return Place(shardKey(storage.ShardID{Namespace: binding, Name: shard}), members)
}

// load reads the POP's keys into the mirror and returns their revision.
func (n *Node) load(ctx context.Context) (int64, error) {
	resp, err := n.cli.Get(ctx, n.cfg.Prefix+"/", clientv3.WithPrefix())
	if err != nil {
		return 0, err
	}
	n.mu.Lock()
	n.members, n.owners, n.homes = map[string]Member{}, map[string]string{}, map[string]string{}
	for _, kv := range resp.Kvs {
		n.apply(string(kv.Key), kv.Value, false)
	}
	n.signal()
	n.mu.Unlock()
	return resp.Header.Revision, nil
}

// apply puts one key change into the mirror (n.mu held).
func (n *Node) apply(key string, val []byte, deleted bool) {
	rest, ok := strings.CutPrefix(key, n.cfg.Prefix+"/")
	if !ok {
		return
	}
	kind, sk, ok := strings.Cut(rest, "/")
	if !ok {
		return
	}
	switch kind {
	case "members":
		if deleted {
			delete(n.members, sk)
			return
		}
		var m Member
		if json.Unmarshal(val, &m) == nil && m.Node == sk {
			n.members[sk] = m
		}
	case "owners":
		if deleted {
			delete(n.owners, sk)
		} else {
			n.owners[sk] = string(val)
		}
	case "homes":
		if deleted {
			delete(n.homes, sk)
		} else {
			n.homes[sk] = string(val)
		}
	}
}

// signal wakes whoever waits for a change (n.mu held).
func (n *Node) signal() {
	close(n.changed)
	n.changed = make(chan struct{})
}

// watch keeps the mirror current from rev on; after a compaction or a
// broken watch it reloads. Every change re-places the shards held here.
func (n *Node) watch(rev int64) {
	defer n.wg.Done()
	for n.ctx.Err() == nil {
		wch := n.cli.Watch(clientv3.WithRequireLeader(n.ctx), n.cfg.Prefix+"/", clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithPrevKV())
		for resp := range wch {
			if resp.Err() != nil {
				break
			}
			n.mu.Lock()
			for _, ev := range resp.Events {
				n.apply(string(ev.Kv.Key), ev.Kv.Value, ev.Type == clientv3.EventTypeDelete)
				n.noticeLapse(ev)
			}
			rev = resp.Header.Revision
			n.replace()
			n.signal()
			n.mu.Unlock()
		}
		if n.ctx.Err() != nil {
			return
		}
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
		ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
		r, err := n.load(ctx)
		cancel()
		if err != nil {
			n.log.Warn().Err(err).Msg("reloading the POP's keys from etcd failed; retrying")
			continue
		}
		n.mu.Lock()
		n.replace()
		n.mu.Unlock()
		rev = r
	}
}

// noticeLapse marks the session lost when etcd deleted a key of its
// lease that the node did not delete itself: the lease is gone (n.mu
// held).
func (n *Node) noticeLapse(ev *clientv3.Event) {
	if ev.Type != clientv3.EventTypeDelete || ev.PrevKv == nil || n.sess == nil || ev.PrevKv.Lease != int64(n.sess.id) {
		return
	}
	if string(ev.Kv.Key) == n.key("members", n.cfg.NodeID) && n.leaving {
		return // Leave deleted it
	}
	if strings.HasPrefix(string(ev.Kv.Key), n.cfg.Prefix+"/owners/") || strings.HasPrefix(string(ev.Kv.Key), n.cfg.Prefix+"/leftovers/") {
		return // a release
	}
	n.sess.markLost()
}

// liveMembers returns the node ids of the live members the placement
// may give shards to: not leaving (n.mu held). This node counts as
// leaving as soon as it begins to, before its mirror has its Leaving flag
// back from etcd: a request here for a shard it would own goes on to the
// next owner (a forwarded one back to its origin, to ask again) instead
// of failing.
func (n *Node) liveMembers() []string {
	out := make([]string, 0, len(n.members))
	for id, m := range n.members {
		if !m.Leaving && (id != n.cfg.NodeID || !n.leaving) {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// replace starts a planned move of every shard held here that the
// placement now gives another member (n.mu held). A per-name object stays
// with its home; everything moves when the node leaves.
func (n *Node) replace() {
	members := n.liveMembers()
	for sk, c := range n.claims {
		if c.leftover() || (c.perName && !n.leaving) {
			continue
		}
		if n.leaving || Place(sk, members) != n.cfg.NodeID {
			c.startMove()
		}
	}
}

// grant starts a new session: a lease of the configured TTL.
func (n *Node) grant(ctx context.Context) (*session, error) {
	t0 := n.now()
	resp, err := n.cli.Grant(ctx, int64(n.cfg.LeaseTTL/time.Second))
	if err != nil {
		return nil, err
	}
	s := &session{id: resp.ID, lost: make(chan struct{})}
	s.deadline.Store(t0 + int64(time.Duration(resp.TTL)*time.Second))
	return s, nil
}

// revokeStale revokes the leases of keys a previous run of this node left
// behind (its member key, its owner keys).
func (n *Node) revokeStale(ctx context.Context) {
	resp, err := n.cli.Get(ctx, n.cfg.Prefix+"/", clientv3.WithPrefix())
	if err != nil {
		return
	}
	seen := map[int64]bool{}
	for _, kv := range resp.Kvs {
		k := string(kv.Key)
		mine := k == n.key("members", n.cfg.NodeID) ||
			((strings.HasPrefix(k, n.cfg.Prefix+"/owners/") || strings.HasPrefix(k, n.cfg.Prefix+"/leftovers/")) && string(kv.Value) == n.cfg.NodeID)
		if !mine || kv.Lease == 0 || seen[kv.Lease] {
			continue
		}
		seen[kv.Lease] = true
		if _, err := n.cli.Revoke(ctx, clientv3.LeaseID(kv.Lease)); err == nil {
			n.log.Info().Int64("lease", kv.Lease).Msg("revoked the lease of this node's previous run: its shards are free now")
		}
	}
}

// renew keeps the node's lease alive, a quarter TTL apart. When the lease
// lapses — not renewed before its deadline (the host was paused, etcd was
// out of reach) or gone from etcd — every claim under it is lost at once,
// and a new session starts; the member key is written again under it.
func (n *Node) renew(s *session) {
	defer n.wg.Done()
	tick := time.NewTicker(n.cfg.LeaseTTL / 4)
	defer tick.Stop()
	for {
		if n.sessionLive(s) {
			n.renewOnce(s)
		}
		if s.isLost() || n.now() >= s.deadline.Load()-n.margin() {
			n.lose(s)
			s = n.newSession()
			if s == nil {
				return
			}
			continue
		}
		select {
		case <-n.ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (n *Node) sessionLive(s *session) bool {
	return !s.isLost() && n.now() < s.deadline.Load()-n.margin()
}

func (n *Node) renewOnce(s *session) {
	t0 := n.now()
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.LeaseTTL/4)
	defer cancel()
	resp, err := n.cli.KeepAliveOnce(ctx, s.id)
	switch {
	case errors.Is(err, rpctypes.ErrLeaseNotFound):
		s.markLost()
	case err != nil:
		if n.ctx.Err() == nil {
			n.log.Warn().Err(err).Msg("renewing the lease failed; retrying until its deadline")
		}
	case resp.TTL <= 0:
		s.markLost()
	default:
		s.deadline.Store(t0 + int64(time.Duration(resp.TTL)*time.Second))
	}
}

// lose ends a session: its claims are lost (their shards stop here), its
// lease is revoked if etcd can still be told.
func (n *Node) lose(s *session) {
	first := s.markLost()
	n.mu.Lock()
	var lost []*claim
	for sk, c := range n.claims {
		if c.sess == s {
			lost = append(lost, c)
			delete(n.claims, sk)
		}
	}
	if n.sess == s {
		n.sess = nil
	}
	n.signal()
	n.mu.Unlock()
	until := n.wall(s.deadline.Load())
	for _, c := range lost {
		c.lose(until)
	}
	if first && n.ctx.Err() == nil {
		n.m.leaseLosses.Inc()
		n.log.Error().Int("shards", len(lost)).Time("deadline", until).Msg("lease lapsed (not renewed in time): this host's shards are lost to it; starting a new session")
	}
	if n.ctx.Err() == nil {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			ctx, cancel := context.WithTimeout(n.ctx, 2*time.Second)
			defer cancel()
			n.cli.Revoke(ctx, s.id)
		}()
	}
}

// wall converts a monotonic offset to wall time.
func (n *Node) wall(off int64) time.Time { return n.base.Add(time.Duration(off)) }

// newSession grants a new lease, retrying until it works or the node
// closes, and writes the member key under it when the node is joined.
func (n *Node) newSession() *session {
	for pause := 100 * time.Millisecond; ; pause = min(2*pause, 2*time.Second) {
		if n.ctx.Err() != nil {
			return nil
		}
		ctx, cancel := context.WithTimeout(n.ctx, n.cfg.LeaseTTL)
		s, err := n.grant(ctx)
		if err == nil {
			n.mu.Lock()
			n.sess = s
			join := n.join && !n.leaving
			n.signal()
			n.mu.Unlock()
			if join {
				err = n.putMember(ctx, s)
			}
		}
		cancel()
		if err == nil {
			n.log.Info().Int64("lease", int64(s.id)).Msg("new session")
			return s
		}
		n.log.Warn().Err(err).Msg("starting a new etcd session failed; retrying")
		select {
		case <-n.ctx.Done():
			return nil
		case <-time.After(pause):
		}
	}
}

func (n *Node) putMember(ctx context.Context, s *session) error {
	n.mu.Lock()
	leaving := n.leaving
	n.mu.Unlock()
	b, _ := json.Marshal(Member{Node: n.cfg.NodeID, Addr: n.cfg.Advertise, Since: time.Now().UTC(), Leaving: leaving})
	_, err := n.cli.Put(ctx, n.key("members", n.cfg.NodeID), string(b), clientv3.WithLease(s.id))
	return err
}

// Join makes the node a member: the placement gives it its share of the
// shards from now on. Call it once the host serves requests.
func (n *Node) Join(ctx context.Context) error {
	n.mu.Lock()
	n.join, n.leaving = true, false
	s := n.sess
	n.mu.Unlock()
	if s == nil {
		return nil // the next session writes it
	}
	if err := n.putMember(ctx, s); err != nil {
		return fmt.Errorf("cluster: join: %w", err)
	}
	n.log.Info().Str("addr", n.cfg.Advertise).Msg("joined the POP")
	return nil
}

// Close ends the session (its lease revoked: every key of it goes at
// once) and the connection to etcd.
func (n *Node) Close() error {
	n.mu.Lock()
	s := n.sess
	n.mu.Unlock()
	n.cancel()
	n.wg.Wait()
	if s != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		n.cli.Revoke(ctx, s.id)
		cancel()
		n.lose(s)
	}
	return n.cli.Close()
}

// Evict forgets a node that is gone for good: the homes of its per-name
// objects (they start afresh on another host, their storage there lost)
// and its member key if any. Refused for a live member: its objects would
// then run twice.
func (n *Node) Evict(ctx context.Context, node string) (int, error) {
	n.mu.Lock()
	_, live := n.members[node]
	n.mu.Unlock()
	if live {
		return 0, fmt.Errorf("%w: node %s is a live member (its lease is renewed); stop it first", ErrLiveMember, node)
	}
	resp, err := n.cli.Get(ctx, n.cfg.Prefix+"/homes/", clientv3.WithPrefix())
	if err != nil {
		return 0, err
	}
	evicted := 0
	for _, kv := range resp.Kvs {
		if string(kv.Value) != node {
			continue
		}
		r, err := n.cli.Txn(ctx).If(clientv3.Compare(clientv3.Value(string(kv.Key)), "=", node)).
			Then(clientv3.OpDelete(string(kv.Key))).Commit()
		if err != nil {
			return evicted, err
		}
		if r.Succeeded {
			evicted++
		}
	}
	n.log.Warn().Str("evicted", node).Int("objects", evicted).Msg("node evicted: its per-name objects start afresh elsewhere")
	return evicted, nil
}

// ErrLiveMember: Evict was asked for a live member.
var ErrLiveMember = errors.New("cluster: live member")

var (
	_ host.Placement         = (*Node)(nil)
	_ host.LeftoverPlacement = (*Node)(nil)
	_ host.Shipper           = (*claim)(nil)
	_ host.Detacher          = (*claim)(nil)
)
