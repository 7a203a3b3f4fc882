package admin_test

import (
	"bytes"
	"testing"

	"github.com/edgeshard/edgeshard/host/admin"
	"github.com/edgeshard/edgeshard/storage"
)

// TestSnapshotRoutes: a shard's export imports into another shard, whose
// counter then answers the same; a second import (the shard is no longer
// empty), a damaged stream and a backup of several shards are refused with
// their codes; a backup streams every shard; bad names are 404.
func TestSnapshotRoutes(t *testing.T) {
	f := newFixture(t, admin.Options{})
	for i := 0; i < 3; i++ {
		f.edgeCall(t, "POST", "/do/COUNTER/alice/increment")
	}
	f.edgeCall(t, "POST", "/do/SHARDED/k/increment")

	st, snap := f.do(t, "GET", "/admin/bindings/COUNTER/shards/alice/export", nil, nil)
	if st != 200 {
		t.Fatalf("export: %d %s", st, snap)
	}
	vs, err := storage.VerifySnapshot(bytes.NewReader(snap), nil)
	if err != nil || vs.Shards != 1 || vs.Entries == 0 {
		t.Fatalf("export verifies as %+v, %v", vs, err)
	}
	var res admin.ImportResult
	if st, b := f.do(t, "PUT", "/admin/bindings/COUNTER/shards/bob/import", snap, &res); st != 200 {
		t.Fatalf("import: %d %s", st, b)
	}
	if res.From != "COUNTER/alice" || res.Shard != "bob" || res.Entries != vs.Entries {
		t.Fatalf("import answered %+v", res)
	}
	if r, _ := f.edgeCall(t, "GET", "/do/COUNTER/bob/"); r.Count != 3 {
		t.Fatalf("bob after import: %d; want 3", r.Count)
	}

	_, backup := f.do(t, "POST", "/admin/backup", nil, nil)
	bs, err := storage.VerifySnapshot(bytes.NewReader(backup), nil)
	if err != nil || bs.Shards != 3 {
		t.Fatalf("backup verifies as %+v, %v; want 3 shards (alice, bob, SHARDED's)", bs, err)
	}

	for _, c := range []struct {
		path string
		body []byte
		code string
	}{
		{"/admin/bindings/COUNTER/shards/bob/import", snap, "shard_not_empty"},
		{"/admin/bindings/COUNTER/shards/carol/import", snap[:len(snap)-1], "snapshot_corrupt"},
		{"/admin/bindings/COUNTER/shards/carol/import", []byte("not a snapshot"), "snapshot_corrupt"},
		{"/admin/bindings/COUNTER/shards/carol/import", backup, "snapshot_corrupt"},
		{"/admin/bindings/NOPE/shards/x/import", snap, "unknown_binding"},
		{"/admin/bindings/SHARDED/shards/9/import", snap, "unknown_shard"},
	} {
		if st, b := f.do(t, "PUT", c.path, c.body, nil); st < 400 || errorOf(t, b).Error.Code != c.code {
			t.Errorf("PUT %s: %d %s; want code %s", c.path, st, b, c.code)
		}
	}
	if r, _ := f.edgeCall(t, "GET", "/do/COUNTER/carol/"); r.Count != 0 {
		t.Fatalf("carol after refused imports: %d; want 0", r.Count)
	}
	f.wantErrorCodes(t, map[string]string{
		"/admin/bindings/NOPE/shards/x/export":    "unknown_binding",
		"/admin/bindings/SHARDED/shards/x/export": "unknown_shard",
	})
}
