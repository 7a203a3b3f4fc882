package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/storage"
)

// Placement is where a host that is one of several in a POP learns which
// shards it may run (Config.Placement; the cluster package implements it
// over etcd). Without one the host runs every shard itself, as a host
// alone does. The host never talks to the other hosts or to etcd itself:
// it asks Claim before a shard's actor starts, runs the shard only under
// the claim it got, and hands a request for a shard owned elsewhere to
// Forward.
type Placement interface {
	// Claim returns the claim under which this host may run the shard
	// now, waiting (bounded by ctx) for a previous owner to let go. A
	// shard owned elsewhere is an *ElsewhereError; one no host may serve
	// now matches ErrShardUnavailable. perName says the shard is an
	// object of a per-name namespace (its storage is its only truth).
	Claim(ctx context.Context, id storage.ShardID, perName bool) (Claim, error)
	// Forward delivers req to the shard on its owner (an address from an
	// ElsewhereError) and returns the owner's response. An owner that no
	// longer owns the shard answers so: the error matches ErrNotOwner and
	// the host asks Claim again.
	Forward(ctx context.Context, owner string, id storage.ShardID, req *abi.Request) (*abi.Response, error)
}

// Claim is a host's ownership of one shard: the shard runs here only while
// it is valid.
type Claim interface {
	// Epoch is the ownership's fencing token: larger for every new owner
	// of the shard. The host passes it with every write to a shared SQL
	// database (FencedSQLDB), which refuses a write of an older epoch.
	Epoch() int64
	// Fresh says the shard starts here with empty storage: whatever the
	// host keeps of it from an earlier ownership is stale and is erased
	// before the shard's first event.
	Fresh() bool
	// Valid reports whether the claim still holds: checked before an
	// event's writes commit and before its response leaves.
	Valid() bool
	// Done is closed when the claim is lost (Valid turns false) or the
	// shard must move (Moving turns true).
	Done() <-chan struct{}
	// Moving reports a planned move: the host finishes the shard's queued
	// events, runs its buffer flush (a pending alarm due soon) and only
	// then releases the claim.
	Moving() bool
	// Attach tells the claim an actor runs under it and will Release it
	// (a claim no actor runs under is released by a move at once); false
	// if the claim is already done.
	Attach() bool
	// Release gives the ownership up once the shard's actor has stopped.
	Release()
	// Fence names the shard's row in the SQL fence table (FencedSQLDB):
	// the shard's name, or, for a leftover flush, one of this host's own.
	Fence() string
}

// LeftoverPlacement is a Placement that lets a host flush what it keeps of
// a sharded namespace's shard it does not own (its buffers from an earlier
// ownership): the shard's alarm runs here under a claim of this host's
// alone, fenced apart from the shard's owner. Buffers that flush under
// keys of their own per host (the edge API's flush sequences are per
// node) are then flushed exactly once, whoever owns the shard now.
type LeftoverPlacement interface {
	ClaimLeftover(ctx context.Context, id storage.ShardID) (Claim, error)
}

// Shipper is a Claim that can move the shard's storage with its
// ownership (the cluster's, for a per-name object): Ship sends the
// snapshot stream read from r to the shard's next owner and, once that
// host has it, hands the ownership over; the claim is then released.
type Shipper interface {
	Ship(ctx context.Context, r io.Reader) error
}

// FencedSQLDB is a SQL binding that takes a shard's fencing token with a
// batch (sqldb.DB): the batch runs in one transaction with a check that no
// newer owner of the shard has written, and fails, changing nothing, with
// an error matching ErrFenced otherwise.
type FencedSQLDB interface {
	BatchFenced(ctx context.Context, binding, shard string, epoch int64, stmts []abi.Statement) ([]abi.Result, error)
}

// ElsewhereError says another host owns the shard.
type ElsewhereError struct {
	Node  string // the owner's node id
	Owner string // the address to forward to
}

func (e *ElsewhereError) Error() string {
	return fmt.Sprintf("shard owned by node %s (%s)", e.Node, e.Owner)
}

