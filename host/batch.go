package host

import (
	"context"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host/internal/wasm"
)

// Batch delivery: when a shard has a backlog and its module exports
// edgeshard_fetch_batch (abi/ABI.md, "Batch delivery"), the actor hands
// the guest up to Config.FetchBatch queued requests in one call. Each
// request stays its own event — its own deadline, budgets, commit and
// reply, sent as soon as the guest answers it — so callers see what
// one-by-one delivery gives them. A request is marked running when it
// joins a batch: its caller can no longer abandon it while the requests
// ahead of it run (each bounded by the event timeout).

// defaultFetchBatch is Config.FetchBatch's default.
const defaultFetchBatch = 16

// batchRunner is an instance that takes batches (wasm.Instance).
type batchRunner interface {
	CanBatch() bool
	FetchBatch(ctx context.Context, env wasm.Env, reqs []*abi.Request, done wasm.BatchDone) (int, error)
}

// fetchBatch delivers ev, which is running on inst, together with the
// fetch events queued behind it, if inst takes batches and any are
// queued; false leaves ev to be delivered on its own.
func (a *actor) fetchBatch(inst runner, ev *event) bool {
	bi, ok := inst.(batchRunner)
	if !ok || !bi.CanBatch() || a.ns.h.cfg.FetchBatch <= 1 || len(a.queue) == 0 || !batchable(ev) {
		return false
	}
	evs := a.gather(ev)
	if len(evs) == 1 {
		return false
	}
	a.runBatch(inst, bi, evs)
	return true
}

// batchable: ev is a fetch that may share a batch. A WebSocket upgrade
// and a shard_call's event (which ends at its caller's deadline) are
// delivered on their own.
func batchable(ev *event) bool {
	return ev.kind == evFetch && !ev.upgrade && ev.deadline.IsZero()
}

// gather takes the fetch events queued behind ev, up to the batch size,
// marking each running; abandoned ones are dropped (they have no effect),
// and the first other event ends the batch and is handled right after it
// (actor.step), so events keep their order.
func (a *actor) gather(ev *event) []*event {
	evs := append(a.batch[:0], ev)
	for len(evs) < a.ns.h.cfg.FetchBatch {
		var e *event
		select {
		case e = <-a.queue:
		default:
		}
		if e == nil {
			break
		}
		if !batchable(e) {
			a.held = e
			break
		}
		if e.state.CompareAndSwap(evQueued, evRunning) {
			evs = append(evs, e)
		}
	}
	a.batch = evs
	return evs
}

// runBatch delivers evs, all running, to inst in one call; requests the
// guest did not answer — after a crash, or when it returned early — are
// delivered one by one, on a new instance if need be.
func (a *actor) runBatch(inst runner, bi batchRunner, evs []*event) {
	shard := a.id.String()
	reqs := make([]*abi.Request, len(evs))
	for i, e := range evs {
		setShardHeader(e.req, shard, e.chain)
		reqs[i] = e.req
	}
	a.ns.metrics.batched.Add(float64(len(evs)))
	a.resetAlarmChange()
	a.wsBegin(false)
	// Each request's context is cancelled once the call has returned: an
	// earlier one cancelled while the guest still runs could reach it
	// before the interrupter has moved onto the next (wasm.BatchDone).
	ctx, cancel := a.eventContext()
	cancels := []context.CancelFunc{cancel}
	defer func() {
		for _, c := range cancels {
			c()
		}
	}()
	t0 := time.Now()
	fenced := false // an answer's writes were refused (placement.go): the instance saw them
	n, err := bi.FetchBatch(ctx, a.env(), reqs, func(k int, resp *abi.Response) context.Context {
		a.ns.metrics.fetchDur.Observe(time.Since(t0).Seconds())
		a.ns.metrics.fetchOK.Inc()
		r := result{resp: resp}
		if a.dropFenced() {
			fenced, r = true, result{err: ErrFenced}
		} else {
			r.pending = a.commit()
		}
		if k == len(evs)-1 {
			// Idle before the last reply leaves, as runFetch.
			a.settle()
			a.idle()
		}
		evs[k].done <- r
		ctx, cancel := a.eventContext()
		cancels = append(cancels, cancel)
		t0 = time.Now()
		a.wsBegin(false)
		a.env() // the next event starts
		return ctx
	})
	switch {
	case err != nil && n < len(evs):
		a.ns.metrics.fetchDur.Observe(time.Since(t0).Seconds())
		a.ns.metrics.fetchErr.Inc()
		a.crashed("fetch", err)
		evs[n].done <- result{err: err}
		n++
	case err != nil:
		// Every request was answered; the guest died after the last
		// answer, in no request's event.
		a.crashed("fetch batch, after its last answer", err)
	default:
		// Writes and alarm changes made after the last answer belong to
		// no request: they are dropped, never committed with the next.
		a.store.Abort()
		a.resetAlarmChange()
		a.wsBegin(false)
		a.memBytes.Store(inst.MemoryBytes())
	}
	if fenced {
		a.closeInstance()
	}
	for _, e := range evs[n:] {
		inst, err := a.instance()
		if err != nil {
			e.done <- result{err: err}
			continue
		}
		a.runFetch(inst, e)
	}
	clear(evs) // the reused slice holds no finished event
}
