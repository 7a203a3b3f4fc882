package host_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/testutil"
	"github.com/edgeshard/edgeshard/storage"
)

// TestReceiveShardKeepsOwnLeftovers: a planned move ships a shard's
// storage to its next owner (Namespace.ReceiveShard), which takes it in
// place of what it kept of the shard — except a sharded namespace's
// shard whose copy here has a pending alarm: what this host buffered when
// it owned the shard, which it flushes itself. That is refused
// (ErrShardKept) and the copy stays as it was. A per-name object's copy
// is always replaced (its home says where its truth is), and so is a
// sharded shard's copy without an alarm. Keeps says whether the host
// keeps anything of an idle shard.
func TestReceiveShardKeepsOwnLeftovers(t *testing.T) {
	cfg := counterConfig(t, func(c *host.Config) {
		c.IdleTimeout = 50 * time.Millisecond
		b := c.Bindings[0]
		b.Name, b.Shards = "SHARDED", 8
		c.Bindings = append(c.Bindings, b)
	})
	f := start(t, cfg)
	ctx := context.Background()
	call := func(binding, key, method, path string) int {
		t.Helper()
		resp, err := f.h.Fetch(ctx, binding, key, &abi.Request{Method: method, Path: path})
		if err != nil || resp.Status != 200 {
			t.Fatalf("%s %s/%s %s: %v %v", method, binding, key, path, resp, err)
		}
		var r testutil.CounterReply
		if err := json.Unmarshal(resp.Body, &r); err != nil {
			t.Fatal(err)
		}
		return r.Count
	}
	sharded, _ := f.h.Namespace("SHARDED")
	perName, _ := f.h.Namespace("COUNTER")
	// The stream a planned move would ship: a count of 7.
	for range 7 {
		call("COUNTER", "src", "POST", "/increment")
	}
	var stream bytes.Buffer
	if _, err := perName.ExportShard(ctx, "src", &stream); err != nil {
		t.Fatal(err)
	}
	// Two keys of two shards, one to get a pending alarm; a third shard
	// untouched.
	shardOf := func(key string) string {
		s, err := sharded.ShardFor(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	withAlarm, plain := "k0", "k1"
	for i := 2; shardOf(plain) == shardOf(withAlarm); i++ {
		plain = fmt.Sprintf("k%d", i)
	}
	sa, sp := shardOf(withAlarm), shardOf(plain)
	untouched := "0"
	for i := 1; untouched == sa || untouched == sp; i++ {
		untouched = strconv.Itoa(i)
	}
	for range 3 {
		call("SHARDED", withAlarm, "POST", "/increment")
		call("SHARDED", plain, "POST", "/increment")
	}
	call("SHARDED", withAlarm, "POST", "/reset-after?ms=3600000")
	call("COUNTER", "dst", "POST", "/increment")
	call("COUNTER", "dst", "POST", "/reset-after?ms=3600000")
	testutil.WaitFor(t, 10*time.Second, "the actors evicted for idleness", func() bool {
		return len(sharded.Stats())+len(perName.Stats()) == 0
	})
	if keeps, err := sharded.Keeps(sa); err != nil || !keeps {
		t.Fatalf("Keeps(%s) = %v %v, want true", sa, keeps, err)
	}
	if keeps, err := sharded.Keeps(untouched); err != nil || keeps {
		t.Fatalf("Keeps of an untouched shard = %v %v, want false", keeps, err)
	}

	if _, err := sharded.ReceiveShard(ctx, sa, bytes.NewReader(stream.Bytes())); !errors.Is(err, host.ErrShardKept) {
		t.Fatalf("receive into a sharded shard with a pending alarm: %v, want ErrShardKept", err)
	}
	if n := call("SHARDED", withAlarm, "GET", "/"); n != 3 {
		t.Fatalf("the refused shard counts %d, want its own 3", n)
	}
	if _, ok := sharded.AlarmAt(sa); !ok {
		t.Fatal("the refused shard lost its alarm")
	}
	if _, err := sharded.ReceiveShard(ctx, sp, bytes.NewReader(stream.Bytes())); err != nil {
		t.Fatalf("receive into a sharded shard without an alarm: %v", err)
	}
	if n := call("SHARDED", plain, "GET", "/"); n != 7 {
		t.Fatalf("the received sharded shard counts %d, want the stream's 7", n)
	}
	if _, err := perName.ReceiveShard(ctx, "dst", bytes.NewReader(stream.Bytes())); err != nil {
		t.Fatalf("receive into a per-name object with a pending alarm: %v", err)
	}
	if n := call("COUNTER", "dst", "GET", "/"); n != 7 {
		t.Fatalf("the received object counts %d, want the stream's 7", n)
	}
	if _, ok := perName.AlarmAt("dst"); ok {
		t.Fatal("the received object kept its old alarm (the stream has none)")
	}
}

// lapsingPlacement places every shard here, under claims that stay valid
// (an event's writes commit) and report Lapsed while lapsed is set: a host
// frozen between its check before the commit and the acknowledgement.
type lapsingPlacement struct{ lapsed atomic.Bool }

func (p *lapsingPlacement) Claim(context.Context, storage.ShardID, bool) (host.Claim, error) {
	return &lapsingClaim{p: p}, nil
}

func (p *lapsingPlacement) Forward(context.Context, string, storage.ShardID, *abi.Request) (*abi.Response, error) {
	return nil, errors.New("every shard is placed here")
}

type lapsingClaim struct{ p *lapsingPlacement }

func (c *lapsingClaim) Epoch() int64          { return 1 }
func (c *lapsingClaim) Fresh() bool           { return false }
func (c *lapsingClaim) Valid() bool           { return true }
func (c *lapsingClaim) Lapsed() bool          { return c.p.lapsed.Load() }
func (c *lapsingClaim) Done() <-chan struct{} { return nil }
func (c *lapsingClaim) Moving() bool          { return false }
func (c *lapsingClaim) Attach() bool          { return true }
func (c *lapsingClaim) Release()              {}
func (c *lapsingClaim) Fence() string         { return "" }

// TestLapsedClaimIsNotAcknowledged: an event whose writes became durable
// after its claim lapsed is answered ErrOutcomeUnknown (502
// outcome_unknown), not acknowledged — the write is on this host's disk,
// what it keeps of the shard, and a caller with a fallback must not apply
// it again; once the claim holds again the count shows it.
func TestLapsedClaimIsNotAcknowledged(t *testing.T) {
	p := &lapsingPlacement{}
	f := start(t, counterConfig(t, func(c *host.Config) { c.Placement = p }))
	ctx := context.Background()
	inc := func() (int, error) {
		resp, err := f.h.Fetch(ctx, "COUNTER", "k", &abi.Request{Method: "POST", Path: "/increment"})
		if err != nil {
			return 0, err
		}
		var r testutil.CounterReply
		if err := json.Unmarshal(resp.Body, &r); err != nil {
			t.Fatal(err)
		}
		return r.Count, nil
	}
	if n, err := inc(); err != nil || n != 1 {
		t.Fatalf("increment under a valid claim: %d %v", n, err)
	}
	p.lapsed.Store(true)
	_, err := inc()
	if !errors.Is(err, host.ErrOutcomeUnknown) || !errors.Is(err, host.ErrFenced) {
		t.Fatalf("increment whose claim lapsed before the answer: %v, want ErrOutcomeUnknown and ErrFenced", err)
	}
	if status, code := host.ErrorStatus(err); status != 502 || code != "outcome_unknown" {
		t.Fatalf("answered %d %s, want 502 outcome_unknown", status, code)
	}
	p.lapsed.Store(false)
	if n, err := inc(); err != nil || n != 3 {
		t.Fatalf("increment after: %d %v, want 3 (the unacknowledged write is durable here)", n, err)
	}
}