// Errors of a host in a cluster.
var (
	// ErrShardUnavailable: no host of the POP may serve the shard now (a
	// per-name object whose host is down, until it returns or an operator
	// evicts it). 503 shard_unavailable with Retry-After.
	ErrShardUnavailable = errors.New("shard unavailable")
	// ErrNotOwner: the host a request was forwarded to does not own the
	// shard (any more); the request did not run there.
	ErrNotOwner = errors.New("not the shard's owner")
	// ErrShardElsewhere: another host of the POP owns the shard and the
	// request cannot be forwarded to it (a WebSocket upgrade: sockets are
	// accepted by the shard's owner only). 421 shard_elsewhere, naming
	// the owner.
	ErrShardElsewhere = errors.New("the shard runs on another host of the POP")
	// ErrFenced: the host lost the shard's ownership; the event's writes
	// were refused (by the host before its storage commit, or by the SQL
	// database holding a newer epoch).
	ErrFenced = storage.ErrFenced
)

// RetryAfterSeconds is the Retry-After of a 503 shard_unavailable.
const RetryAfterSeconds = 5

type localOnlyKey struct{}

// LocalOnly marks ctx for a request another host forwarded: it runs here
// or fails with an *ElsewhereError, never forwarded again (no loops).
func LocalOnly(ctx context.Context) context.Context {
	return context.WithValue(ctx, localOnlyKey{}, true)
}

func isLocalOnly(ctx context.Context) bool { return ctx.Value(localOnlyKey{}) != nil }

// errMoved: the shard's actor is leaving this host (its claim was lost or
// it moves); the event was not run and the caller asks Placement again.
var errMoved = fmt.Errorf("%w: the shard is leaving this host", ErrNotRun)

// errNotHere: a control event (inspect, restart) for a shard that does
// not run on this host, which never starts one.
var errNotHere = fmt.Errorf("%w: the shard does not run on this host", ErrNotOwner)

// placementRetry bounds the wait between two placement attempts.
const placementRetry = 200 * time.Millisecond

// fetchPlaced runs a fetch event (newEvent makes it anew for each
// attempt) on a host with a Placement: here under a claim, or, if forward,
// on the shard's owner (Placement.Forward; the event's request only: a
// shard_call's chain stays on this host, its deadline bounds ctx), asking
// again (with a short, growing pause) while the shard is between owners,
// until ctx ends. Without forward a shard owned elsewhere is
// ErrShardElsewhere (a WebSocket upgrade: the socket stays with the
// shard's owner).
func (ns *Namespace) fetchPlaced(ctx context.Context, shard string, newEvent func() *event, forward bool) (result, error) {
	id := ns.shardID(shard)
	pause := 10 * time.Millisecond
	for {
		r, err := ns.tryPlaced(ctx, id, newEvent(), forward)
		if !errors.Is(err, errMoved) && !errors.Is(err, ErrNotOwner) {
			return r, err
		}
		if isLocalOnly(ctx) {
			// A forwarded request that cannot run here now goes back at
			// once (not run): its origin asks the placement again. Waiting
			// here would hold it until its deadline on a host that lost or
			// hands off the shard, and past that host's shutdown.
			if !errors.Is(err, ErrNotOwner) {
				err = fmt.Errorf("%w: %w", ErrNotOwner, err)
			}
			return r, err
		}
		ns.metrics.m.placementRetries.Inc()
		select {
		case <-ctx.Done():
			return result{}, fmt.Errorf("%w: %w (%w)", ErrNotRun, ctx.Err(), err)
		case <-time.After(pause):
		}
		pause = min(2*pause, placementRetry)
	}
}

