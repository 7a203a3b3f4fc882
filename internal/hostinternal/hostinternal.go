// Package hostinternal holds what package host offers to this module's own
// benchmarks and tests and to no embedder: shards written in Go (the
// baseline a wasm shard is measured against), an engine without termination
// checks (to measure what they cost), and the error that crashes a guest
// from inside a host call (fault injection).
//
// Go's internal rule keeps the package out of reach of other modules, and
// out of `go doc ./host`. The hooks reach host.New and host.NewEngine in
// the context passed to them, the way wazero takes its experimental options
// (experimental.WithCompilationWorkers): typed, and with no package state.
package hostinternal

import (
	"context"
	"errors"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/internal/shardenv"
)

// Store is a shard's storage as a NativeShard sees it during one event.
type Store = shardenv.Store

// Env is what a NativeShard may reach during one event: what a wasm guest
// reaches through host functions.
type Env = shardenv.Env

// NativeShard is a shard written in Go and run inside the host on the same
// actor, storage, output gate and alarm path as a wasm shard. An error
// from either method is a crash: the shard's instance is discarded.
type NativeShard interface {
	Fetch(ctx context.Context, env Env, req *abi.Request) (*abi.Response, error)
	// Alarm runs the alarm; false reports a failure to retry.
	Alarm(ctx context.Context, env Env, retryCount int) (bool, error)
}

// NewNativeShard returns the NativeShard serving one shard of a binding.
type NewNativeShard func(shard string) NativeShard

type nativeKey struct{ binding string }

// WithNative returns a context that makes host.New serve the binding
// named binding with newShard instead of a wasm module (the binding's
// Module and ModuleBytes must then be empty). Such a namespace cannot be
// swapped.
func WithNative(ctx context.Context, binding string, newShard NewNativeShard) context.Context {
	return context.WithValue(ctx, nativeKey{binding}, newShard)
}

// Native returns the NativeShard constructor WithNative set for binding,
// or nil.
func Native(ctx context.Context, binding string) NewNativeShard {
	f, _ := ctx.Value(nativeKey{binding}).(NewNativeShard)
	return f
}

type noChecksKey struct{}

// WithoutTerminationChecks returns a context that makes host.NewEngine
// (and host.New, when it starts its own engine) compile modules without
// the checks that interrupt guest code at its event deadline. A runaway
// guest is then never stopped: benchmarks only (edgeshard-bench -unchecked).
func WithoutTerminationChecks(ctx context.Context) context.Context {
	return context.WithValue(ctx, noChecksKey{}, true)
}

// NoTerminationChecks reports whether ctx carries WithoutTerminationChecks.
func NoTerminationChecks(ctx context.Context) bool {
	on, _ := ctx.Value(noChecksKey{}).(bool)
	return on
}

// ErrInjectedCrash, returned (wrapped) by a SQL binding or an analytics
// sink, makes the host function trap the calling guest: the instance dies
// mid-event exactly as in a crash, and the event's storage writes are
// discarded. Tests and the conformance kit use it to crash a shard between
// a SQL commit and its own storage commit.
var ErrInjectedCrash = errors.New("injected crash")

type sqlCrashKey struct{}

// WithShardSQLCrash returns a context that makes host.New consult crash
// after a shard with its own SQL database (sql = "shard") commits an
// event's SQL and before it submits the event's key-value writes: when
// crash returns true the host acts as if the process died there — the
// SQL stays committed, the key-value writes and their marker are dropped,
// the instance and the database are closed, and the event fails (an error
// wrapping ErrInjectedCrash). The shard's next start must repair it.
func WithShardSQLCrash(ctx context.Context, crash func(binding, shard string) bool) context.Context {
	return context.WithValue(ctx, sqlCrashKey{}, crash)
}

// ShardSQLCrash returns the function WithShardSQLCrash set, or nil.
func ShardSQLCrash(ctx context.Context) func(binding, shard string) bool {
	f, _ := ctx.Value(sqlCrashKey{}).(func(binding, shard string) bool)
	return f
}
