package host

import (
	"context"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host/internal/wasm"
)

// ModuleInfo describes a validated module.
type ModuleInfo struct {
	SHA256     string
	Size       int
	ABIVersion int
	Imports    []string // "module.name", sorted, each once
	Groups     []string
	// MemoryMinPages and MemoryMaxPages are the linear memory's initial
	// size and the most it may grow to, in 64 KiB pages: a maximum the
	// module does not declare, or declares above the memory cap, is the
	// cap.
	MemoryMinPages, MemoryMaxPages uint32
	// WebSockets: the module exports edgeshard_ws_event, so it may accept
	// WebSocket upgrades (abi/ABI.md, section 10).
	WebSockets bool
}

// ValidateOptions say what a module is validated against.
type ValidateOptions struct {
	// Grants are the binding groups the module may import from
	// (abi.GroupCore is implied); Binding.Grants gives a binding's.
	Grants []string
	// CacheDir is the compilation cache to use ("" for none).
	CacheDir string
	// MemoryLimitMiB is the memory cap (default 128, as Config's).
	MemoryLimitMiB int
}

// ValidateModule checks a module the way the host does at load: wasm
// binary, ABI version, required exports and their signatures, imports only
// from granted groups, and that it instantiates and initialises. cacheDir
// ("" for none) is the compilation cache to use. Errors wrap
// ErrInvalidModule where the module is at fault.
func ValidateModule(ctx context.Context, bin []byte, grants []string, cacheDir string) (*ModuleInfo, error) {
	return Validate(ctx, bin, ValidateOptions{Grants: grants, CacheDir: cacheDir})
}

// Validate is ValidateModule with every option.
func Validate(ctx context.Context, bin []byte, o ValidateOptions) (*ModuleInfo, error) {
	eng, err := wasm.NewEngine(ctx, wasm.Config{CacheDir: o.CacheDir, MemoryLimitMiB: o.MemoryLimitMiB})
	if err != nil {
		return nil, err
	}
	defer eng.Close(ctx)
	m, err := eng.Load(ctx, bin, o.Grants)
	if err != nil {
		return nil, err
	}
	return &ModuleInfo{SHA256: m.SHA256, Size: m.Size, ABIVersion: m.ABIVersion, Imports: m.Imports, Groups: m.Groups,
		MemoryMinPages: m.MemoryMinPages, MemoryMaxPages: m.MemoryMaxPages, WebSockets: m.WebSockets}, nil
}

// Grants returns the binding groups the binding grants its module:
// storage, alarm, vars, log and websocket always, sql and analytics when
// it names a database or dataset, call when it names bindings to call,
// fetch when it has a Fetch config (core is implied).
func (b Binding) Grants() []string {
	g := []string{abi.GroupStorage, abi.GroupAlarm, abi.GroupVars, abi.GroupLog, abi.GroupWebSocket}
	if b.SQL != "" {
		g = append(g, abi.GroupSQL)
	}
	if b.Analytics != "" {
		g = append(g, abi.GroupAnalytics)
	}
	if len(b.Calls) > 0 {
		g = append(g, abi.GroupCall)
	}
	if b.Fetch != nil {
		g = append(g, abi.GroupFetch)
	}
	return g
}
