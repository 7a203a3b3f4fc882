package host_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host"
	"github.com/edgeshard/edgeshard/internal/hostinternal"
)

type nativeCounter struct{}

func (nativeCounter) Fetch(_ context.Context, env hostinternal.Env, req *abi.Request) (*abi.Response, error) {
	v, _, err := env.Store().Get("n")
	if err != nil {
		return nil, err
	}
	n, _ := strconv.Atoi(string(v))
	n++
	if err := env.Store().Put("n", []byte(strconv.Itoa(n)), false); err != nil {
		return nil, err
	}
	return &abi.Response{Status: 200, Body: []byte(strconv.Itoa(n))}, nil
}

func (nativeCounter) Alarm(context.Context, hostinternal.Env, int) (bool, error) { return true, nil }

func TestNativeShardRunsOnTheSamePath(t *testing.T) {
	f := startNative(t, map[string]hostinternal.NativeShard{"NATIVE": nativeCounter{}}, func(c *host.Config) {
		c.Bindings = []host.Binding{{Name: "NATIVE", Shards: 4}}
	})
	var last string
	for i := 0; i < 5; i++ {
		resp, err := f.h.Fetch(context.Background(), "NATIVE", "k", &abi.Request{Method: "POST", Path: "/"})
		if err != nil {
			t.Fatal(err)
		}
		last = string(resp.Body)
	}
	if last != "5" {
		t.Fatalf("native counter = %s, want 5", last)
	}
	ns, _ := f.h.Namespace("NATIVE")
	if ns.Current().SHA256() != "native" {
		t.Fatalf("version = %s", ns.Current().SHA256())
	}
}

// varShard answers every request with its environment's variable name,
// "(unset)" when there is none.
type varShard struct{ name string }

func (s varShard) Fetch(_ context.Context, env hostinternal.Env, _ *abi.Request) (*abi.Response, error) {
	v, ok := env.Var(s.name)
	if !ok {
		v = "(unset)"
	}
	return &abi.Response{Status: 200, Body: []byte(v)}, nil
}

func (varShard) Alarm(context.Context, hostinternal.Env, int) (bool, error) { return true, nil }

func TestReservedShardNameVar(t *testing.T) {
	f := startNative(t, map[string]hostinternal.NativeShard{"N": varShard{host.VarShardName}}, func(c *host.Config) {
		c.Bindings = []host.Binding{{Name: "N", Shards: 8}}
	})
	resp, err := f.h.Fetch(context.Background(), "N", "some-key", &abi.Request{Method: "GET", Path: "/"})
	if err != nil {
		t.Fatal(err)
	}
	want := "N/" + strconv.Itoa(int(host.HashToShard("some-key")%8))
	if string(resp.Body) != want {
		t.Fatalf("shard name var = %q, want %q", resp.Body, want)
	}
}
