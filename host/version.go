package host

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host/internal/wasm"
	"github.com/edgeshard/edgeshard/internal/hostinternal"
)

// Version is one loaded module version of a namespace. A version that is
// neither current nor kept for rollback is freed as soon as no shard
// instance uses it.
type Version struct {
	mod    *wasm.Module // nil for a native binding
	native hostinternal.NewNativeShard
	// refs is the only count of what keeps the compiled code alive: the
	// namespace holds one reference while the version is current and one
	// while it is kept for rollback, and every instance of it — serving a
	// shard or prepared for a swap — holds one. Whoever drops the last
	// reference frees it; nothing else ever closes a version.
	refs atomic.Int64

	// Source is the module's origin: its file path, "config" for bytes
	// given in the Binding, or what Swap was told ("push", a path).
	Source   string
	LoadedAt time.Time
}

// newVersion returns a version holding one reference, its creator's.
func newVersion(mod *wasm.Module, native hostinternal.NewNativeShard, source string) *Version {
	v := &Version{mod: mod, native: native, Source: source, LoadedAt: time.Now()}
	v.refs.Store(1)
	return v
}

// acquire takes a reference, unless the version has already been freed
// (its last reference dropped): then it returns false and the caller must
// look again for the version it wants.
func (v *Version) acquire() bool {
	for {
		n := v.refs.Load()
		if n <= 0 {
			return false
		}
		if v.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// release drops a reference; the last one frees the compiled code.
func (v *Version) release() {
	switch n := v.refs.Add(-1); {
	case n == 0:
		if v.mod != nil {
			v.mod.Close(context.Background())
		}
	case n < 0:
		panic("host: module version released more often than acquired")
	}
}

// SHA256 is the module's hex sha256 ("native" for a native binding).
func (v *Version) SHA256() string {
	if v.mod == nil {
		return "native"
	}
	return v.mod.SHA256
}

// Short is the first 12 hex digits of SHA256.
func (v *Version) Short() string {
	if v.mod == nil {
		return "native"
	}
	return v.mod.Short()
}

// Size is the module's size in bytes.
func (v *Version) Size() int {
	if v.mod == nil {
		return 0
	}
	return v.mod.Size
}

// ABIVersion is the ABI version the module reported.
func (v *Version) ABIVersion() int {
	if v.mod == nil {
		return abi.Version
	}
	return v.mod.ABIVersion
}

// Imports lists the module's imports.
func (v *Version) Imports() []string {
	if v.mod == nil {
		return nil
	}
	return v.mod.Imports
}
