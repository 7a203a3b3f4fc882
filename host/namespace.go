package host

import (
	"context"
	"fmt"
	"hash/fnv"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeshard/edgeshard/abi"
	"github.com/edgeshard/edgeshard/internal/hostinternal"
	"github.com/edgeshard/edgeshard/storage"
)

// MaxNameBytes bounds a per-name shard key.
const MaxNameBytes = 1024

// HashToShard is the stable hash that routes keys of a sharded namespace:
// 32-bit FNV-1a over the key's bytes. Every host routes a key alike; the
// shard is HashToShard(key) % shards.
func HashToShard(key string) uint32 {
	f := fnv.New32a()
	f.Write([]byte(key))
	return f.Sum32()
}

// Namespace is one binding: a module and its shards.
type Namespace struct {
	h         *Host
	name      string
	binding   Binding
	grants    []string
	sql       SQLDB
	shardSQL  bool // sql = "shard": each shard has its own database (shardsql.go)
	analytics AnalyticsBinding
	fetch     *fetcher // http_fetch, when the binding has a FetchConfig (fetch.go)

	// cur and prev each hold a reference to their version (Version).
	cur       atomic.Pointer[Version]
	configSHA string     // sha256 of the config's module (pushed.go)
	swapMu    sync.Mutex // serialises Swap, Rollback and closeModules
	prev      *Version

	mu        sync.RWMutex
	actors    map[string]*actor
	receiving map[string]bool // shards ReceiveShard writes (placement.go): no actor starts
	stopped   bool

	// startBytes is the linear memory of the namespace's latest instance
	// when it started: what the memory budget reserves for the next one.
	startBytes atomic.Uint64

	metrics *nsMetrics
}

func (h *Host) newNamespace(ctx context.Context, b Binding) (*Namespace, error) {
	ns := &Namespace{h: h, name: b.Name, binding: b, actors: map[string]*actor{}, receiving: map[string]bool{}, metrics: h.metrics.forNamespace(b.Name)}
	ns.grants = b.Grants()
	switch b.SQL {
	case "":
	case ShardSQL:
		ns.shardSQL = true
	default:
		ns.sql = h.cfg.SQL[b.SQL]
	}
	if b.Analytics != "" {
		ns.analytics = h.cfg.Analytics[b.Analytics]
	}
	if b.Fetch != nil {
		f, err := newFetcher(b.Name, b.Fetch)
		if err != nil {
			return nil, fmt.Errorf("binding %q: %w", b.Name, err)
		}
		ns.fetch = f
	}
	if native := hostinternal.Native(ctx, b.Name); native != nil {
		if b.Module != "" || b.ModuleBytes != nil {
			return nil, fmt.Errorf("binding %q: native, yet has a module", b.Name)
		}
		ns.cur.Store(newVersion(nil, native, "native"))
		return ns, nil
	}
	bin, source, err := ns.configModule()
	if err != nil {
		return nil, err
	}
	ns.configSHA = sha256Hex(bin)
	if kb, ok := ns.restoreKept(); ok {
		bin, source = kb, SourceRestored
	}
	v, err := ns.load(ctx, bin, source)
	if err != nil {
		return nil, fmt.Errorf("binding %q: module %s: %w", b.Name, source, err)
	}
	ns.cur.Store(v)
	return ns, nil
}

// configModule reads the binding's module as the config gives it.
func (ns *Namespace) configModule() (bin []byte, source string, err error) {
	b := ns.binding
	if b.ModuleBytes != nil {
		return b.ModuleBytes, "config", nil
	}
	if b.Module == "" {
		return nil, "", fmt.Errorf("binding %q: no module", b.Name)
	}
	bin, err = os.ReadFile(b.Module)
	if err != nil {
		return nil, "", fmt.Errorf("binding %q: read module: %w", b.Name, err)
	}
	return bin, b.Module, nil
}

