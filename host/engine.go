package host

import (
	"context"

	"github.com/edgeshard/edgeshard/host/internal/wasm"
	"github.com/edgeshard/edgeshard/internal/hostinternal"
)

// EngineConfig configures a shared Engine.
type EngineConfig struct {
	// CacheDir is wazero's on-disk compilation cache ("" for memory only).
	CacheDir string
	// MemoryLimitMiB caps each instance's memory (default 128).
	MemoryLimitMiB int
}

// Engine is a wasm runtime with its compiled modules that several hosts in
// one process can share (Config.Engine). Each module version is compiled
// once per Engine and kept until the Engine closes, so a process that
// starts many short-lived hosts — tests, the conformance kit — pays for
// compilation once instead of once per host.
type Engine struct {
	e        *wasm.Engine
	memLimit int
}

// NewEngine starts a shared engine.
func NewEngine(ctx context.Context, cfg EngineConfig) (*Engine, error) {
	if cfg.MemoryLimitMiB <= 0 {
		cfg.MemoryLimitMiB = 128
	}
	wc := engineConfig(ctx, cfg.CacheDir, cfg.MemoryLimitMiB)
	wc.KeepModules = true
	e, err := wasm.NewEngine(ctx, wc)
	if err != nil {
		return nil, err
	}
	return &Engine{e: e, memLimit: cfg.MemoryLimitMiB}, nil
}

// engineConfig is the wasm engine configuration of a host's or a shared
// engine; ctx may carry hostinternal.WithoutTerminationChecks.
func engineConfig(ctx context.Context, cacheDir string, memLimitMiB int) wasm.Config {
	return wasm.Config{CacheDir: cacheDir, MemoryLimitMiB: memLimitMiB,
		UnsafeNoTerminationChecks: hostinternal.NoTerminationChecks(ctx)}
}

// Close closes the engine; hosts using it must be closed first.
func (e *Engine) Close(ctx context.Context) error { return e.e.Close(ctx) }
