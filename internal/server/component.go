package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"
)

// Component is one part of a running server. Start brings it up and
// returns; the work it then does (serving, ticking) runs on goroutines it
// owns. Stop brings it down and waits for that work, within ctx. A
// component whose Start fails releases whatever it acquired itself: Stop is
// called only after a successful Start, and at most once.
type Component interface {
	Name() string
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
}

// group starts components in order and stops the started ones in reverse,
// each Stop bounded by grace (none when grace ≤ 0). It is not safe for
// concurrent use; Server serialises its calls.
type group struct {
	comps []Component
	up    int // comps[:up] are started and not stopped
	grace time.Duration
	log   zerolog.Logger
}

// start starts every component in order. If one fails, it stops the
// started ones in reverse, so that nothing is left running, and returns
// the failure (joined with any failure to stop).
func (g *group) start(ctx context.Context) error {
	for _, c := range g.comps[g.up:] {
		t0 := time.Now()
		if err := c.Start(ctx); err != nil {
			err = fmt.Errorf("start %s: %w", c.Name(), err)
			return errors.Join(err, g.stop(context.Background()))
		}
		g.up++
		g.log.Debug().Str("component", c.Name()).Dur("took_ms", time.Since(t0)).Msg("component started")
	}
	return nil
}

// stop stops the started components in reverse order, each within grace
// (and ctx), and goes on past failures: every started component gets its
// Stop. A Stop that has not returned shortly after its deadline is left
// behind, named as stuck — a shutdown never hangs on one component (Badger
// retrying a flush to a vanished directory, say). It returns every
// failure, naming the component.
func (g *group) stop(ctx context.Context) error {
	var errs []error
	for g.up > 0 {
		g.up--
		c := g.comps[g.up]
		t0 := time.Now()
		cctx, cancel := ctx, context.CancelFunc(func() {})
		if g.grace > 0 {
			cctx, cancel = context.WithTimeout(ctx, g.grace)
		}
		err := stopWithin(cctx, c)
		cancel()
		if err != nil {
			g.log.Warn().Err(err).Str("component", c.Name()).Dur("took_ms", time.Since(t0)).Msg("component did not stop cleanly")
			errs = append(errs, fmt.Errorf("stop %s: %w", c.Name(), err))
			continue
		}
		g.log.Debug().Str("component", c.Name()).Dur("took_ms", time.Since(t0)).Msg("component stopped")
	}
	return errors.Join(errs...)
}

// stuckSlack is how long past its deadline a Stop may take to notice it.
const stuckSlack = time.Second

// ErrStuck is matched by stop's error for a component whose Stop did not
// return after its deadline.
var ErrStuck = errors.New("still stopping after its deadline; left behind")

// stopWithin runs c.Stop(ctx) and waits for it until stuckSlack past
// ctx's end.
func stopWithin(ctx context.Context, c Component) error {
	done := make(chan error, 1)
	go func() { done <- c.Stop(ctx) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	t := time.NewTimer(stuckSlack)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return fmt.Errorf("%w (%v)", ErrStuck, context.Cause(ctx))
	}
}
