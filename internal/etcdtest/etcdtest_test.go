package etcdtest

import (
	"context"
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
