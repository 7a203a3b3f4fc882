package host

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/host/clock"
	"github.com/edgeshard/edgeshard/host/internal/wasm"
	"github.com/edgeshard/edgeshard/storage"
	"github.com/rs/zerolog"
)

type eventKind int

const (
	evFetch   eventKind = iota
	evAlarm             // the shard's alarm is due
	evInspect           // run inspect on the shard's storage
	evRestart           // discard the instance
	evPrepare           // instantiate ver ahead of a swap and keep it ready
	evSwitch            // move onto the current version, with the prepared instance
	evRun               // run a function on the actor between two events (snapshot.go)
	evWS                // a WebSocket event (websocket_env.go)
)

type event struct {
	kind    eventKind
	req     *abi.Request
	retry   int               // evAlarm: retry count
	inspect func(StorageView) // evInspect: runs on the actor goroutine
	ver     *Version          // evPrepare: the event holds a reference for the actor
	run     func(*actor)      // evRun: runs on the actor goroutine unless abandoned while queued
	upgrade bool              // evFetch: a WebSocket upgrade request the shard may accept
	ws      *wsDelivery       // evWS
	state   atomic.Int32      // evFetch: evQueued → evRunning, or evAbandoned by a caller that gave up
	done    chan result
	// A shard_call's fetch (call.go): the shards waiting on it, and the
	// calling event's deadline, which the event does not outlive.
	chain    []string
	deadline time.Time
}

// Fetch event states: a caller that gives up while its event is queued
// marks it abandoned and the actor skips it; once running, the caller waits
// for the outcome, so "did it happen?" always has a definite answer.
const (
	evQueued int32 = iota
	evRunning
	evAbandoned
)

type result struct {
	resp    *abi.Response
	pending *storage.Pending
	err     error
	sock    *socket // evFetch of an upgrade: the socket the shard accepted
}

// actor owns one shard: its instance, its storage handle, its queue. All
// of them are touched only by the actor's goroutine, so events of a shard
// never overlap (the input gate) and no locks guard them. Its side of the
// guest's host functions is in env.go, its alarm retries in alarmretry.go.
type actor struct {
	ns    *Namespace
	shard string
	id    storage.ShardID
	queue chan *event
	stop  chan struct{}
	log   zerolog.Logger
	glog  zerolog.Logger // for guest records: binding only, shard added unless the guest names one

	store *storage.Shard
	inst  runner
	ver   *Version  // the version inst runs; the actor holds a reference
	next  *prepared // made by evPrepare, installed by evSwitch (or the next event)
	out   *guestOutput
	last  *storage.Pending // most recent commit, awaited before eviction

	// Alarm changes made by the current event, applied to the scheduler
	// once the event commits.
	alarmSet     bool
	alarmAt      int64
	alarmDeleted bool

	// claim is the shard's ownership on a host with a Placement (nil
	// otherwise): the actor runs only under it (placement.go). leave is
	// set, under the namespace's lock, once the actor hands the shard off:
	// enqueue then refuses new events.
	claim   Claim
	leaving bool

	callChain []string // the shards waiting on the current event, when a shard_call made it (call.go)

	live     atomic.Bool
	memBytes atomic.Uint64
	trace    bool // log every host call (Config.TraceShard)

	guestLim guestState // limits.go: the guest's budgets, quota, alarm pacing and log codes
	sq       shardDB    // shardsql.go: the shard's own SQL database (sql = "shard")
	// The instance memory budget (budget.go). charge, lru and victim are
	// guarded by the budget's mutex (charge is written only by the actor's
	// goroutine, which may read it without); parked is the actor's own
	// note that it parked itself or may have been made a victim since its
	// last event; evict is where the budget tells it to leave.
	charge    uint64
	lru       *list.Element
	victim    bool
	parked    bool
	evict     chan struct{}
	lastEvent atomic.Int64 // unix ms its last fetch or alarm started (inspect_trace.go: env)
	wsev      wsEventState // the current event's WebSocket side (websocket_env.go)

	held  *event   // taken from the queue while gathering a batch, handled next (batch.go)
	batch []*event // the batch being delivered, reused
}

