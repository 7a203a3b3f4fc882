package host

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeshard/edgeshard/storage"
	"github.com/prometheus/client_golang/prometheus"
)

// What the host keeps for its operators only (the admin API's inspector):
// pages of active shards, run-time trace switches and a log tap
// (inspect_trace.go), and a short swap history (inspect_history.go). None
// of it is on a shard's hot path unless switched on.

// inspection is the host's inspector state. Its zero value is ready.
type inspection struct {
	traceMu sync.RWMutex
	traces  map[storage.ShardID]bool // run-time overrides of Config.TraceShard
	nTraces atomic.Int32             // len(traces): 0 keeps the per-event check lock-free

	tap logTap

	histMu  sync.Mutex
	history map[string][]SwapRecord // per namespace, newest last
}

// DefaultShardPage is the page size of ShardPage when the query sets none.
const DefaultShardPage = 100

// ShardQuery selects one page of a namespace's active shards.
type ShardQuery struct {
	// Prefix keeps the shards whose name starts with it.
	Prefix string
	// After starts the page after this shard name (CompareShards order):
	// the last shard of the previous page. "" starts at the first.
	After string
	// Limit is the page size; ≤ 0 means DefaultShardPage.
	Limit int
}

// ShardPage is one page of active shards, in CompareShards order.
type ShardPage struct {
	Shards []ShardSummary
	// Active counts the namespace's shards with an actor; Matching those
	// whose name has the query's prefix (on every page, not only this one).
	Active, Matching int
	// More says shards after this page match the query too.
	More bool
}

// ShardSummary is what the inspector shows of one active shard.
type ShardSummary struct {
	ShardStats
	// LastEvent is when its last fetch or alarm started; zero when it has
	// run none since its actor started.
	LastEvent time.Time
	// Alarm is when its alarm is scheduled; zero when none is.
	Alarm time.Time
	// Tracing says its host calls are traced (Config.TraceShard or SetTrace).
	Tracing bool
}

// ShardPage returns one page of the namespace's active shards (those with
// an actor: an instance, queued events, or idle but not yet evicted). It
// costs one pass over the active shards and a sort of those after the
// cursor, so a page of 10,000 shards takes milliseconds; it holds the
// namespace's lock only for the pass.
func (ns *Namespace) ShardPage(q ShardQuery) ShardPage {
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultShardPage
	}
	type candidate struct {
		name string
		a    *actor
	}
	var page ShardPage
	ns.mu.RLock()
	page.Active = len(ns.actors)
	cands := make([]candidate, 0, min(len(ns.actors), 4*limit))
	for name, a := range ns.actors {
		if !strings.HasPrefix(name, q.Prefix) {
			continue
		}
		page.Matching++
		if q.After != "" && CompareShards(name, q.After) <= 0 {
			continue
		}
		cands = append(cands, candidate{name, a})
	}
	ns.mu.RUnlock()
	slices.SortFunc(cands, func(x, y candidate) int { return CompareShards(x.name, y.name) })
	if len(cands) > limit {
		cands, page.More = cands[:limit], true
	}
	page.Shards = make([]ShardSummary, len(cands))
	for i, c := range cands {
		a := c.a
		s := ShardSummary{
			ShardStats: ShardStats{Shard: c.name, QueueDepth: len(a.queue), Live: a.live.Load(), MemoryBytes: a.memBytes.Load()},
			Tracing:    ns.h.insp.tracing(a.id, a.trace),
		}
		if ms := a.lastEvent.Load(); ms > 0 {
			s.LastEvent = time.UnixMilli(ms)
		}
		if at, ok := ns.AlarmAt(c.name); ok {
			s.Alarm = at
		}
		page.Shards[i] = s
	}
	return page
}

// Summary returns the inspector's summary of one shard, and false when it
// has no actor.
func (ns *Namespace) Summary(shard string) (ShardSummary, bool) {
	ns.mu.RLock()
	a, ok := ns.actors[shard]
	ns.mu.RUnlock()
	s := ShardSummary{ShardStats: ShardStats{Shard: shard}, Tracing: ns.Tracing(shard)}
	if at, found := ns.AlarmAt(shard); found {
		s.Alarm = at
	}
	if !ok {
		return s, false
	}
	s.QueueDepth, s.Live, s.MemoryBytes = len(a.queue), a.live.Load(), a.memBytes.Load()
	if ms := a.lastEvent.Load(); ms > 0 {
		s.LastEvent = time.UnixMilli(ms)
	}
	return s, true
}

// CompareShards orders shard names: names of digits only first, by
// numeric value (shorter first, then bytewise: "9" < "10" < "010"), then
// every other name bytewise. It is a total order, so a page cursor
// (ShardQuery.After) never skips or repeats a shard.
func CompareShards(a, b string) int {
	da, db := isDigits(a), isDigits(b)
	switch {
	case da && !db:
		return -1
	case !da && db:
		return 1
	case da && len(a) != len(b):
		return len(a) - len(b)
	}
	return strings.Compare(a, b)
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// Done is closed when the host starts closing; a helper that lives as long
// as the host (the inspector's metric sampler) ends with it.
func (h *Host) Done() <-chan struct{} { return h.closing }

// Collectors returns the host's own Prometheus collectors (events and
// their durations, alarms, instance starts and crashes, swaps, guest log
// codes and flush durations), for gathering apart from
// Config.Registerer: the inspector samples them when it is given no
// registry. A collector may be registered in several registries.
func (h *Host) Collectors() []prometheus.Collector {
	m := h.metrics
	return []prometheus.Collector{m.events, m.eventDur, m.alarms, m.starts, m.crashes, m.swaps, m.codes, m.flushDur, m.commitWait}
}
