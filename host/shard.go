package host

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
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
	evFetch eventKind = iota
	evAlarm
	evInspect
	evRestart
)

type event struct {
	kind    eventKind
	req     *abi.Request
	retry   int                  // alarm retry count
	inspect func(*storage.Shard) // evInspect: runs on the actor goroutine
	state   atomic.Int32         // evFetch: evQueued → evRunning, or evAbandoned by a caller that gave up
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
// never overlap (the input gate) and no locks guard them.
type actor struct {
	ns    *Namespace
	shard string
	id    storage.ShardID
	queue chan *event
	stop  chan struct{}
	log   zerolog.Logger
	glog  zerolog.Logger // for guest records: binding only, shard added unless the guest names one

	store   *storage.Shard
	inst    runner
	instVer *Version
	out     *guestOutput
	last    *storage.Pending // most recent commit, awaited before eviction

	// Alarm changes made by the current event, applied to the scheduler
	// once the event commits.
	alarmSet     bool
	alarmAt      int64
	alarmDeleted bool

	live     atomic.Bool
	memBytes atomic.Uint64
	trace    bool // log every host call (Config.TraceShard)
	next     atomic.Pointer[prepared]
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

// traced reports whether spec ("binding/shard", "binding/*" or "*")
// selects the shard for host-call tracing.
func traced(spec, binding, shard string) bool {
	switch spec {
	case "":
		return false
	case "*", binding + "/*", binding + "/" + shard:
		return true
	}
	return false
}

// Tracing and TraceHostCall implement wasm.Tracer.
func (a *actor) Tracing() bool { return a.trace }

func (a *actor) TraceHostCall(fn string, params []uint64, result uint64, errMsg string) {
	ev := a.log.Info().Str("component", "trace").Str("fn", fn)
	args := make([]int64, len(params))
	for i, p := range params {
		args[i] = int64(p)
	}
	ev = ev.Ints64("args", args).Int64("result", int64(result))
	if r := int64(result); r < 0 && r > -100 {
		ev = ev.Str("errno", abi.Errno(-r).Error())
	}
	if errMsg != "" {
		ev = ev.Str("error", errMsg)
	}
	ev.Msg("host call")
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
				a.closeInstance()
				a.dropPrepared()
				a.store.Close() // frees the shard's overlay and read cache
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
			a.closeInstance()
			a.dropPrepared()
			a.store.Close()
			return
		}
	}
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
		ev.inspect(a.store)
		ev.done <- result{}
	case evRestart:
		a.closeInstance()
		ev.done <- result{}
	}
}