// prepared is an instance of a version about to become current, made
// ready before a swap switches the namespace to it. It holds a reference
// to its version.
type prepared struct {
	ver  *Version
	inst runner
}

func newActor(ns *Namespace, shard string, claim Claim) *actor {
	id := ns.shardID(shard)
	return &actor{
		ns: ns, shard: shard, id: id, claim: claim,
		queue: make(chan *event, ns.h.cfg.QueueDepth),
		stop:  make(chan struct{}),
		log:   ns.h.log.With().Str("binding", ns.name).Str("shard", shard).Logger(),
		glog:  ns.h.log.With().Str("binding", ns.name).Logger(),
		store: ns.h.store.Shard(id),
		out:   &guestOutput{},
		trace: traced(ns.h.cfg.TraceShard, ns.name, shard),
		evict: make(chan struct{}, 1),
	}
}

func (a *actor) run() {
	defer a.ns.h.wg.Done()
	idle := a.ns.h.cfg.IdleTimeout
	timer := time.NewTimer(idle)
	defer timer.Stop()
	var claimDone <-chan struct{}
	if a.claim != nil {
		a.claim.Attach() // if done already, the first select hands the shard off
		claimDone = a.claim.Done()
		if err := a.startClaimed(); err != nil {
			a.log.Error().Err(err).Msg("erasing the stale storage of a freshly claimed shard failed; giving the shard up")
			a.claim.Release()
			a.handOff()
			return
		}
	}
	for {
		select {
		case <-claimDone:
			a.handOff()
			return
		case ev := <-a.queue:
			a.step(ev)
			if len(a.queue) == 0 {
				a.idle()
				timer.Reset(idle)
			}
		case <-a.evict:
			if !a.ns.h.budget.isVictim(a) {
				continue // an event came first: it stays
			}
			if a.leave("budget") {
				return
			}
			a.ns.h.budget.unpark(a) // an event is queued: it stays, the start asking picks another
			a.parked = false
		case <-timer.C:
			if a.leave("idle") {
				return
			}
			timer.Reset(idle)
		case <-a.stop:
			for {
				select {
				case ev := <-a.queue:
					a.step(ev)
					continue
				default:
				}
				break
			}
			a.waitLast()
			a.exit()
			a.store.Close() // no other actor of the shard can start now
			if a.claim != nil {
				a.claim.Release()
			}
			return
		}
	}
}

// step handles one event: the actor is busy, off the budget's idle list,
// until it is done and the budget knows what its instance holds now.
func (a *actor) step(ev *event) {
	if a.parked {
		a.parked = false
		a.ns.h.budget.unpark(a)
	}
	a.handle(ev)
	a.settle()
	for a.held != nil { // a control event that ended a batch keeps its place
		ev, a.held = a.held, nil
		a.handle(ev)
		a.settle()
	}
}

// idle puts the actor on the budget's idle list if it holds an instance
// and no event is queued: it may be evicted from now on.
func (a *actor) idle() {
	if !a.parked && a.charge > 0 && len(a.queue) == 0 {
		a.parked = true
		a.ns.h.budget.park(a)
	}
}

// leave ends an idle actor, as its idle timeout or the memory budget
// (reason) asks, once its last commit is durable; false if an event
// arrived meanwhile. Under a claim, a shard that holds sockets keeps its
// actor, and so its claim and its sockets on this host (placement.go):
// only its instance goes (the sockets hibernate), and leave is false.
func (a *actor) leave(reason string) bool {
	if a.claim != nil && len(a.sockets().match("")) > 0 {
		if a.live.Load() && len(a.queue) == 0 {
			a.waitLast()
			a.ns.metrics.evicted(reason)
			a.exit()
		}
		return false
	}
	a.waitLast()
	if !a.ns.evict(a) {
		return false
	}
	if a.live.Load() {
		a.ns.metrics.evicted(reason)
	}
	a.exit()
	if a.claim != nil {
		detach(a.claim)
	}
	return true
}

