package host

import (
	"context"
	"errors"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host/internal/wasm"
	"github.com/edgeshard/edgeshard/internal/hostinternal"
)

// runner is what an actor runs events on: a wasm instance or a native
// shard (hostinternal.WithNative: benchmarks and tests only).
type runner interface {
	Fetch(ctx context.Context, env wasm.Env, req *abi.Request) (*abi.Response, error)
	Alarm(ctx context.Context, env wasm.Env, retryCount int) (bool, error)
	Err() error
	Close(ctx context.Context) error
	MemoryBytes() uint64
}

// nativeRunner runs a hostinternal.NativeShard as if it were an instance.
type nativeRunner struct {
	shard hostinternal.NativeShard
	env   nativeEnv
	dead  error
}

func newNativeRunner(s hostinternal.NativeShard, a *actor) *nativeRunner {
	return &nativeRunner{shard: s, env: nativeEnv{a}}
}

func (n *nativeRunner) Fetch(ctx context.Context, _ wasm.Env, req *abi.Request) (*abi.Response, error) {
	resp, err := n.shard.Fetch(ctx, n.env, req)
	if err != nil {
		n.dead = err
		return nil, errors.Join(ErrTrap, err)
	}
	return resp, nil
}

func (n *nativeRunner) Alarm(ctx context.Context, _ wasm.Env, retryCount int) (bool, error) {
	ok, err := n.shard.Alarm(ctx, n.env, retryCount)
	if err != nil {
		n.dead = err
		return false, errors.Join(ErrTrap, err)
	}
	return ok, nil
}

func (n *nativeRunner) Err() error                      { return n.dead }
func (n *nativeRunner) Close(ctx context.Context) error { n.dead = errors.New("closed"); return nil }
func (n *nativeRunner) MemoryBytes() uint64             { return 0 }

// nativeEnv is the actor's guest environment as a native shard sees it:
// only Store's result type differs from wasm.Env.
type nativeEnv struct{ *actor }

func (e nativeEnv) Store() hostinternal.Store { return e.actor.store }

var (
	_ runner           = (*wasm.Instance)(nil)
	_ runner           = (*nativeRunner)(nil)
	_ hostinternal.Env = nativeEnv{}
)