func (a *actor) instance() (runner, error) {
	cur := a.ns.cur.Load()
	if a.inst != nil && a.instVer == cur && a.inst.Err() == nil {
		return a.inst, nil
	}
	a.closeInstance()
	var inst runner
	if p := a.next.Swap(nil); p != nil {
		if p.ver == cur {
			inst = p.inst // prepared by Swap off this goroutine
		} else {
			p.inst.Close(context.Background())
			p.ver.users.Add(-1)
		}
	}
	if inst == nil {
		t0 := time.Now()
		var err error
		inst, err = a.instantiate(cur)
		if err != nil {
			a.log.Error().Err(err).Str("guest_output", a.out.take()).Msg("shard instance failed to start")
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		cur.users.Add(1)
		a.log.Debug().Str("module", cur.Short()).Dur("took", time.Since(t0)).Msg("shard instance started")
	}
	a.inst, a.instVer = inst, cur
	a.ns.metrics.starts.Inc()
	a.live.Store(true)
	a.memBytes.Store(inst.MemoryBytes())
	return inst, nil
}

// instantiate starts an instance of v wired to this shard's output and
// clock. It may run on any goroutine (Swap prepares instances ahead).
func (a *actor) instantiate(v *Version) (runner, error) {
	if v.native != nil {
		return &nativeRunner{shard: v.native(a.shard)}, nil
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

// prepared is an instance of a new version made ready before a swap.
type prepared struct {
	ver  *Version
	inst runner
}

// dropPrepared releases an instance Swap prepared but the shard never used.
func (a *actor) dropPrepared() {
	if p := a.next.Swap(nil); p != nil {
		p.inst.Close(context.Background())
		p.ver.users.Add(-1)
	}
}

func (a *actor) closeInstance() {
	if a.inst != nil {
		a.inst.Close(context.Background())
		v := a.instVer
		a.inst, a.instVer = nil, nil
		if v.users.Add(-1) == 0 && v != a.ns.cur.Load() {
			a.ns.sweepLater()
		}
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
	resp, err := inst.Fetch(ctx, a, ev.req)
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
	ok, err = inst.Alarm(ctx, a, retry)
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

// retryAlarm schedules retry+1 after exponential backoff, persisting the
// retry time with the event's other writes (inEvent) or on its own, or
// gives up after AlarmRetries retries.
func (a *actor) retryAlarm(now time.Time, retry int, cause error, inEvent bool) {
	cfg := a.ns.h.cfg
	if retry >= cfg.AlarmRetries {
		a.ns.metrics.alarmAbandoned.Inc()
		a.log.Error().Err(cause).Int("retries", retry).Msg("alarm abandoned after its last retry")
		if !inEvent {
			a.store.Abort()
			a.resetAlarmChange()
		}
		a.store.DeleteAlarm()
		a.alarmDeleted = true
		a.commit()
		return
	}
	a.ns.metrics.alarmRetry.Inc()
	next := now.Add(cfg.AlarmBackoff << retry).UnixMilli()
	a.log.Warn().Err(cause).Int("retry", retry+1).Time("at", time.UnixMilli(next)).Msg("alarm failed; retrying with backoff")
	if !inEvent {
		a.store.Abort()
		a.resetAlarmChange()
	}
	a.store.SetAlarm(next) // persisted, so a restart still fires it
	a.commit()
	a.ns.h.alarms.schedule(a.id, next, retry+1)
}

// Env for the wasm host functions.

func (a *actor) Store() wasm.Store { return a.store }

func (a *actor) SetAlarm(ms int64) error {
	if err := a.store.SetAlarm(ms); err != nil {
		return err
	}
	a.alarmSet, a.alarmAt, a.alarmDeleted = true, ms, false
	return nil
}

func (a *actor) GetAlarm() (int64, bool, error) { return a.store.GetAlarm() }

func (a *actor) DeleteAlarm() error {
	if err := a.store.DeleteAlarm(); err != nil {
		return err
	}
	a.alarmSet, a.alarmDeleted = false, true
	return nil
}

// VarShardName is a reserved var that always answers the asking shard's
// "<binding>/<shard>" (in fetch and alarm events alike).
const VarShardName = "edgeshard.shard"

func (a *actor) Var(name string) (string, bool) {
	if name == VarShardName {
		return a.id.String(), true
	}
	v, ok := a.ns.h.cfg.Vars[name]
	return v, ok
}

func (a *actor) Log(level int32, rec abi.LogRecord) {
	var code, dur string
	for _, f := range rec.Fields {
		switch f.Name {
		case "code":
			code = f.Value
		case "duration_ms":
			dur = f.Value
		}
	}
	if code != "" {
		a.ns.metrics.guestCode(code, dur)
	}
	var ev *zerolog.Event
	switch level {
	case abi.LogDebug:
		ev = a.glog.Debug()
	case abi.LogWarn:
		ev = a.glog.Warn()
	case abi.LogError:
		ev = a.glog.Error()
	default:
		ev = a.glog.Info()
	}
	if ev == nil {
		return
	}
	ev = ev.Str("component", "guest")
	ownShard := false
	for _, f := range rec.Fields {
		if f.Name == "binding" || f.Name == "component" {
			continue // the host's own fields win
		}
		ownShard = ownShard || f.Name == "shard"
		ev = ev.Str(f.Name, f.Value)
	}
	if !ownShard {
		ev = ev.Str("shard", a.shard)
	}
	ev.Msg(rec.Message)
}

func (a *actor) SQL(ctx context.Context, stmts []abi.Statement) ([]abi.Result, error) {
	if a.ns.sql == nil {
		return nil, fmt.Errorf("%w: no sql database is bound to %s", wasm.ErrNotGranted, a.ns.name)
	}
	// Output gate for side effects: SQL leaves the shard only after every
	// write of earlier events is durable, so a flush never reaches SQL
	// ahead of the storage state it was computed from.
	if a.last != nil {
		if err := a.last.Wait(ctx); err != nil {
			return nil, fmt.Errorf("earlier storage commit failed: %w", err)
		}
		a.last = nil
	}
	return a.ns.sql.Batch(ctx, stmts)
}

func (a *actor) WriteDataPoint(p abi.DataPoint) error {
	if a.ns.analytics.Sink == nil {
		return fmt.Errorf("%w: no analytics dataset is bound to %s", wasm.ErrNotGranted, a.ns.name)
	}
	return a.ns.analytics.Sink.Write(a.ns.analytics.Dataset, p)
}

// guestOutput keeps the tail of what a guest wrote to stdout/stderr, so a
// crash report can include the panic message and stack.
type guestOutput struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

const guestOutputTail = 16 << 10

func (g *guestOutput) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.buf.Write(p)
	if g.buf.Len() > 2*guestOutputTail {
		tail := append([]byte(nil), g.buf.Bytes()[g.buf.Len()-guestOutputTail:]...)
		g.buf.Reset()
		g.buf.Write(tail)
	}
	return len(p), nil
}

func (g *guestOutput) take() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.buf.String()
	g.buf.Reset()
	if len(s) > guestOutputTail {
		s = s[len(s)-guestOutputTail:]
	}
	return strings.TrimSpace(s)
}

var _ wasm.Env = (*actor)(nil)
