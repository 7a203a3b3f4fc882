package edge

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// The edge API fails fast when its SQL database is down, instead of
// spending a busy timeout (5 s) per statement on every request:
//
//   - a budget per request, not per step: every SQL step of one request
//     shares one deadline (Config.SQLBudget from the request's start);
//   - a circuit breaker: after sqlTripAfter consecutive failures the
//     database is known down and SQL is skipped at once
//     (errSQLDown) — the rate limiter goes straight to memory, a like
//     answers 503 at once — until sqlCooldown has passed; then one request
//     tries it again (half-open), and its success closes the circuit.

// errSQLDown is returned instead of trying SQL while the circuit is open.
var errSQLDown = errors.New("sql database known down: skipped (circuit open after repeated failures)")

const (
	sqlTripAfter = 3
	sqlCooldown  = 5 * time.Second
)

// sqlGuard is the circuit breaker.
type sqlGuard struct {
	mu        sync.Mutex
	now       func() time.Time
	failures  int       // consecutive
	openUntil time.Time // zero when closed
	trial     bool      // a half-open trial is under way
	onChange  func(open bool)
}

// allow returns errSQLDown while the circuit is open; after the cooldown it
// lets one caller through as a trial.
func (g *sqlGuard) allow() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.openUntil.IsZero() {
		return nil
	}
	if g.trial || g.now().Before(g.openUntil) {
		return errSQLDown
	}
	g.trial = true
	return nil
}

// record notes the outcome of SQL work allowed by allow. A request's own
// cancellation says nothing about the database and is not counted.
func (g *sqlGuard) record(err error) {
	if errors.Is(err, context.Canceled) || errors.Is(err, errSQLDown) {
		g.mu.Lock()
		g.trial = false
		g.mu.Unlock()
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	wasOpen := !g.openUntil.IsZero()
	g.trial = false
	if err == nil {
		g.failures, g.openUntil = 0, time.Time{}
		if wasOpen && g.onChange != nil {
			g.onChange(false)
		}
		return
	}
	g.failures++
	if g.failures >= sqlTripAfter {
		g.openUntil = g.now().Add(sqlCooldown)
		if !wasOpen && g.onChange != nil {
			g.onChange(true)
		}
	}
}

// open reports whether the circuit is open (for readiness).
func (g *sqlGuard) open() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return !g.openUntil.IsZero()
}

// sqlDeadlineKey carries a request's SQL deadline (its start + SQLBudget).
type sqlDeadlineKey struct{}

// withSQLBudget starts the request's SQL budget.
func (a *API) withSQLBudget(ctx context.Context) context.Context {
	return context.WithValue(ctx, sqlDeadlineKey{}, time.Now().Add(a.cfg.SQLBudget))
}

// sqlContext returns the context for one SQL step of the request of ctx:
// not cancelled by the client (a write is never split by a vanished
// client), ending at the request's SQL deadline — or SQLBudget from now
// outside a request (flushes, jobs).
func (a *API) sqlContext(ctx context.Context) (context.Context, context.CancelFunc) {
	deadline, ok := ctx.Value(sqlDeadlineKey{}).(time.Time)
	if !ok {
		deadline = time.Now().Add(a.cfg.SQLBudget)
	}
	return context.WithDeadline(context.WithoutCancel(ctx), deadline)
}

// guarded runs one SQL step of a request under the breaker and the
// request's budget.
func (a *API) guarded(ctx context.Context, fn func(ctx context.Context) error) error {
	if err := a.guard.allow(); err != nil {
		return err
	}
	sctx, cancel := a.sqlContext(ctx)
	defer cancel()
	err := fn(sctx)
	if err != nil && sctx.Err() != nil && ctx.Err() == nil {
		err = fmt.Errorf("%w (the request's SQL budget of %v is spent)", err, a.cfg.SQLBudget)
	}
	a.guard.record(err)
	return err
}
