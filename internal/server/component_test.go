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
	if got, want := j.take(), []string{"start a", "start b", "start c"}; !slices.Equal(got, want) {
		t.Fatalf("start: %q, want %q", got, want)
	}
	if err := g.stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, want := j.take(), []string{"stop c", "stop b", "stop a"}; !slices.Equal(got, want) {
		t.Fatalf("stop: %q, want %q", got, want)
	}
	if err := g.stop(context.Background()); err != nil || len(j.take()) != 0 {
		t.Fatalf("a second stop stopped something again (err %v)", err)
	}
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
	if got, want := j.take(), []string{"start a", "start b", "start c", "stop b", "stop a"}; !slices.Equal(got, want) {
		t.Fatalf("journal %q, want %q", got, want)
	}
	if err := g.stop(context.Background()); err != nil || len(j.take()) != 0 {
		t.Fatalf("stop after a failed start stopped something again (err %v)", err)
	}
}

// TestGroupStopBoundsEachByGraceAndGoesOn: a component that does not stop
// in time gets its grace, not more; the error names it, and the components
// started before it are still stopped.
func TestGroupStopBoundsEachByGraceAndGoesOn(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	j := &journal{}
	comps := fakes(j, "a", "b", "c")
	comps[1].(*fake).blockStop = true
	g := group{comps: comps, grace: 50 * time.Millisecond}
	if err := g.start(context.Background()); err != nil {
		t.Fatal(err)
	}
	j.take()
	t0 := time.Now()
	err := g.stop(context.Background())
	if took := time.Since(t0); took > 5*time.Second {
		t.Fatalf("stop took %v with a grace of 50ms", took)
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "stop b") {
		t.Fatalf("stop: %v, want stop b: deadline exceeded", err)
	}
	if got, want := j.take(), []string{"stop c", "stop b", "stop a"}; !slices.Equal(got, want) {
		t.Fatalf("journal %q, want %q", got, want)
	}
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
	g := group{comps: comps, grace: 50 * time.Millisecond}
	if err := g.start(context.Background()); err != nil {
		t.Fatal(err)
	}
	j.take()
	t0 := time.Now()
	err := g.stop(context.Background())
	if took := time.Since(t0); took > stuckSlack+5*time.Second {
		t.Fatalf("stop took %v with a grace of 50ms", took)
	}
	if !errors.Is(err, ErrStuck) || !strings.Contains(err.Error(), "stop storage") {
		t.Fatalf("stop: %v, want stop storage: ErrStuck", err)
	}
	if got, want := j.take(), []string{"stop b", "stop storage", "stop a"}; !slices.Equal(got, want) {
		t.Fatalf("journal %q, want %q", got, want)
	}
	st.fake.quit <- struct{}{} // end the stuck component's own goroutine
}