func (ns *Namespace) tryPlaced(ctx context.Context, id storage.ShardID, ev *event, forward bool) (result, error) {
	c, err := ns.h.cfg.Placement.Claim(ctx, id, ns.binding.Shards == 0)
	var ee *ElsewhereError
	switch {
	case errors.As(err, &ee) && !forward:
		return result{}, shardElsewhere(ee)
	case errors.As(err, &ee):
		if isLocalOnly(ctx) {
			return result{}, fmt.Errorf("%w: %w", ErrNotOwner, err)
		}
		fctx := ctx
		if len(ev.chain) > 0 {
			fctx = WithCallChain(ctx, ev.chain) // a call's: the owner checks and passes it on
		}
		resp, err := ns.h.cfg.Placement.Forward(fctx, ee.Owner, id, ev.req)
		return result{resp: resp}, err
	case err != nil:
		return result{}, err
	}
	return ns.fetchEvent(ctx, id.Name, ev, c)
}

// claimHere returns a claim under which the shard may start here: on a
// host without a Placement, none (it runs every shard); otherwise the
// Placement's, a shard owned elsewhere being ErrShardElsewhere. For the
// data events that do not come through fetchPlaced (a socket's messages).
func (ns *Namespace) claimHere(ctx context.Context, shard string) (Claim, error) {
	if ns.h.cfg.Placement == nil {
		return nil, nil
	}
	c, err := ns.h.cfg.Placement.Claim(ctx, ns.shardID(shard), ns.binding.Shards == 0)
	var ee *ElsewhereError
	if errors.As(err, &ee) {
		return nil, shardElsewhere(ee)
	}
	return c, err
}

// shardElsewhere is ErrShardElsewhere naming the owner; errors.As finds
// ee in it (a WebSocket upgrade is carried to ee.Owner).
func shardElsewhere(ee *ElsewhereError) error {
	return fmt.Errorf("%w: %w", ErrShardElsewhere, ee)
}

// deliverAlarm enqueues a due alarm on a host with a Placement: under a
// claim, or, for a shard owned elsewhere now, later (its storage here is
// what this host keeps of the shard, and the alarm runs when the shard
// comes back).
func (ns *Namespace) deliverAlarm(id storage.ShardID, ev *event) {
	ctx, cancel := context.WithTimeout(context.Background(), ns.h.cfg.EventTimeout)
	defer cancel()
	c, err := ns.h.cfg.Placement.Claim(ctx, id, ns.binding.Shards == 0)
	if err == nil {
		err = ns.enqueue(id.Name, ev, c)
	} else if lp, ok := ns.h.cfg.Placement.(LeftoverPlacement); ok && ns.binding.Shards > 0 {
		err = ns.flushLeftover(ctx, id, ev, lp)
	}
	if err != nil && !ns.h.isClosing() {
		ns.h.alarms.schedule(id, ns.h.cfg.Clock.Now().Add(alarmElsewhereRetry).UnixMilli(), ev.retry)
	}
}

// flushLeftover runs a due alarm of a sharded namespace's shard owned
// elsewhere on what this host keeps of it, under a leftover claim, on an
// actor of its own outside the namespace's map; no actor of the shard
// starts here meanwhile (it waits, as for ReceiveShard).
func (ns *Namespace) flushLeftover(ctx context.Context, id storage.ShardID, ev *event, lp LeftoverPlacement) error {
	if !ns.lockShard(id.Name) {
		return errMoved
	}
	defer ns.unlockShard(id.Name)
	c, err := lp.ClaimLeftover(ctx, id)
	if err != nil {
		return err
	}
	a := newActor(ns, id.Name, c)
	a.log = a.log.With().Bool("leftover", true).Logger()
	a.handleAlarm(ev.retry)
	a.waitLast()
	a.closeInstance()
	a.dropPrepared()
	a.store.Close()
	c.Release()
	return nil
}

// lockShard keeps any actor of shard from starting here (ReceiveShard, a
// leftover flush); false if one runs or the shard is locked already.
func (ns *Namespace) lockShard(shard string) bool {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.actors[shard] != nil || ns.receiving[shard] || ns.stopped {
		return false
	}
	ns.receiving[shard] = true
	return true
}

func (ns *Namespace) unlockShard(shard string) {
	ns.mu.Lock()
	delete(ns.receiving, shard)
	ns.mu.Unlock()
}

// alarmElsewhereRetry is how long the alarm of a shard this host cannot
// run now (owned elsewhere, or unavailable) waits before it asks again.
const alarmElsewhereRetry = 30 * time.Second

