package main

import (
	"context"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeshard/edgeshard/internal/pgtest"
	"github.com/edgeshard/edgeshard/internal/proctest"
	"github.com/edgeshard/edgeshard/internal/testutil"
)

// logWriter sends each line to t.Log.
type logWriter struct {
	t   *testing.T
	mu  sync.Mutex
	buf strings.Builder
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	s := w.buf.String()
	for {
		i := strings.IndexByte(s, '\n')
		if i < 0 {
			break
		}
		w.t.Log(s[:i])
		s = s[i+1:]
	}
	w.buf.Reset()
	w.buf.WriteString(s)
	return len(p), nil
}

// TestCrashLoopLosesNothing is `make crash-test` in small: the real binary
// under load, killed with SIGKILL twice (right after a counter flush log
// line, then at a random point), restarted each time; every acknowledged
// view, run, like and event is in SQL once, nothing beyond the requests
// whose fate the kills left unknown.
func TestCrashLoopLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: kills and restarts the real binary")
	}
	o := smallRun(t, "primary", 2, 2*time.Second, 4)
	checkRun(t, o, 4*time.Minute, 2, []string{"views", "runs", "likes", "like_rows", "events"},
		"like_rows", "likes") // random likes and unlikes may net to nothing
}

// TestFleetCrashLoopLosesNothing is `make crash-test-fleet` in small: three
// real hosts (pop-a, pop-b, pop-c) on one throwaway PostgreSQL, clients
// spreading likes, follows, views, runs and events over them, reconcile
// running on random hosts, and the hosts killed with SIGKILL and restarted
// at random (twice two at once). After draining every host, PostgreSQL
// holds every acknowledged write exactly once, stream by stream.
func TestFleetCrashLoopLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: kills and restarts the real binary")
	}
	pgtest.Shared(t) // skips without PostgreSQL (fails under CI=true)
	o := smallRun(t, "fleet", 10, 1500*time.Millisecond, 6)
	checkRun(t, o, 5*time.Minute, 12, []string{"views", "runs", "likes", "like_rows", "followers", "follow_rows",
		"following_after_reconcile", "following_rows", "events"})
}

// TestClusterCrashLoopLosesNothing is `make crash-test-cluster` in small:
// three real hosts of one POP (an etcd the crash test starts, one
// throwaway PostgreSQL), clients spreading likes, follows, views, runs,
// events and per-name page views over them, while hosts are killed,
// frozen past their lease, made to leave (SIGTERM, or cluster leave) and
// restarted — ten cycles, each action twice. After draining, PostgreSQL
// holds every acknowledged write exactly once, no page number was
// acknowledged twice, and no shard was ever owned by two hosts at once.
func TestClusterCrashLoopLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: kills and restarts the real binary")
	}
	pgtest.Shared(t) // skips without PostgreSQL (fails under CI=true)
	o := smallRun(t, "cluster", 10, 1500*time.Millisecond, 6)
	o.PageModule = testutil.Plugin(t, "examples/tutorial")
	results := checkRun(t, o, 6*time.Minute, 4, []string{"views", "runs", "likes", "like_rows", "followers", "follow_rows",
		"following_after_reconcile", "following_rows", "events", "page_views"})
	if r := results[0]; r.Freezes != 4 || r.Drains != 4 {
		t.Errorf("%d freezes and %d drains, want 4 and 4", r.Freezes, r.Drains)
	}
}

// smallRun is a crash run of one mode in small: the real binary and
// plugins, 8 shards per binding, 8 posts, a fresh seed.
func smallRun(t *testing.T, mode string, cycles int, cycleMax time.Duration, clients int) Options {
	return Options{
		Bin:           proctest.Binary(t),
		EventsModule:  testutil.Plugin(t, "plugins/runtimeevents"),
		CounterModule: testutil.Plugin(t, "plugins/counters"),
		CacheDir:      testutil.CacheDir(),
		WorkDir:       workDir(t),
		Modes:         []string{mode},
		Cycles:        cycles,
		CycleMax:      cycleMax,
		Clients:       clients,
		Interval:      2 * time.Millisecond,
		Shards:        8,
		Posts:         8,
		Seed:          uint64(time.Now().UnixNano()),
		Out:           &logWriter{t: t},
	}
}

// workDir is a directory for a crash run's data and logs, removed when
// the test passes and kept (its path logged) when it fails.
func workDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "edgeshard-crashtest-"+t.Name()+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("data and logs of the failed run kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	return dir
}

// checkRun runs o within timeout and wants kills kills, no failure, every
// stream consistent, each of want present and every stream but mayBeIdle
// with something acknowledged (else the load did not run).
func checkRun(t *testing.T, o Options, timeout time.Duration, kills int, want []string, mayBeIdle ...string) []ModeResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	results, err := Run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 1 || results[0].Kills != kills {
		t.Fatalf("results %+v", results)
	}
	for _, f := range results[0].Failed {
		t.Error(f)
	}
	names := map[string]bool{}
	for _, s := range results[0].Streams {
		names[s.Name] = true
		if !s.ok() {
			t.Errorf("%s\n%s", s, strings.Join(s.Detail, "\n"))
		}
		if s.Acknowledged == 0 && !slices.Contains(mayBeIdle, s.Name) {
			t.Errorf("stream %s: nothing acknowledged, the load did not run", s.Name)
		}
	}
	for _, w := range want {
		if !names[w] {
			t.Errorf("stream %s missing", w)
		}
	}
	return results
}
