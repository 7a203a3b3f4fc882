package host

import (
	"context"

	"github.com/edgeshard/edgeshard/host/internal/wasm"
)

// ModuleInfo describes a validated module.
type ModuleInfo struct {
	SHA256     string
	Size       int
	ABIVersion int
	Imports    []string
	Groups     []string
}

// ValidateModule checks a module the way the host does at load: wasm
// binary, ABI version, required exports and their signatures, imports only
// from granted groups, and that it instantiates and initialises. cacheDir
// ("" for none) is the compilation cache to use. Errors wrap
// ErrInvalidModule where the module is at fault.
func ValidateModule(ctx context.Context, bin []byte, grants []string, cacheDir string) (*ModuleInfo, error) {
	eng, err := wasm.NewEngine(ctx, wasm.Config{CacheDir: cacheDir})
	if err != nil {
		return nil, err
	}
	defer eng.Close(ctx)
	m, err := eng.Load(ctx, bin, grants)
	if err != nil {
		return nil, err
	}
	return &ModuleInfo{SHA256: m.SHA256, Size: m.Size, ABIVersion: m.ABIVersion, Imports: m.Imports, Groups: m.Groups}, nil
}
