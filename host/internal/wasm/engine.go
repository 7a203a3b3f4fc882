// Package wasm runs edgeshard plugins on wazero: one Engine per host (a
// wazero runtime, the WASI and edgeshard host modules, the on-disk
// compilation cache), a Module per compiled module version, and an Instance
// per live shard. It knows nothing about shards or HTTP; host functions reach
// the shard through the Env attached to each call's context.
package wasm

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// Config configures an Engine.
type Config struct {
	// CacheDir holds wazero's compilation cache; "" keeps it in memory only.
	CacheDir string
	// MemoryLimitMiB caps each instance's linear memory (default 128).
	MemoryLimitMiB int
	// MaxModuleBytes caps the size of a module binary (default 64 MiB).
	MaxModuleBytes int
	// Interpreter selects wazero's interpreter instead of the compiler
	// (for platforms without the compiler; much slower).
	Interpreter bool
	// KeepModules keeps compiled modules after their last user closes them,
	// until the engine closes: an engine shared by many short-lived hosts
	// (tests, the conformance kit) then compiles each module version once.
	KeepModules bool
	// UnsafeNoTerminationChecks loads modules without the interrupt checks
	// (wasmbin.Instrument, interrupt.go): a call past its deadline is then never interrupted —
	// a runaway guest keeps its goroutine and a CPU forever. It exists only
	// to measure what the checks cost (docs/BENCHMARKS.md); never set it
	// for a host that serves traffic.
	UnsafeNoTerminationChecks bool
	// StartTimeout bounds instantiation: the start functions, the ABI
	// version probe and edgeshard_init (default 10s). A caller's earlier
	// context deadline still wins.
	StartTimeout time.Duration
	// MemoryPoolBytes bounds the released linear memories kept, zeroed,
	// for the next instances (memory_unix.go), in bytes of memory they
	// hold (default 16 MiB; negative keeps none).
	MemoryPoolBytes int64
}

func (c Config) withDefaults() Config {
	if c.MemoryLimitMiB <= 0 {
		c.MemoryLimitMiB = 128
	}
	if c.MaxModuleBytes <= 0 {
		c.MaxModuleBytes = 64 << 20
	}
	if c.StartTimeout <= 0 {
		c.StartTimeout = 10 * time.Second
	}
	if c.MemoryPoolBytes == 0 {
		c.MemoryPoolBytes = 16 << 20
	}
	return c
}

// Engine compiles and instantiates plugins. It is safe for concurrent use.
type Engine struct {
	cfg     Config
	rt      wazero.Runtime
	cache   wazero.CompilationCache
	mem     *memoryPool
	alloc   experimental.MemoryAllocator // mem's
	mu      sync.Mutex
	closed  bool
	modules map[string]*Module // by sha256, compiled once per version
	// loading holds, by sha256, the modules a Load is compiling: another
	// Load of the same bytes waits for it (module.go).
	loading map[string]chan struct{}
}

// NewEngine starts a wazero runtime with the host modules instantiated.
func NewEngine(ctx context.Context, cfg Config) (*Engine, error) {
	cfg = cfg.withDefaults()
	var rc wazero.RuntimeConfig
	if cfg.Interpreter {
		rc = wazero.NewRuntimeConfigInterpreter()
	} else {
		rc = wazero.NewRuntimeConfig()
	}
	// No WithCloseOnContextDone: guests are stopped by the interrupt
	// checks Load compiles into them (wasmbin.Instrument, interrupt.go),
	// at a fraction of its cost.
	rc = rc.WithMemoryLimitPages(uint32(cfg.MemoryLimitMiB) * 16)
	var cache wazero.CompilationCache
	if cfg.CacheDir != "" {
		c, err := wazero.NewCompilationCacheWithDir(cfg.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("wasm: compilation cache %q: %w", cfg.CacheDir, err)
		}
		cache = c
	} else {
		cache = wazero.NewCompilationCache()
	}
	rc = rc.WithCompilationCache(cache)
	rt := wazero.NewRuntimeWithConfig(ctx, rc)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
		rt.Close(ctx)
		return nil, fmt.Errorf("wasm: instantiate WASI: %w", err)
	}
	if err := instantiateHostModule(ctx, rt); err != nil {
		rt.Close(ctx)
		return nil, fmt.Errorf("wasm: instantiate host module: %w", err)
	}
	mem := newMemoryPool(uint64(max(cfg.MemoryPoolBytes, 0)))
	return &Engine{cfg: cfg, rt: rt, cache: cache, mem: mem, alloc: mem.allocator(), modules: map[string]*Module{}, loading: map[string]chan struct{}{}}, nil
}

// Close closes every instance and module and the runtime.
func (e *Engine) Close(ctx context.Context) error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	e.mu.Unlock()
	err := e.rt.Close(ctx)
	e.mem.close() // after the instances, whose memories it may take
	if cerr := e.cache.Close(ctx); err == nil {
		err = cerr
	}
	return err
}

// PooledMemoryBytes returns the bytes of the released linear memories the
// engine keeps for its next instances (Config.MemoryPoolBytes).
func (e *Engine) PooledMemoryBytes() uint64 { return e.mem.heldBytes() }

// WithCompileWorkers returns ctx asking Load to compile a module's
// functions on n goroutines (wazero's compilation workers) instead of one.
// Host startup uses it; a hot swap does not, so that compiling a new
// version never takes every core from the shards serving meanwhile.
func WithCompileWorkers(ctx context.Context, n int) context.Context {
	return experimental.WithCompilationWorkers(ctx, n)
}