// exit releases the instances and the SQL database the actor holds once
// no event can reach it. Its storage handles are released by whoever
// removed it from the namespace (Namespace.evict, or the stop path of run).
func (a *actor) exit() {
	a.closeInstance()
	a.dropPrepared()
	a.closeShardSQL()
}

func (a *actor) waitLast() {
	if a.last != nil {
		a.last.Wait(context.Background())
		a.last = nil
	}
	if a.sq.mark != nil {
		a.sq.mark.Submitted().Wait(context.Background()) // unconfirmed: not in last
	}
}

func (a *actor) handle(ev *event) {
	if err := a.store.Err(); err != nil {
		a.log.Error().Err(err).Msg("shard storage commit failed; discarding instance and reloading from storage")
		a.closeInstance()
		a.store.Reset()
		a.sq.checked = false
	}
	switch ev.kind {
	case evFetch:
		a.handleFetch(ev)
	case evAlarm:
		a.handleAlarm(ev.retry)
	case evInspect:
		ev.inspect(storageView{a.store})
		ev.done <- result{}
	case evRestart:
		a.closeInstance()
		ev.done <- result{}
	case evPrepare:
		a.prepare(ev.ver)
		ev.done <- result{}
	case evSwitch:
		a.switchVersion()
	case evRun:
		if ev.state.CompareAndSwap(evQueued, evRunning) {
			ev.run(a)
		}
		ev.done <- result{}
	case evWS:
		a.handleWS(ev)
	}
}

