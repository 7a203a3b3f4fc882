package host

import (
	"context"
	"errors"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host/internal/wasm"
)

// Env is what a shard may reach during one event: storage, its alarm,
// vars, log, SQL and analytics. Wasm guests reach it through host
// functions; a NativeShard receives it directly.
type Env = wasm.Env

// Store is a shard's storage as an Env hands it out.
type Store = wasm.Store

// NativeShard is a shard written in Go and run inside the host on the same
// actor, storage, output gate and alarm path as a wasm shard. Its only use
// is comparison: the benchmark of the same algorithm in wasm and natively.
type NativeShard interface {
	Fetch(ctx context.Context, env Env, req *abi.Request) (*abi.Response, error)
	// Alarm runs the alarm; false reports a failure to retry.
	Alarm(ctx context.Context, env Env, retryCount int) (bool, error)
}

// runner is what an actor runs events on: a wasm instance or a native shard.
type runner interface {
	Fetch(ctx context.Context, env wasm.Env, req *abi.Request) (*abi.Response, error)
	Alarm(ctx context.Context, env wasm.Env, retryCount int) (bool, error)
	Err() error
	Close(ctx context.Context) error
	MemoryBytes() uint64
}

type nativeRunner struct {
	shard NativeShard
	dead  error
}

func (n *nativeRunner) Fetch(ctx context.Context, env wasm.Env, req *abi.Request) (*abi.Response, error) {
	resp, err := n.shard.Fetch(ctx, env, req)
	if err != nil {
		n.dead = err
		return nil, errors.Join(ErrTrap, err)
	}
	return resp, nil
}

func (n *nativeRunner) Alarm(ctx context.Context, env wasm.Env, retryCount int) (bool, error) {
	ok, err := n.shard.Alarm(ctx, env, retryCount)
	if err != nil {
		n.dead = err
		return false, errors.Join(ErrTrap, err)
	}
	return ok, nil
}

func (n *nativeRunner) Err() error                      { return n.dead }
func (n *nativeRunner) Close(ctx context.Context) error { n.dead = errors.New("closed"); return nil }
func (n *nativeRunner) MemoryBytes() uint64             { return 0 }

var (
	_ runner = (*wasm.Instance)(nil)
	_ runner = (*nativeRunner)(nil)
)
