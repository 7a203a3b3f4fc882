package conformance

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// errNoScenarios is Run's error when the filter selects nothing.
var errNoScenarios = errors.New("no scenario matches the filter")

// logTailLines is how many host log lines Run prints for a failed scenario.
const logTailLines = 40

// Run runs the suite at suitePath against the plugin at wasmPath, each
// scenario as a subtest of t named after it. It is meant for plugin
// authors' own tests:
//
//	conformance.Run(t, "build/myshard.wasm", "conformance.json",
//		conformance.Options{Backend: "badger"})
//
// At most one Options is used. Without Logf, steps are traced with t.Logf
// (shown with go test -v or on failure). With Options.Parallel the
// scenarios run as parallel subtests (go test -parallel bounds them). A
// failed scenario reports its failure and the tail of the host's log.
func Run(t *testing.T, wasmPath string, suitePath string, opts ...Options) {
	t.Helper()
	if len(opts) > 1 {
		t.Fatalf("conformance.Run: %d Options given, at most 1 allowed", len(opts))
	}
	var o Options
	if len(opts) == 1 {
		o = opts[0]
	}
	s, err := LoadSuite(suitePath)
	if err != nil {
		t.Fatal(err)
	}
	r, err := newRunner(wasmPath, s, o)
	if err != nil {
		t.Fatalf("conformance suite %s: %v", suitePath, err)
	}
	t.Cleanup(r.cleanup)
	ran := 0
	for i := range s.Scenarios {
		sc := &s.Scenarios[i]
		if !r.selected(sc) {
			continue
		}
		ran++
		t.Run(sc.Name, func(t *testing.T) {
			if o.Parallel {
				t.Parallel()
			}
			logf := o.Logf
			if logf == nil {
				logf = t.Logf
			}
			res := r.run(t.Context(), sc, logf)
			if res.Passed {
				return
			}
			t.Error(res.Failure.Error())
			if n := len(res.Logs); n > 0 {
				tail := res.Logs[max(0, n-logTailLines):]
				t.Logf("host log (last %d of %d lines):\n%s", len(tail), n, strings.Join(tail, "\n"))
			}
		})
	}
	if ran == 0 {
		t.Fatal(fmt.Errorf("suite %s: %w %q", suitePath, errNoScenarios, o.Filter))
	}
}

// RunEachBackend runs Run once per storage backend — the real host's
// (Badger and a SQLite file) and the in-memory one — as subtests named
// after them; opts gives the rest (its Backend is set per subtest).
func RunEachBackend(t *testing.T, wasmPath, suitePath string, opts Options) {
	t.Helper()
	for _, backend := range []string{BackendBadger, BackendMemory} {
		t.Run(backend, func(t *testing.T) {
			o := opts
			o.Backend = backend
			Run(t, wasmPath, suitePath, o)
		})
	}
}