// instance returns the instance to run the next event on: that of the
// current version, started now unless it is running or was prepared.
func (a *actor) instance() (runner, error) {
	cur := a.ns.cur.Load()
	if a.inst != nil && a.ver == cur && a.inst.Err() == nil {
		return a.inst, nil
	}
	a.closeInstance()
	if a.next != nil && a.next.ver == cur {
		// The namespace switched before this shard's evSwitch arrived.
		a.install(a.next)
		a.next = nil
		return a.inst, nil
	}
	if err := a.reserve(); err != nil {
		return nil, err
	}
	v := a.ns.acquireCurrent()
	t0 := time.Now()
	inst, err := a.instantiate(v)
	if err != nil {
		v.release()
		a.recharge() // gives the reservation back
		a.log.Error().Err(err).Str("guest_output", a.out.take()).Msg("shard instance failed to start")
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	a.log.Debug().Str("module", v.Short()).Dur("took_ms", time.Since(t0)).Msg("shard instance started")
	a.ns.startBytes.Store(inst.MemoryBytes())
	a.install(&prepared{ver: v, inst: inst})
	a.recharge()
	return inst, nil
}

// reserve makes room in the memory budget for an instance about to start
// (budget.go), waiting for it if need be.
func (a *actor) reserve() error {
	need := a.ns.startBytes.Load()
	if need == 0 {
		need = defaultStartEstimate
	}
	waited, err := a.ns.h.budget.reserve(a, need+instanceOverhead)
	if waited {
		a.ns.metrics.startWait(err == nil)
	}
	if err != nil {
		a.log.Warn().Err(err).Msg("instance start refused: the instance memory budget is full and no instance is idle")
	}
	return err
}

// footprint is what the actor's instances hold: what the budget charges.
func (a *actor) footprint() uint64 {
	var n uint64
	if a.inst != nil {
		n += a.memBytes.Load() + instanceOverhead
	}
	if a.next != nil {
		n += a.next.inst.MemoryBytes() + instanceOverhead
	}
	return n
}

// recharge brings the actor's charge in the budget to its footprint.
func (a *actor) recharge() {
	if f := a.footprint(); f != a.charge {
		a.ns.h.budget.set(a, f)
	}
}

// settle follows an event: the instance's memory may have grown.
func (a *actor) settle() {
	if a.inst != nil && a.inst.Err() == nil {
		a.memBytes.Store(a.inst.MemoryBytes())
	}
	a.recharge()
}

// install makes p the shard's instance (the actor has none).
func (a *actor) install(p *prepared) {
	a.inst, a.ver = p.inst, p.ver
	a.ns.metrics.starts.Inc()
	a.live.Store(true)
	a.memBytes.Store(p.inst.MemoryBytes())
}

// instantiate starts an instance of v wired to this shard's output and
// clock.
func (a *actor) instantiate(v *Version) (runner, error) {
	if v.native != nil {
		return newNativeRunner(v.native(a.shard), a), nil
	}
	cfg := wasm.InstanceConfig{Stdout: a.out, Stderr: a.out}
	if _, real := a.ns.h.cfg.Clock.(clock.Real); !real {
		// Guest clocks follow the host's (virtual) clock. Nanotime must never
		// be zero: the Go runtime refuses to start if it is.
		c := a.ns.h.cfg.Clock
		cfg.Walltime = c.Now
		cfg.Nanotime = func() int64 { return c.Now().UnixNano() }
	}
	return v.mod.Instantiate(context.Background(), cfg)
}

// prepare is the first half of a swap (evPrepare): it starts an instance
// of v, which is not current yet, and keeps it for switchVersion, so the
// shard's first event on v does not wait for the instantiation. It takes
// over the event's reference to v. A failure is only logged: the shard
// then instantiates v when it needs it.
func (a *actor) prepare(v *Version) {
	if a.ns.h.isClosing() || a.ver == v {
		v.release()
		return
	}
	a.dropPrepared()
	if err := a.reserve(); err != nil {
		v.release()
		return // the shard starts v when it switches
	}
	t0 := time.Now()
	inst, err := a.instantiate(v)
	if err != nil {
		v.release()
		a.recharge()
		a.log.Warn().Err(err).Str("module", v.Short()).Str("guest_output", a.out.take()).Msg("preparing the new version failed; the shard will start it when it switches")
		return
	}
	a.log.Debug().Str("module", v.Short()).Dur("took_ms", time.Since(t0)).Msg("new version prepared")
	a.next = &prepared{ver: v, inst: inst}
	a.recharge()
}

// switchVersion is the second half of a swap (evSwitch), sent once the
// namespace points at its new version (or a swap was abandoned): the shard
// closes an instance of any other version and installs the one it
// prepared, if that is of the current version; a prepared instance of any
// other version is dropped.
func (a *actor) switchVersion() {
	cur := a.ns.cur.Load()
	if a.ver != nil && a.ver != cur {
		a.closeInstance()
	}
	if a.next == nil {
		return
	}
	if a.next.ver == cur && a.inst == nil {
		a.install(a.next)
		a.next = nil
		return
	}
	a.dropPrepared()
}

// dropPrepared discards an instance prepared for a swap.
func (a *actor) dropPrepared() {
	if p := a.next; p != nil {
		a.next = nil
		p.inst.Close(context.Background())
		p.ver.release()
		a.recharge()
	}
}

func (a *actor) closeInstance() {
	if a.inst != nil {
		a.inst.Close(context.Background())
		a.ver.release()
		a.inst, a.ver = nil, nil
	}
	a.live.Store(false)
	a.memBytes.Store(0)
	a.recharge()
}

func (a *actor) resetAlarmChange() { a.alarmSet, a.alarmDeleted = false, false }

// eventContext is the context of one event: it ends at the event
// deadline (the instance watches it with a timer it reuses).
func (a *actor) eventContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(wasm.EventRoot, a.ns.h.cfg.EventTimeout)
}

// eventContextUntil is eventContext ending no later than deadline (a
// shard_call's caller's), unless deadline is zero.
func (a *actor) eventContextUntil(deadline time.Time) (context.Context, context.CancelFunc) {
	if !deadline.IsZero() && deadline.Before(time.Now().Add(a.ns.h.cfg.EventTimeout)) {
		return context.WithDeadline(wasm.EventRoot, deadline)
	}
	return a.eventContext()
}