// restoreKept returns the bytes of the version a swap made current before
// a restart, when it should serve instead of the config's module (see
// pushed.go), and says so in the log either way.
func (ns *Namespace) restoreKept() ([]byte, bool) {
	k, ok := ns.h.kept(ns.name)
	if !ok {
		return nil, false
	}
	log := ns.h.log.With().Str("binding", ns.name).Str("dir", k.dir).Logger()
	st, ok, err := k.load()
	switch {
	case err != nil:
		log.Error().Err(err).Msg("kept module versions unreadable; serving the config's module")
		return nil, false
	case !ok || st.Current == ns.configSHA:
		return nil, false
	case st.ConfigSHA != ns.configSHA:
		log.Info().Str("kept", short(st.Current)).Str("config_module", short(ns.configSHA)).
			Msg("the config's module changed since a module was pushed: serving the config's module, the pushed one is dropped")
		if err := k.forget(); err != nil {
			log.Warn().Err(err).Msg("could not remove the dropped module versions")
		}
		return nil, false
	}
	bin, err := k.module(st.Current)
	if err != nil {
		log.Error().Err(err).Msg("kept module version unreadable; serving the config's module")
		return nil, false
	}
	log.Info().Str("module", short(st.Current)).Str("source", st.Source).Time("since", st.At).Str("config_module", short(ns.configSHA)).
		Msg("serving the module version kept from before the restart, not the config's (edgeshard rollback, or a changed config module, returns to it)")
	return bin, true
}

// keep records the current and previous versions after a swap or rollback,
// so that a restart serves the same. bin is the current version's bytes
// when the caller has them. A failure is logged: the swap has happened.
func (ns *Namespace) keep(cur, prev *Version, bin []byte, source string) {
	k, ok := ns.h.kept(ns.name)
	if !ok {
		return
	}
	st := keptState{Current: cur.SHA256(), ConfigSHA: ns.configSHA, Source: source, At: time.Now().UTC()}
	var prevBytes []byte
	if prev != nil {
		st.Previous = prev.SHA256()
		if st.Previous == ns.configSHA {
			if b, _, err := ns.configModule(); err == nil && sha256Hex(b) == st.Previous {
				prevBytes = b
			}
		}
	}
	if err := k.save(st, bin, prevBytes); err != nil {
		ns.h.log.Error().Err(err).Str("binding", ns.name).Str("dir", k.dir).
			Msg("module swapped, but it could not be kept in data_dir: a restart will serve the config's module")
	}
}

