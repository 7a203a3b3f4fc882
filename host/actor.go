package host

import (
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
)

type event struct {
	kind    eventKind
	req     *abi.Request
	retry   int               // evAlarm: retry count
	inspect func(StorageView) // evInspect: runs on the actor goroutine
	ver     *Version          // evPrepare: the event holds a reference for the actor
	state   atomic.Int32      // evFetch: evQueued → evRunning, or evAbandoned by a caller that gave up
	done    chan result
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

	live     atomic.Bool
	memBytes atomic.Uint64
	trace    bool // log every host call (Config.TraceShard)

	lastEvent atomic.Int64 // unix ms its last fetch or alarm started (inspect_trace.go: env)
}

// prepared is an instance of a version about to become current, made
// ready before a swap switches the namespace to it. It holds a reference
// to its version.
type prepared struct {
	ver  *Version
	inst runner
}

func newActor(ns *Namespace, shard string) *actor {
	id := ns.shardID(shard)
	return &actor{
		ns: ns, shard: shard, id: id,
		queue: make(chan *event, ns.h.cfg.QueueDepth),
		stop:  make(chan struct{}),
		log:   ns.h.log.With().Str("binding", ns.name).Str("shard", shard).Logger(),
		glog:  ns.h.log.With().Str("binding", ns.name).Logger(),
		store: ns.h.store.Shard(id),
		out:   &guestOutput{},
		trace: traced(ns.h.cfg.TraceShard, ns.name, shard),
	}
}

func (a *actor) run() {
	defer a.ns.h.wg.Done()
	idle := a.ns.h.cfg.IdleTimeout
	timer := time.NewTimer(idle)
	defer timer.Stop()
	for {
		select {
		case ev := <-a.queue:
			a.handle(ev)
			if len(a.queue) == 0 {
				timer.Reset(idle)
			}
		case <-timer.C:
			a.waitLast()
			if a.ns.evict(a) {
				a.exit()
				return
			}
			timer.Reset(idle)
		case <-a.stop:
			for {
				select {
				case ev := <-a.queue:
					a.handle(ev)
					continue
				default:
				}
				break
			}
			a.waitLast()
			a.exit()
			return
		}
	}
}

// exit releases everything the actor holds once no event can reach it.
func (a *actor) exit() {
	a.closeInstance()
	a.dropPrepared()
	a.store.Close() // frees the shard's overlay and read cache
}

func (a *actor) waitLast() {
	if a.last != nil {
		a.last.Wait(context.Background())
		a.last = nil
	}
}

func (a *actor) handle(ev *event) {
	if err := a.store.Err(); err != nil {
		a.log.Error().Err(err).Msg("shard storage commit failed; discarding instance and reloading from storage")
		a.closeInstance()
		a.store.Reset()
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
	v := a.ns.acquireCurrent()
	t0 := time.Now()
	inst, err := a.instantiate(v)
	if err != nil {
		v.release()
		a.log.Error().Err(err).Str("guest_output", a.out.take()).Msg("shard instance failed to start")
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	a.log.Debug().Str("module", v.Short()).Dur("took_ms", time.Since(t0)).Msg("shard instance started")
	a.install(&prepared{ver: v, inst: inst})
	return inst, nil
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
	t0 := time.Now()
	inst, err := a.instantiate(v)
	if err != nil {
		v.release()
		a.log.Warn().Err(err).Str("module", v.Short()).Str("guest_output", a.out.take()).Msg("preparing the new version failed; the shard will start it when it switches")
		return
	}
	a.log.Debug().Str("module", v.Short()).Dur("took_ms", time.Since(t0)).Msg("new version prepared")
	a.next = &prepared{ver: v, inst: inst}
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
}

func (a *actor) resetAlarmChange() { a.alarmSet, a.alarmDeleted = false, false }

// eventContext is the context of one event: it ends at the event
// deadline (the instance watches it with a timer it reuses).
func (a *actor) eventContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(wasm.EventRoot, a.ns.h.cfg.EventTimeout)
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
	a.resetAlarmChange()
	ev := a.log.Error().Err(err).Str("event", what)
	if out := a.out.take(); out != "" {
		ev = ev.Str("guest_output", out)
	}
	ev.Msg("shard instance discarded; the shard restarts from storage on its next event")
	a.closeInstance()
}

func (a *actor) handleFetch(ev *event) {
	if !ev.state.CompareAndSwap(evQueued, evRunning) {
		return // abandoned by its caller before it started: it has no effect
	}
	inst, err := a.instance()
	if err != nil {
		ev.done <- result{err: err}
		return
	}
	a.resetAlarmChange()
	setShardHeader(ev.req, a.id.String())
	ctx, cancel := a.eventContext()
	t0 := time.Now()
	resp, err := inst.Fetch(ctx, a.env(), ev.req)
	cancel()
	a.ns.metrics.fetchDur.Observe(time.Since(t0).Seconds())
	if err != nil {
		a.ns.metrics.fetchErr.Inc()
		a.crashed("fetch", err)
		ev.done <- result{err: err}
		return
	}
	a.memBytes.Store(inst.MemoryBytes())
	a.ns.metrics.fetchOK.Inc()
	p := a.commit()
	ev.done <- result{resp: resp, pending: p}
}

// ShardHeader is set on every request a shard receives to
// "<binding>/<shard>", replacing any value the client sent.
const ShardHeader = "X-Edgeshard-Shard"

func setShardHeader(req *abi.Request, id string) {
	h := req.Header[:0:0]
	for _, f := range req.Header {
		if !strings.EqualFold(f.Name, ShardHeader) {
			h = append(h, f)
		}
	}
	req.Header = append(h, abi.Header{Name: ShardHeader, Value: id})
}

// commit ends the event: its writes go to the group committer and alarm
// changes to the scheduler.
func (a *actor) commit() *storage.Pending {
	p := a.store.Commit()
	a.last = p
	if a.alarmSet {
		a.ns.h.alarms.schedule(a.id, a.alarmAt, 0)
	} else if a.alarmDeleted {
		a.ns.h.alarms.cancel(a.id)
	}
	a.resetAlarmChange()
	return p
}

func (a *actor) handleAlarm(retry int) {
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
	if at > now.UnixMilli() {
		a.ns.h.alarms.schedule(a.id, at, retry)
		return
	}
	inst, err := a.instance()
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
		a.retryAlarm(now, retry, err, false)
	}
}
