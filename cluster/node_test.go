package cluster

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/etcdtest"
	"github.com/edgeshard/edgeshard/storage"
	"github.com/edgeshard/edgeshard/storage/sqldb"
	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// open starts a node of the test's POP (prefix) on the shared etcd.
func open(t *testing.T, prefix, id string) *Node {
	t.Helper()
	cfg := Config{Etcd: []string{etcdtest.Shared(t).Endpoint()}, Advertise: "http://" + id + ".invalid", LeaseTTL: 2 * time.Second,
		Prefix: prefix, Secret: "s", ClaimWait: 3 * time.Second, NodeID: id}
	n, err := Open(context.Background(), cfg, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// twoMembers starts and joins the members n-a and n-b of a POP, and
// gives a shard placement puts on n-a.
func twoMembers(t *testing.T) (a, b *Node, id storage.ShardID) {
	t.Helper()
	prefix := etcdtest.Prefix(t)
	a, b = open(t, prefix, "n-a"), open(t, prefix, "n-b")
	join(t, a, b)
	return a, b, shardOn("n-a", []string{"n-a", "n-b"})
}

func join(t *testing.T, ns ...*Node) {
	t.Helper()
	for _, n := range ns {
		if err := n.Join(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	// Every node sees every member.
	waitFor(t, "members", func() bool {
		for _, n := range ns {
			if len(n.Status().Members) < len(ns) {
				return false
			}
		}
		return true
	})
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// shardOn returns a shard of binding B that rendezvous places on want
// among members.
func shardOn(want string, members []string) storage.ShardID {
	for i := 0; ; i++ {
		id := storage.ShardID{Namespace: "B", Name: fmt.Sprint(i)}
		if Place(shardKey(id), members) == want {
			return id
		}
	}
}

// TestClaimOneOwnerEpochsFence: a shard is claimed by the member the
// placement gives it to and no other (the other is told where it is); when
// the owner's lease lapses, its claim is lost at once (Done, not Valid),
// the other member claims the shard with a larger epoch, and a SQL write
// of the old epoch is refused once the new owner raised the fence.
func TestClaimOneOwnerEpochsFence(t *testing.T) {
	a, b, id := twoMembers(t)
	ctx := context.Background()

	var ee *host.ElsewhereError
	if _, err := b.Claim(ctx, id, false); !errors.As(err, &ee) || ee.Node != "n-a" || ee.Owner != "http://n-a.invalid" {
		t.Fatalf("b claims a's shard: %v", err)
	}
	ca, err := a.Claim(ctx, id, false)
	if err != nil {
		t.Fatal(err)
	}
	ca.Attach()
	if again, err := a.Claim(ctx, id, false); err != nil || again != ca {
		t.Fatalf("a's second claim: %v %v (want the held one)", again, err)
	}

	db, err := sqldb.Open("sqlite://"+filepath.Join(t.TempDir(), "d1.db"), sqldb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	write := func(c host.Claim) error {
		_, err := db.BatchFenced(ctx, id.Namespace, id.Name, c.Epoch(), []abi.Statement{{SQL: "CREATE TABLE IF NOT EXISTS t (v INTEGER)"}})
		return err
	}
	if err := write(ca); err != nil {
		t.Fatal(err)
	}

	// The lease of a goes (as if etcd expired it while a was paused).
	a.mu.Lock()
	lease := a.sess.id
	a.mu.Unlock()
	if _, err := a.cli.Revoke(ctx, lease); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ca.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a's claim not done after its lease was revoked")
	}
	waitFor(t, "a's claim invalid", func() bool { return !ca.Valid() })
	// Until a joins again under a new lease, b is the placement's choice;
	// wait for a moment where b may claim.
	var cb host.Claim
	waitFor(t, "b's claim", func() bool {
		cb, err = b.Claim(ctx, id, false)
		return err == nil
	})
	if cb.Epoch() <= ca.Epoch() {
		t.Fatalf("epochs: new owner %d, old %d", cb.Epoch(), ca.Epoch())
	}
	if err := write(cb); err != nil {
		t.Fatal(err)
	}
	if err := write(ca); !errors.Is(err, storage.ErrFenced) {
		t.Fatalf("old owner's write after the new owner's: %v, want ErrFenced", err)
	}
}

// TestPerNameHomeAndEvict: a per-name object stays with the host that
// created it (its home): while that host is down the object is
// unavailable, not started empty elsewhere; an operator's evict frees it
// and it starts afresh (Fresh) on another host. Evicting a live member is
// refused.
func TestPerNameHomeAndEvict(t *testing.T) {
	a, b, id := twoMembers(t)
	ctx := context.Background()
	id.Name = "obj-" + id.Name
	for Place(shardKey(id), []string{"n-a", "n-b"}) != "n-a" {
		id.Name += "x"
	}
	c, err := a.Claim(ctx, id, true)
	if err != nil || !c.Fresh() {
		t.Fatalf("first claim: %v fresh=%v", err, c != nil && c.Fresh())
	}
	c.Attach()
	c.Release()
	if c2, err := a.Claim(ctx, id, true); err != nil || c2.Fresh() {
		t.Fatalf("claim at home again: %v (must not be fresh)", err)
	} else {
		c2.Release()
	}
	if _, err := b.Evict(ctx, "n-a"); !errors.Is(err, ErrLiveMember) {
		t.Fatalf("evict a live member: %v", err)
	}
	a.Close()
	waitFor(t, "a gone", func() bool { return len(b.Status().Members) == 1 })
	if _, err := b.Claim(ctx, id, true); !errors.Is(err, host.ErrShardUnavailable) {
		t.Fatalf("object of a down host: %v, want ErrShardUnavailable", err)
	}
	if n, err := b.Evict(ctx, "n-a"); err != nil || n != 1 {
		t.Fatalf("evict: %d %v", n, err)
	}
	waitFor(t, "home gone", func() bool { return b.Status().Homes["n-a"] == 0 })
	cb, err := b.Claim(ctx, id, true)
	if err != nil || !cb.Fresh() {
		t.Fatalf("claim after evict: %v (want fresh)", err)
	}
}

// TestJoinMovesShards: shards a new member wins move to it — the old
// owner's claims are told to move (Moving, Done) — and the newcomer's claim
// waits until the old owner lets go.
func TestJoinMovesShards(t *testing.T) {
	prefix := etcdtest.Prefix(t)
	b := open(t, prefix, "n-b")
	join(t, b)
	ctx := context.Background()
	id := shardOn("n-a", []string{"n-a", "n-b"})
	cb, err := b.Claim(ctx, id, false)
	if err != nil {
		t.Fatal(err)
	}
	cb.Attach()
	a := open(t, prefix, "n-a")
	join(t, a, b)
	select {
	case <-cb.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("b's claim not told to move when a joined")
	}
	if !cb.Moving() || !cb.Valid() {
		t.Fatalf("moving=%v valid=%v, want a planned move under a valid claim", cb.Moving(), cb.Valid())
	}
	got := make(chan error, 1)
	go func() {
		c, err := a.Claim(ctx, id, false)
		if err == nil && c.Epoch() <= cb.Epoch() {
			err = fmt.Errorf("epoch %d after %d", c.Epoch(), cb.Epoch())
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("a claimed before b released: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	cb.Release()
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	var ee *host.ElsewhereError
	if _, err := b.Claim(ctx, id, false); !errors.As(err, &ee) || ee.Node != "n-a" {
		t.Fatalf("b after the move: %v", err)
	}
}

// TestClaimTakesBackAnOrphanKey: an owner key of this node's under its
// session that no claim here knows (an ownership transaction whose answer
// was lost) is taken back by the next Claim at once, with its epoch,
// rather than held until the session ends; one under another lease, or
// another node's, is not.
func TestClaimTakesBackAnOrphanKey(t *testing.T) {
	prefix := etcdtest.Prefix(t)
	a := open(t, prefix, "n-a")
	join(t, a)
	id := storage.ShardID{Namespace: "B", Name: "orphan"}
	a.mu.Lock()
	s := a.sess
	a.mu.Unlock()
	k := a.key("owners", shardKey(id))
	put, err := a.cli.Put(context.Background(), k, "n-a", clientv3.WithLease(s.id))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	c, err := a.Claim(context.Background(), id, false)
	if err != nil {
		t.Fatalf("claim with an orphan key of its own: %v", err)
	}
	if took := time.Since(t0); took > time.Second {
		t.Fatalf("claim took %v: it waited for the orphan key", took)
	}
	if c.Epoch() != put.Header.Revision {
		t.Fatalf("epoch %d, want the orphan key's %d", c.Epoch(), put.Header.Revision)
	}
	c.Release()

	// Another node's key under this lease is not taken.
	other := storage.ShardID{Namespace: "B", Name: "other"}
	if _, err := a.cli.Put(context.Background(), a.key("owners", shardKey(other)), "n-x", clientv3.WithLease(s.id)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if c, err := a.Claim(ctx, other, false); err == nil {
		t.Fatalf("claimed %s held by another node's key: epoch %d", other, c.Epoch())
	}
}

// TestLeavingNodeSendsOnToTheNextOwner: a node that has begun to leave
// while its mirror still lists it as a live member (its Leaving flag is
// not back from etcd yet) places a shard it would own on the member that
// owns it without this node: a request there goes on (a forwarded one back
// to its origin, which asks again) instead of failing 503. The rolling
// restart test lost one request so, under load.
func TestLeavingNodeSendsOnToTheNextOwner(t *testing.T) {
	a, _, id := twoMembers(t)
	a.mu.Lock()
	a.leaving = true
	a.mu.Unlock()
	_, err := a.Claim(context.Background(), id, false)
	var ee *host.ElsewhereError
	if !errors.As(err, &ee) || ee.Node != "n-b" {
		t.Fatalf("claim on a leaving node whose mirror still lists it: %v, want the shard elsewhere on n-b", err)
	}
}
