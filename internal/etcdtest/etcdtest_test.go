package etcdtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestSharedServesKeys(t *testing.T) {
	s := Shared(t)
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{s.Endpoint()}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	k := Prefix(t) + "/k"
	if _, err := c.Put(ctx, k, "v"); err != nil {
		t.Fatal(err)
	}
	r, err := c.Get(ctx, k)
	if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "v" {
		t.Fatalf("get %s: %v %v", k, r, err)
	}
}

// TestStartRemovesOrphans: the data directory of a server whose process
// is gone is removed by the next Start; a live process's is kept.
func TestStartRemovesOrphans(t *testing.T) {
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	orphan := filepath.Join(os.TempDir(), fmt.Sprintf("etcdtest-%d-test", gone.Process.Pid))
	live := filepath.Join(os.TempDir(), fmt.Sprintf("etcdtest-%d-test", os.Getppid()))
	for _, d := range []string{orphan, live} {
		if err := os.MkdirAll(filepath.Join(d, "member"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	defer os.RemoveAll(live)
	s, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	dir := s.dir
	s.Close()
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Errorf("the orphan %s is still there (%v)", orphan, err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("the live process's %s was removed: %v", live, err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("Close left %s (%v)", dir, err)
	}
}