// restorePrevious loads the version kept for rollback before a restart.
// Called with swapMu.
func (ns *Namespace) restorePrevious(ctx context.Context) {
	k, ok := ns.h.kept(ns.name)
	if !ok {
		return
	}
	st, ok, err := k.load()
	if err != nil || !ok || st.Previous == "" || st.Current != ns.cur.Load().SHA256() {
		return
	}
	bin, err := k.module(st.Previous)
	if err == nil {
		var v *Version
		if v, err = ns.loadInBackground(ctx, bin, SourceRestored); err == nil {
			ns.prev = v
			return
		}
	}
	ns.h.log.Warn().Err(err).Str("binding", ns.name).Msg("the version kept for rollback could not be loaded")
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

func (ns *Namespace) load(ctx context.Context, bin []byte, source string) (*Version, error) {
	m, err := ns.h.engine.Load(ctx, bin, ns.grants)
	if err != nil {
		return nil, err
	}
	return newVersion(m, nil, source), nil
}

// Name returns the binding name.
func (ns *Namespace) Name() string { return ns.name }

// Shards returns the shard count (0 for a per-name namespace).
func (ns *Namespace) Shards() int { return ns.binding.Shards }

// Grants returns the binding groups the namespace grants.
func (ns *Namespace) Grants() []string { return append([]string(nil), ns.grants...) }

// Current returns the module version serving new events.
func (ns *Namespace) Current() *Version { return ns.cur.Load() }

// ShardFor returns the shard name a key routes to.
func (ns *Namespace) ShardFor(key string) (string, error) {
	if n := ns.binding.Shards; n > 0 {
		return strconv.FormatUint(uint64(HashToShard(key)%uint32(n)), 10), nil
	}
	if key == "" {
		return "", fmt.Errorf("%w: empty object name", ErrBadKey)
	}
	if len(key) > MaxNameBytes {
		return "", fmt.Errorf("%w: object name of %d bytes exceeds %d", ErrBadKey, len(key), MaxNameBytes)
	}
	return key, nil
}

// Fetch delivers req to the shard key routes to and returns the response
// once the event's confirmed writes are durable.
func (ns *Namespace) Fetch(ctx context.Context, key string, req *abi.Request) (*abi.Response, error) {
	shard, err := ns.ShardFor(key)
	if err != nil {
		return nil, err
	}
	return ns.FetchShard(ctx, shard, req)
}

// FetchShard delivers req to a shard by its name: on a host with a
// Placement, to the shard here under its claim or to its owner
// (placement.go). A ctx carrying a call chain (WithCallChain: a
// shard_call another host forwarded) delivers req as that call.
func (ns *Namespace) FetchShard(ctx context.Context, shard string, req *abi.Request) (*abi.Response, error) {
	if chain := CallChain(ctx); len(chain) > 0 {
		c := &Call{Chain: chain, Binding: ns.name, Request: req}
		c.Deadline, _ = ctx.Deadline()
		return ns.deliverCall(ctx, shard, c)
	}
	if ns.h.cfg.Placement != nil {
		r, err := ns.fetchPlaced(ctx, shard, fetchOf(req), true)
		return r.resp, err
	}
	return ns.fetchLocal(ctx, shard, req, nil)
}

// fetchOf makes the fetch event of req, anew for each attempt.
func fetchOf(req *abi.Request) func() *event {
	return func() *event { return &event{kind: evFetch, req: req, done: make(chan result, 1)} }
}

// fetchLocal runs req on the shard's actor here, started under claim if
// it has none.
func (ns *Namespace) fetchLocal(ctx context.Context, shard string, req *abi.Request, claim Claim) (*abi.Response, error) {
	r, err := ns.fetchEvent(ctx, shard, fetchOf(req)(), claim)
	return r.resp, err
}

// fetchEvent runs a fetch event on the shard's actor here, started under
// claim if it has none (every data event that may start an actor comes
// through here or enqueue with its claim), and returns its result once
// its writes are durable (the output gate); a failed commit returns the
// result with the error.
func (ns *Namespace) fetchEvent(ctx context.Context, shard string, ev *event, claim Claim) (result, error) {
	if err := ns.enqueue(shard, ev, claim); err != nil {
		return result{}, err
	}
	var r result
	select {
	case r = <-ev.done:
	case <-ctx.Done():
		if ev.state.CompareAndSwap(evQueued, evAbandoned) {
			// It never ran and never will: a clean, definite failure.
			return result{}, fmt.Errorf("%w: %w", ErrNotRun, ctx.Err())
		}
		// It is running: wait for its outcome rather than leave the
		// caller guessing whether it happened (bounded by EventTimeout).
		r = <-ev.done
	}
	if r.err != nil {
		return r, r.err
	}
	if r.pending != nil {
		// The event has run: its outcome is now whether its writes become
		// durable, which the committer always decides (success or
		// ErrCommit). Waiting for that even past the caller's deadline keeps
		// the answer definite: a context error here would leave a write
		// that lands anyway, and a caller with a fallback (the edge API)
		// would apply it twice.
		t0 := time.Now()
		if err := r.pending.Wait(context.WithoutCancel(ctx)); err != nil {
			return r, err
		}
		ns.metrics.m.commitWait.Observe(time.Since(t0).Seconds())
	}
	return r, nil
}

// enqueue queues ev on the shard's actor, started (under claim) if the
// shard has none; errMoved while the actor leaves the host.
func (ns *Namespace) enqueue(shard string, ev *event, claim Claim) error {
	ns.mu.RLock()
	a := ns.actors[shard]
	stopped := ns.stopped
	if a != nil && a.leaving && !stopped {
		ns.mu.RUnlock()
		return errMoved
	}
	if a != nil && !stopped {
		select {
		case a.queue <- ev:
			ns.mu.RUnlock()
			return nil
		default:
			ns.mu.RUnlock()
			return fmt.Errorf("%w: %s/%s: its queue is full", ErrOverloaded, ns.name, shard)
		}
	}
	ns.mu.RUnlock()
	if stopped {
		return ErrClosed
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.stopped {
		return ErrClosed
	}
	a = ns.actors[shard]
	if a != nil && a.leaving {
		return errMoved
	}
	if a == nil && ns.receiving[shard] {
		return errMoved
	}
	if a == nil {
		if ns.h.cfg.Placement != nil && claim == nil {
			return errNotHere // a control event never starts a shard here
		}
		a = newActor(ns, shard, claim)
		ns.actors[shard] = a
		ns.h.wg.Add(1)
		go a.run()
	}
	select {
	case a.queue <- ev:
		return nil
	default:
		return fmt.Errorf("%w: %s/%s: its queue is full", ErrOverloaded, ns.name, shard)
	}
}

// tell delivers a control event to the shard's actor if it has one and
// its queue has room; unlike enqueue it never starts an actor.
func (ns *Namespace) tell(shard string, ev *event) bool {
	ns.mu.RLock()
	defer ns.mu.RUnlock()
	a := ns.actors[shard]
	if a == nil || a.leaving || ns.stopped {
		return false
	}
	select {
	case a.queue <- ev:
		return true
	default:
		return false
	}
}

// shards returns the names of the shards that have an actor; live only
// those whose instance is running.
func (ns *Namespace) shards(live bool) []string {
	ns.mu.RLock()
	defer ns.mu.RUnlock()
	out := make([]string, 0, len(ns.actors))
	for name, a := range ns.actors {
		if !live || a.live.Load() {
			out = append(out, name)
		}
	}
	return out
}

// acquireCurrent returns the current version with a reference taken for
// the caller.
func (ns *Namespace) acquireCurrent() *Version {
	for {
		// A version stops being current before its reference as current
		// is dropped, so a failed acquire finds a new one on the next look.
		if v := ns.cur.Load(); v.acquire() {
			return v
		}
	}
}

// evict removes an idle actor (its idle timeout passed, or the memory
// budget needs its instance's memory); false if an event arrived
// meanwhile.
func (ns *Namespace) evict(a *actor) bool {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if len(a.queue) > 0 || ns.stopped {
		return false
	}
	if ns.actors[a.shard] == a {
		delete(ns.actors, a.shard)
	}
	// The storage handle (with the shard's overlay and read cache) is
	// shared with the next actor of the shard (storage.Engine.Shard): it is
	// released here, before that actor can exist. The actor's last commit
	// is durable (actor.leave), so this does not wait.
	a.store.Close()
	a.releaseMark()
	return true
}

// leaving marks the actor as handing its shard off: enqueue refuses new
// events from now on.
func (ns *Namespace) leaving(a *actor) {
	ns.mu.Lock()
	a.leaving = true
	ns.mu.Unlock()
}

// remove takes a leaving actor out of the namespace and releases its
// storage handle; its last commit is durable (the caller waited).
func (ns *Namespace) remove(a *actor) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.actors[a.shard] == a {
		delete(ns.actors, a.shard)
	}
	a.store.Close()
}

// stopActors stops new events and tells every actor to drain and exit.
func (ns *Namespace) stopActors() {
	ns.mu.Lock()
	ns.stopped = true
	for _, a := range ns.actors {
		close(a.stop)
	}
	ns.mu.Unlock()
}

// closeModules drops the namespace's references to its current and
// previous versions, once its actors have exited: the versions are freed.
func (ns *Namespace) closeModules() {
	ns.swapMu.Lock()
	defer ns.swapMu.Unlock()
	if ns.prev != nil {
		ns.prev.release()
		ns.prev = nil
	}
	if v := ns.cur.Load(); v != nil {
		v.release()
	}
}

// ShardStats describes one live shard.
type ShardStats struct {
	Shard       string
	QueueDepth  int
	Live        bool // an instance is running
	MemoryBytes uint64
}

// Stats returns the live shards of the namespace.
func (ns *Namespace) Stats() []ShardStats {
	ns.mu.RLock()
	defer ns.mu.RUnlock()
	out := make([]ShardStats, 0, len(ns.actors))
	for name, a := range ns.actors {
		out = append(out, ShardStats{Shard: name, QueueDepth: len(a.queue), Live: a.live.Load(), MemoryBytes: a.memBytes.Load()})
	}
	return out
}

func (ns *Namespace) shardID(shard string) storage.ShardID {
	return storage.ShardID{Namespace: ns.name, Name: shard}
}
