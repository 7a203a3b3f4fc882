package server

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// fake is a component that records its calls in a shared journal and,
// like the real ones, runs a goroutine from Start until Stop.
type fake struct {
	name      string
	j         *journal
	startErr  error
	blockStop bool // Stop waits for its context to end
	quit      chan struct{}
	done      chan struct{}
}

type journal struct {
	mu    sync.Mutex
	lines []string
}

func (j *journal) add(s string) {
	j.mu.Lock()
	j.lines = append(j.lines, s)
	j.mu.Unlock()
}

func (j *journal) take() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := j.lines
	j.lines = nil
	return out
}

// want takes the journal and wants exactly lines; what names the step.
func (j *journal) want(t *testing.T, what string, lines ...string) {
	t.Helper()
	if got := j.take(); !slices.Equal(got, lines) {
		t.Fatalf("%s: journal %q, want %q", what, got, lines)
	}
}

// timedStop starts g, then stops it (forgetting the start lines) and
// wants the stop back within limit; it returns the stop's error.
func timedStop(t *testing.T, g group, j *journal, limit time.Duration) error {
	t.Helper()
	if err := g.start(context.Background()); err != nil {
		t.Fatal(err)
	}
	j.take()
	t0 := time.Now()
	err := g.stop(context.Background())
	if took := time.Since(t0); took > limit {
		t.Fatalf("stop took %v with a grace of %v", took, g.grace)
	}
	return err
}

func (f *fake) Name() string { return f.name }

func (f *fake) Start(context.Context) error {
	f.j.add("start " + f.name)
	if f.startErr != nil {
		return f.startErr
	}
	f.quit, f.done = make(chan struct{}), make(chan struct{})
	go func() { defer close(f.done); <-f.quit }()
	return nil
}

func (f *fake) Stop(ctx context.Context) error {
	f.j.add("stop " + f.name)
	close(f.quit)
	<-f.done
	if f.blockStop {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

func fakes(j *journal, names ...string) []Component {
	var cs []Component
	for _, n := range names {
		cs = append(cs, &fake{name: n, j: j})
	}
	return cs
}

func TestGroupStartsInOrderAndStopsInReverse(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	j := &journal{}
	g := group{comps: fakes(j, "a", "b", "c")}
	if err := g.start(context.Background()); err != nil {
		t.Fatal(err)
	}
	j.want(t, "start", "start a", "start b", "start c")
	if err := g.stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	j.want(t, "stop", "stop c", "stop b", "stop a")
	if err := g.stop(context.Background()); err != nil {
		t.Fatalf("a second stop: %v", err)
	}
	j.want(t, "a second stop")
}

// TestGroupFailedStartStopsTheStartedInReverse: when the third of four
// components fails to start, the first two are stopped, last started
// first; the failing one is not stopped (it cleans up after itself), the
// fourth never starts, and no goroutine of any is left.
func TestGroupFailedStartStopsTheStartedInReverse(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	j := &journal{}
	boom := errors.New("boom")
	comps := fakes(j, "a", "b", "c", "d")
	comps[2].(*fake).startErr = boom
	g := group{comps: comps}
	err := g.start(context.Background())
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "start c") {
		t.Fatalf("start: %v, want start c: boom", err)
	}
	j.want(t, "journal", "start a", "start b", "start c", "stop b", "stop a")
	if err := g.stop(context.Background()); err != nil {
		t.Fatalf("stop after a failed start: %v", err)
	}
	j.want(t, "stop after a failed start")
}

// TestGroupStopBoundsEachByGraceAndGoesOn: a component that does not stop
// in time gets its grace, not more; the error names it, and the components
// started before it are still stopped.
func TestGroupStopBoundsEachByGraceAndGoesOn(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	j := &journal{}
	comps := fakes(j, "a", "b", "c")
	comps[1].(*fake).blockStop = true
	err := timedStop(t, group{comps: comps, grace: 50 * time.Millisecond}, j, 5*time.Second)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "stop b") {
		t.Fatalf("stop: %v, want stop b: deadline exceeded", err)
	}
	j.want(t, "journal", "stop c", "stop b", "stop a")
}

// stuck is a component whose Stop ignores its context and never returns
// until released (Badger retrying a flush forever).
type stuck struct {
	fake
	release chan struct{}
}

func (s *stuck) Stop(context.Context) error {
	s.j.add("stop " + s.name)
	<-s.release
	return nil
}

// TestGroupStopLeavesAStuckComponentBehind: a Stop that ignores its
// deadline is left behind shortly after it, named as stuck (ErrStuck), and
// the components started before it still stop.
func TestGroupStopLeavesAStuckComponentBehind(t *testing.T) {
	j := &journal{}
	comps := fakes(j, "a", "b")
	st := &stuck{fake: fake{name: "storage", j: j}, release: make(chan struct{})}
	defer close(st.release)
	comps = []Component{comps[0], st, comps[1]}
	err := timedStop(t, group{comps: comps, grace: 50 * time.Millisecond}, j, stuckSlack+5*time.Second)
	if !errors.Is(err, ErrStuck) || !strings.Contains(err.Error(), "stop storage") {
		t.Fatalf("stop: %v, want stop storage: ErrStuck", err)
	}
	j.want(t, "journal", "stop b", "stop storage", "stop a")
	st.fake.quit <- struct{}{} // end the stuck component's own goroutine
}