// crashed logs why the instance died, with the guest's last output (a
// panic message and stack), and discards it.
func (a *actor) crashed(what string, err error) {
	reason := "trap"
	switch {
	case errors.Is(err, wasm.ErrTimeout):
		reason = "timeout"
	case errors.Is(err, wasm.ErrBadResponse):
		reason = "bad_response"
	}
	a.ns.metrics.crash(reason)
	a.store.Abort()
	if a.sq.db != nil {
		a.sq.db.Rollback()
	}
	a.resetAlarmChange()
	a.wsAbort()
	ev := a.log.Error().Err(err).Str("event", what)
	if out := a.out.take(); out != "" {
		ev = ev.Str("guest_output", out)
	}
	ev.Msg("shard instance discarded; the shard restarts from storage on its next event")
	a.closeInstance()
}

func (a *actor) handleFetch(ev *event) {
	if ev.state.Load() != evQueued {
		return // abandoned by its caller before it started: it has no effect
	}
	// Starting the instance (and waiting for room in the memory budget)
	// runs no code of the shard's with access to storage: its caller may
	// still give up meanwhile, and the event then has no effect.
	inst, err := a.instance()
	if !ev.state.CompareAndSwap(evQueued, evRunning) {
		return
	}
	if err == nil {
		err = a.recoverShardSQL()
	}
	if err != nil {
		ev.done <- result{err: err}
		return
	}
	if a.fetchBatch(inst, ev) {
		return
	}
	a.runFetch(inst, ev)
}

// runFetch delivers the running fetch event ev to inst on its own.
func (a *actor) runFetch(inst runner, ev *event) {
	a.resetAlarmChange()
	setShardHeader(ev.req, a.id.String(), ev.chain)
	a.wsBegin(ev.upgrade)
	ctx, cancel := a.eventContextUntil(ev.deadline)
	t0 := time.Now()
	a.callChain = ev.chain
	resp, err := inst.Fetch(ctx, a.env(), ev.req)
	a.callChain = nil
	cancel()
	a.ns.metrics.fetchDur.Observe(time.Since(t0).Seconds())
	if err != nil {
		a.ns.metrics.fetchErr.Inc()
		a.crashed("fetch", err)
		ev.done <- result{err: err}
		return
	}
	a.ns.metrics.fetchOK.Inc()
	if p, ok := a.commitEvent(inst, ev); ok {
		ev.done <- result{resp: resp, pending: p, sock: a.wsAccepted(resp)}
	}
}

// commitEvent ends an event inst ran without failing: the shard's writes
// commit and the actor is idle again before the caller sends ev's reply
// with their Pending (so that callers see the budget's least-recently-used
// order in the order of their replies). A fenced shard commits nothing:
// ev is answered ErrFenced and ok is false.
func (a *actor) commitEvent(inst runner, ev *event) (p *storage.Pending, ok bool) {
	a.memBytes.Store(inst.MemoryBytes())
	if a.fenced() {
		ev.done <- result{err: ErrFenced}
		return nil, false
	}
	p = a.commit()
	a.settle()
	a.idle()
	return p, true
}

// ShardHeader is set on every request a shard receives to
// "<binding>/<shard>", replacing any value the client sent.
const ShardHeader = "X-Edgeshard-Shard"

// setShardHeader also sets CallerHeader to the last shard of a
// shard_call's chain, and removes any other value of either.
func setShardHeader(req *abi.Request, id string, chain []string) {
	h := req.Header[:0:0]
	for _, f := range req.Header {
		if !strings.EqualFold(f.Name, ShardHeader) && !strings.EqualFold(f.Name, CallerHeader) {
			h = append(h, f)
		}
	}
	req.Header = append(h, abi.Header{Name: ShardHeader, Value: id})
	if len(chain) > 0 {
		req.Header = append(req.Header, abi.Header{Name: CallerHeader, Value: chain[len(chain)-1]})
	}
}

// commit ends the event: its writes go to the group committer and alarm
// changes to the scheduler.
func (a *actor) commit() *storage.Pending {
	if err := a.commitShardSQL(); err != nil {
		a.store.Abort()
		a.resetAlarmChange()
		a.log.Error().Err(err).Msg("the event's SQL did not commit; the event failed as a whole")
		return storage.FailedPending(err)
	}
	p := a.store.Commit()
	if a.sq.seq != 0 {
		a.writeMark(a.sq.seq) // after the event's writes (shardsql.go)
		a.sq.seq = 0
	}
	a.last = p
	a.wsFlush(p)
	if a.alarmSet {
		a.ns.h.alarms.schedule(a.id, a.alarmAt, 0)
	} else if a.alarmDeleted {
		a.ns.h.alarms.cancel(a.id)
	}
	a.resetAlarmChange()
	return p
}

