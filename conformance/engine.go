package conformance

import (
	"context"
	"sync"

	"github.com/edgeshard/edgeshard/host"
)

// engines holds one shared wasm engine per compilation cache directory for
// the life of the process, so every scenario of every suite run in a test
// binary loads a plugin's compiled code once (loading it from the on-disk
// cache into a fresh runtime costs seconds under -race, per scenario).
var engines = struct {
	sync.Mutex
	m map[string]*host.Engine
}{m: map[string]*host.Engine{}}

// sharedEngine returns the process's engine for cacheDir.
func sharedEngine(ctx context.Context, cacheDir string) (*host.Engine, error) {
	engines.Lock()
	defer engines.Unlock()
	if e, ok := engines.m[cacheDir]; ok {
		return e, nil
	}
	e, err := host.NewEngine(ctx, host.EngineConfig{CacheDir: cacheDir})
	if err != nil {
		return nil, err
	}
	engines.m[cacheDir] = e
	return e, nil
}
