package main

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// sideProfiler takes a CPU profile of each measured round of the
// comparison sides named side (-profile-side with -cpuprofile), so that a
// profile shows one side's cost without the warm-ups, the module compiles
// and the other sides of the same process: round k of figure fig goes to
// path.fig.k, and `go tool pprof` merges the files given together.
type sideProfiler struct {
	side, path string
}

// start begins the profile of round k of side name in figure fig, if it
// is one to profile; the function it returns ends it.
func (p *sideProfiler) start(fig, name string, k int, logf func(string, ...any)) func() {
	if p.side == "" || name != p.side {
		return func() {}
	}
	path := fmt.Sprintf("%s.%s.%d", p.path, fig, k)
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
		if err != nil {
			f.Close()
		}
	}
	if err != nil {
		logf("%s round %d: no profile of %s: %v", fig, k, name, err)
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			logf("%s round %d: profile %s: %v", fig, k, path, err)
			return
		}
		logf("%s round %d: profile of %s in %s", fig, k, name, path)
	}
}
