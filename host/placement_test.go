package host_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/testutil"
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
