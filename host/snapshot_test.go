package host_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/storage"
	"github.com/edgeshard/edgeshard/storage/snapshot"
)

// TestShardExportImport moves a counter's shard between two hosts: the
// target answers the source's count and keeps its alarm, even though it
// had served the (empty) shard before; a non-empty shard and a corrupt
// stream are refused and change nothing.
func TestShardExportImport(t *testing.T) {
	src := start(t, counterConfig(t, nil))
	dst := start(t, counterConfig(t, nil))
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		if _, err := src.call(t, "a", "POST", "/increment"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := src.call(t, "a", "POST", "/reset-after?ms=3600000"); err != nil {
		t.Fatal(err)
	}
	srcNS, _ := src.h.Namespace("COUNTER")
	dstNS, _ := dst.h.Namespace("COUNTER")
	alarm, ok := srcNS.AlarmAt("a")
	if !ok {
		t.Fatal("source has no alarm")
	}
	var buf bytes.Buffer
	st, err := srcNS.ExportShard(ctx, "a", &buf)
	if err != nil {
		t.Fatal(err)
	}
	if st.Alarm != alarm.UnixMilli() || st.Entries == 0 {
		t.Fatalf("export stats %+v; alarm %v", st, alarm)
	}
	data := buf.Bytes()

	if got := dst.count(t, "a"); got != 0 { // a live instance that saw 0
		t.Fatalf("target count before import %d", got)
	}
	if _, err := dstNS.ImportShard(ctx, "a", bytes.NewReader(data[:len(data)-3])); !errors.Is(err, snapshot.ErrCorrupt) {
		t.Fatalf("truncated import: %v; want ErrCorrupt", err)
	}
	if got := dst.count(t, "a"); got != 0 {
		t.Fatalf("count after a refused import %d; want 0", got)
	}
	ist, err := dstNS.ImportShard(ctx, "a", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if ist.Shard != (storage.ShardID{Namespace: "COUNTER", Name: "a"}) {
		t.Fatalf("import names %s", ist.Shard)
	}
	if got := dst.count(t, "a"); got != 5 {
		t.Fatalf("count after import %d; want 5", got)
	}
	if at, ok := dstNS.AlarmAt("a"); !ok || !at.Equal(alarm) {
		t.Fatalf("target alarm %v %v; want %v", at, ok, alarm)
	}
	if _, err := dst.call(t, "a", "POST", "/increment"); err != nil {
		t.Fatal(err)
	}
	if _, err := dstNS.ImportShard(ctx, "a", bytes.NewReader(data)); !errors.Is(err, storage.ErrNotEmpty) {
		t.Fatalf("import into a non-empty shard: %v; want ErrNotEmpty", err)
	}
	if got := dst.count(t, "a"); got != 6 {
		t.Fatalf("count after refused import %d; want 6", got)
	}
	// The source clears the shard it handed over: nothing, no alarm.
	if err := srcNS.ClearShard(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if got := src.count(t, "a"); got != 0 {
		t.Fatalf("source count after ClearShard %d; want 0", got)
	}
	if _, ok := srcNS.AlarmAt("a"); ok {
		t.Fatal("the cleared shard's alarm is still scheduled")
	}
	if _, err := srcNS.ImportShard(ctx, "a", bytes.NewReader(data)); err != nil {
		t.Fatalf("import into the cleared shard: %v", err)
	}
	// Another name takes the same stream (a rename of the object).
	if _, err := dstNS.ImportShard(ctx, "b", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if got := dst.count(t, "b"); got != 5 {
		t.Fatalf("count of b %d; want 5", got)
	}
}

// TestImportIntoEmptiedShard: a shard whose guest deleted every key holds
// only the host's stored-bytes record; it counts as empty for an import.
func TestImportIntoEmptiedShard(t *testing.T) {
	ctx := context.Background()
	f := start(t, counterConfig(t, onlyPlugin(t, "HOG", "host/testdata/hostile/hog")))
	ns, _ := f.h.Namespace("HOG")
	for _, call := range []struct{ shard, path string }{
		{"emptied", "/fill?prefix=p&n=3&size=10"}, {"emptied", "/delete?prefix=p"}, {"full", "/fill?prefix=q&n=2&size=5"},
	} {
		if resp, err := ns.Fetch(ctx, call.shard, &abi.Request{Method: "POST", Path: call.path}); err != nil || resp.Status != 200 {
			t.Fatalf("%s %s: %v", call.shard, call.path, err)
		}
	}
	var leftover []string
	ns.Inspect(ctx, "emptied", func(v host.StorageView) {
		kvs, _ := v.List(abi.ListOptions{})
		for _, kv := range kvs {
			leftover = append(leftover, kv.Key)
		}
	})
	if len(leftover) != 0 {
		t.Fatalf("emptied shard lists %q", leftover)
	}
	var snap bytes.Buffer
	if _, err := ns.ExportShard(ctx, "full", &snap); err != nil {
		t.Fatal(err)
	}
	if _, err := ns.ImportShard(ctx, "emptied", bytes.NewReader(snap.Bytes())); err != nil {
		t.Fatalf("import into a shard whose keys were all deleted: %v", err)
	}
	var n int
	ns.Inspect(ctx, "emptied", func(v host.StorageView) {
		kvs, _ := v.List(abi.ListOptions{})
		n = len(kvs)
	})
	if n != 2 {
		t.Fatalf("after import the shard lists %d keys; want full's 2", n)
	}
}