// handOffFlushes bounds the alarm runs of a shard's hand-off; only an alarm
// due within handOffFlushHorizon runs early (a plugin's buffer flush).
const (
	handOffFlushes      = 8
	handOffFlushHorizon = 30 * time.Second
)

// handOff runs when the actor's claim is done. Lost: the queued events
// are not run (their callers ask Placement again). Moving: the queued
// events run, then the shard's pending alarm, early, while it is due
// within handOffFlushHorizon (at most handOffFlushes times): a buffering
// plugin flushes. Either way the shard's sockets are then closed with
// 1012 (their clients reconnect, to the shard's owner), the actor leaves
// and the claim is released.
func (a *actor) handOff() {
	a.ns.leaving(a)
	moving := a.claim.Moving() && a.claim.Valid()
	for {
		select {
		case ev := <-a.queue:
			if moving && a.claim.Valid() {
				a.step(ev)
			} else {
				a.refuse(ev)
			}
			continue
		default:
		}
		break
	}
	if moving {
		a.flush()
	}
	a.waitLast()
	if n := a.ns.h.ws.dropShard(a.ns, a.shard, abi.WSCloseRestart, "the shard moved to another host; reconnect"); n > 0 {
		a.log.Info().Int("sockets", n).Msg("the shard's sockets closed (1012): sockets stay with the shard's owner")
	}
	if s, ok := a.claim.(Shipper); ok && moving && a.ns.binding.Shards == 0 && a.claim.Valid() {
		a.ship(s)
	}
	a.ns.remove(a)
	a.exit()
	a.ns.metrics.m.handOffs.WithLabelValues(handOffReason(moving)).Inc()
	a.log.Info().Bool("moving", moving).Msg("shard left this host")
	a.claim.Release()
}

func handOffReason(moving bool) string {
	if moving {
		return "moved"
	}
	return "lost"
}

// shipTimeout bounds the shipping of one shard to its next owner.
const shipTimeout = time.Minute

// ship moves a per-name object's storage (entries and alarm, the
// storage/snapshot stream) to its next owner with the ownership; what
// this host keeps of it is then erased. A failure is logged: the object
// stays here, its home, and is served again when this host is.
func (a *actor) ship(s Shipper) {
	ctx, cancel := context.WithTimeout(context.Background(), shipTimeout)
	defer cancel()
	pr, pw := io.Pipe()
	go func() {
		_, err := a.ns.h.store.ExportShard(pw, a.id, a.ns.h.sections(a.id, true)...)
		pw.CloseWithError(err)
	}()
	t0 := time.Now()
	err := s.Ship(ctx, pr)
	pr.CloseWithError(errShipDone)
	if err != nil {
		a.log.Error().Err(err).Msg("shipping the shard to its next owner failed; it stays on this host")
		return
	}
	a.log.Info().Dur("took_ms", time.Since(t0)).Msg("shard shipped to its next owner")
	if err := a.erase(); err != nil {
		a.log.Warn().Err(err).Msg("erasing the shipped shard's copy failed; the next claim here erases it")
	}
}

var errShipDone = errors.New("ship done")

// erase deletes what this host keeps of the shard: entries and alarm.
func (a *actor) erase() error {
	if err := a.store.DeleteAll(); err != nil {
		return err
	}
	if err := a.store.DeleteAlarm(); err != nil {
		return err
	}
	a.ns.h.alarms.cancel(a.id)
	return a.store.Commit().Wait(context.Background())
}

// flush runs the shard's pending alarm early while it is due soon.
func (a *actor) flush() {
	for range handOffFlushes {
		at, ok, err := a.store.GetAlarm()
		horizon := a.ns.h.cfg.Clock.Now().Add(handOffFlushHorizon).UnixMilli()
		if err != nil || !ok || at > horizon || !a.claim.Valid() {
			return
		}
		a.ns.h.alarms.cancel(a.id)
		a.runAlarm(0, true)
	}
}