func (a *actor) handleAlarm(retry int) { a.runAlarm(retry, false) }

// runAlarm runs the shard's alarm if it is due, or, early, if it is set
// (a hand-off's flush).
func (a *actor) runAlarm(retry int, early bool) {
	if err := a.recoverShardSQL(); err != nil {
		a.log.Error().Err(err).Msg("recovering the shard's database failed; retrying")
		a.ns.h.alarms.schedule(a.id, a.ns.h.cfg.Clock.Now().Add(a.ns.h.cfg.AlarmBackoff).UnixMilli(), retry)
		return
	}
	at, ok, err := a.store.GetAlarm()
	if err != nil {
		a.log.Error().Err(err).Msg("read alarm failed; retrying")
		a.ns.h.alarms.schedule(a.id, a.ns.h.cfg.Clock.Now().Add(a.ns.h.cfg.AlarmBackoff).UnixMilli(), retry)
		return
	}
	if !ok {
		return // deleted since it was scheduled
	}
	now := a.ns.h.cfg.Clock.Now()
	if at > now.UnixMilli() && !early {
		a.ns.h.alarms.schedule(a.id, at, retry)
		return
	}
	inst, err := a.instance()
	if errors.Is(err, ErrOverloaded) {
		// No room in the memory budget: not the handler's failure, so no
		// retry is used up; the persisted alarm fires again later.
		a.ns.h.alarms.schedule(a.id, now.Add(a.ns.h.cfg.AlarmBackoff).UnixMilli(), retry)
		return
	}
	if err != nil {
		a.retryAlarm(now, retry, err, false)
		return
	}
	a.resetAlarmChange()
	// The alarm is cleared before the handler runs; a handler that sets a
	// new one replaces it (and any retry).
	if err := a.store.DeleteAlarm(); err != nil {
		a.retryAlarm(now, retry, err, false)
		return
	}
	ctx, cancel := a.eventContext()
	t0 := time.Now()
	a.ns.metrics.alarmFired.Inc()
	ok, err = inst.Alarm(ctx, a.env(), retry)
	cancel()
	a.ns.metrics.alarmDur.Observe(time.Since(t0).Seconds())
	if err != nil || !ok {
		a.ns.metrics.alarmErr.Inc()
	} else {
		a.ns.metrics.alarmOK.Inc()
	}
	if err != nil {
		a.crashed("alarm", err)
		a.retryAlarm(now, retry, err, false)
		return
	}
	if !ok && !a.alarmSet {
		a.retryAlarm(now, retry, errors.New("alarm handler reported failure"), true)
		return
	}
	if a.fenced() {
		// The alarm stays persisted here (its deletion was refused with
		// the handler's writes), but the scheduler popped it: schedule it
		// again, as for an alarm refused on a shard leaving this host, or
		// nothing fires it until a restart — a per-name object that
		// comes back here would never flush again (its handler sees an
		// alarm set), a sharded shard's buffers would wait on this disk.
		a.ns.h.alarms.schedule(a.id, now.Add(alarmElsewhereRetry).UnixMilli(), retry)
		return
	}
	// An alarm holds no response, yet whether it ran is decided by its
	// commit: if the handler's writes (and the alarm's own deletion) never
	// become durable, it did not happen. Nothing else would notice — the
	// scheduler has forgotten it, and a shard without traffic has no next
	// event to find its storage failed — so wait for the outcome and retry
	// a failed commit like a failed handler.
	if err := a.commit().Wait(context.Background()); err != nil && !a.ns.h.isClosing() {
		a.log.Error().Err(err).Msg("alarm's storage commit failed; discarding instance and reloading from storage")
		a.closeInstance()
		a.store.Reset()
		a.sq.checked = false
		a.retryAlarm(now, retry, err, false)
	}
}
