package host

import (
	"context"

	"github.com/edgeshard/edgeshard/host/internal/wasm"
)

// EngineConfig configures a shared Engine.
type EngineConfig struct {
	// CacheDir is wazero's on-disk compilation cache ("" for memory only).
	CacheDir string
	// MemoryLimitMiB caps each instance's memory (default 128).
	MemoryLimitMiB int
	// UnsafeNoTerminationChecks turns off the interruption of guest code
	// at its event deadline (the interrupt checks compiled into every
	// module), to measure what they cost (cmd/edgeshard-bench -unchecked).
	// A runaway guest is then never stopped. Benchmarks only.
	UnsafeNoTerminationChecks bool
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
	e, err := wasm.NewEngine(ctx, wasm.Config{CacheDir: cfg.CacheDir, MemoryLimitMiB: cfg.MemoryLimitMiB, KeepModules: true,
		UnsafeNoTerminationChecks: cfg.UnsafeNoTerminationChecks})
	if err != nil {
		return nil, err
	}
	return &Engine{e: e, memLimit: cfg.MemoryLimitMiB}, nil
}

// Close closes the engine; hosts using it must be closed first.
func (e *Engine) Close(ctx context.Context) error { return e.e.Close(ctx) }
