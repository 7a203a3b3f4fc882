package harness

import (
	"context"
	"sync"

	"github.com/edgeshard/edgeshard/host"
)

// engines holds one engine per compilation cache directory for the whole
// process: each plugin version is then compiled, or loaded from the cache,
// once per process rather than once per host.
var engines = struct {
	sync.Mutex
	m map[string]*host.Engine
}{m: map[string]*host.Engine{}}

// SharedEngine returns the process's engine for cacheDir, starting it on
// first use. It is never closed; the process's exit releases it.
func SharedEngine(ctx context.Context, cacheDir string) (*host.Engine, error) {
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