// refuse answers an event the actor will not run: a fetch is not run
// (its caller asks Placement again), an alarm stays persisted and waits,
// a control event is answered errMoved.
func (a *actor) refuse(ev *event) {
	switch ev.kind {
	case evFetch:
		if ev.state.CompareAndSwap(evQueued, evRunning) {
			ev.done <- result{err: errMoved}
		}
	case evAlarm:
		a.ns.h.alarms.schedule(a.id, a.ns.h.cfg.Clock.Now().Add(alarmElsewhereRetry).UnixMilli(), ev.retry)
	case evPrepare:
		ev.ver.release() // like a failed prepare: the shard starts the version where it runs next
		ev.done <- result{}
	case evSwitch:
	case evRun:
		if ev.state.CompareAndSwap(evQueued, evRunning) {
			ev.done <- result{err: errMoved}
		}
	default:
		ev.done <- result{err: errMoved}
	}
}

// fenced reports whether the event's writes must be refused: the host
// lost the shard's claim. They are dropped, and the instance, whose
// memory saw them, with them.
func (a *actor) fenced() bool {
	if !a.dropFenced() {
		return false
	}
	a.closeInstance()
	return true
}

// dropFenced is fenced without closing the instance (a batch's answer:
// the instance is closed once the batch call has returned).
func (a *actor) dropFenced() bool {
	if a.claim == nil || a.claim.Valid() {
		return false
	}
	a.ns.metrics.m.fenceRefusals.WithLabelValues("storage").Inc()
	a.store.Abort()
	a.resetAlarmChange()
	a.wsAbort()
	a.log.Warn().Int64("epoch", a.claim.Epoch()).Msg("shard ownership lost before the event committed; its writes refused")
	return true
}

// raiseFence writes the claim's epoch to the shard's fence in its SQL
// database before the shard's first event here, so that from now on a
// previous owner's write is refused even before this owner writes. A
// failure (the database is down) is logged: the first write raises it.
func (a *actor) raiseFence() {
	f, ok := a.ns.sql.(FencedSQLDB)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), fenceRaiseTimeout)
	defer cancel()
	if _, err := f.BatchFenced(ctx, a.ns.name, a.claim.Fence(), a.claim.Epoch(), nil); err != nil {
		a.log.Warn().Err(err).Int64("epoch", a.claim.Epoch()).Msg("raising the shard's fence in its sql database failed; its first write raises it")
	}
}

// fenceRaiseTimeout bounds raiseFence.
const fenceRaiseTimeout = 2 * time.Second

// startClaimed prepares a new actor's storage for its claim: a fresh claim
// erases what the host kept of the shard from an earlier ownership.
func (a *actor) startClaimed() error {
	if a.claim == nil {
		return nil
	}
	a.raiseFence()
	if !a.claim.Fresh() {
		return nil
	}
	return a.erase()
}

// ReceiveShard replaces what this host keeps of a shard it does not run
// with a one-shard snapshot stream (a planned move's, from the shard's
// owner, before the ownership comes here): the stale copy is erased, the
// stream imported (all or nothing), its alarm scheduled. Refused while
// the shard runs here.
func (ns *Namespace) ReceiveShard(ctx context.Context, shard string, r io.Reader) (storage.ShardSnapshotStats, error) {
	if !ns.lockShard(shard) {
		return storage.ShardSnapshotStats{}, fmt.Errorf("%w: the shard runs on this host", ErrNotOwner)
	}
	defer ns.unlockShard(shard)
	a := &actor{ns: ns, shard: shard, id: ns.shardID(shard), store: ns.h.store.Shard(ns.shardID(shard))}
	defer a.store.Close()
	if err := a.erase(); err != nil {
		return storage.ShardSnapshotStats{}, err
	}
	st, err := a.store.Import(r, ns.importers())
	if err != nil {
		return st, err
	}
	if st.Alarm > 0 {
		ns.h.alarms.schedule(a.id, st.Alarm, 0)
	}
	ns.h.log.Info().Str("binding", ns.name).Str("shard", shard).Int("entries", st.Entries).Int64("bytes", st.Bytes).Msg("shard received from its owner")
	return st, nil
}
