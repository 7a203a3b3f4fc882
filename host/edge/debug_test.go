package edge

import (
	"testing"
	"time"
)

func TestDebugTiming(t *testing.T) {
	t0 := time.Now()
	e := startReal(t, envOpts{virtual: true})
	t.Logf("host up %v", time.Since(t0)); t0 = time.Now()
	f := newFixture(t, testConfig(), e.deps())
	postEvents(t, f, 50, 50)
	t.Logf("first 50 %v", time.Since(t0)); t0 = time.Now()
	postEvents(t, f, 200, 50)
	t.Logf("next 200 %v", time.Since(t0)); t0 = time.Now()
	e.vc.Advance(5 * time.Second)
	waitFor(t, 30*time.Second, "rows", func() bool { return f.scalar(`SELECT COUNT(*) FROM runtime_events`) >= 250 })
	t.Logf("flush %v", time.Since(t0)); t0 = time.Now()
	e.idle(t)
	t.Logf("idle %v", time.Since(t0)); t0 = time.Now()
	e.h.Close(t.Context())
	t.Logf("close %v", time.Since(t0))
}
